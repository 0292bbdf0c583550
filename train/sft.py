"""`dispatchtune train`: LoRA (or full) SFT with TRL on `prep`'s samples, the loss on the assistant's tokens only.

The flow is TRL's `trl/scripts/sft.py` with our pieces in front. The recipe (train/config.py) gives the `SFTConfig`
and the LoRA settings; `model.finetune=full` gives SFTTrainer no PEFT config, so every weight trains.
`train.mask.ChatFormat` renders each sample with the model's chat template and marks the tokens the model must learn
to produce (assistant turns with their tool calls and end-of-turn). The samples reach `SFTTrainer` pre-tokenized
(`input_ids` + `assistant_masks`): TRL turns the mask into labels and packs the sequences (best-fit decreasing,
padding-free), so everything after tokenizing is TRL's, PEFT's and transformers' own code.

Outputs, each renamed into place once complete: RUN/adapter/ (the LoRA adapter, and the tokenizer carrying the
inference chat template; for a full fine-tune the whole trained model there, with its generation config and the same
tokenizer, under the same name so that every later stage finds the run's result in one place), then RUN/run.json
(the resolved recipe, data hashes and counts, library versions, metrics, the wandb run id). A killed run leaves only
RUN/checkpoints/, which `--resume` continues from.

One GPU: `dispatchtune train --recipe R`; several: `accelerate launch --config_file recipes/accelerate/ddp.yaml -m
dispatchtune.train --recipe R` (train/__main__.py). The main process encodes the data once, with every core, into
RUN/cache (train/encode.py: keyed by the data, tokenizer, template and max_length, so `--resume` and a second run
reuse it); the other processes load that copy. Only the main process shows progress and writes the outputs.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import importlib.util
import subprocess
import time
from pathlib import Path

from dispatchtune.atomic import commit, remove_stale, staging_path
from dispatchtune.errors import UserError
from dispatchtune.families import resolve_template
from dispatchtune.paths import disk_space_errors
from dispatchtune.runinfo import RUN_INFO, RunInfo, write_run_info

from .catalog import add_recipe_argument
from .checkpoints import last_complete_checkpoint
from .config import Recipe, load_recipe
from .encode import encoded, file_sha256

LIBRARIES = ("dispatchtune", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "wandb", "bitsandbytes")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_argument(parser)
    parser.add_argument(
        "overrides", nargs="*", metavar="section.key=value",
        help="recipe overrides, e.g. training.learning_rate=1e-4 lora.r=32 run.dir=runs/r2",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in RUN/checkpoints")


def run(args: argparse.Namespace) -> int:
    train(load_recipe(args.recipe, args.overrides), resume=args.resume)
    return 0


def train(recipe: Recipe, *, resume: bool | str = False, model_path: str | None = None, callbacks=()) -> dict:
    """Train, save RUN/adapter and RUN/run.json; return what run.json holds. `resume`: True continues from the last
    checkpoint (`--resume`), "auto" continues where there is one and starts quietly where there is none.
    `model_path`: the model already resolved (`resolve_model`). `callbacks`: extra TrainerCallbacks."""
    import torch
    from accelerate import PartialState
    from trl import SFTTrainer

    state = PartialState()
    args = recipe.training
    if recipe.model.qlora and not torch.cuda.is_available():
        raise UserError("QLoRA needs a CUDA GPU (bitsandbytes 4-bit); set model.qlora=false")
    last_checkpoint = _check_outputs(recipe, resume, state)

    model_path, tokenizer, fmt = load_format(recipe, model_path)
    if recipe.lora_used:
        check_target_modules(recipe, model_path)
    else:
        state.print("finetune: full, every weight trains; the recipe's lora settings are not used")
    train_set, eval_set, counts = _datasets(recipe, fmt, state)
    if recipe.data.batch_by_length:
        train_set = batched_by_length(train_set, args.per_device_train_batch_size, args.seed)
        args.train_sampling_strategy = "sequential"
    quantization = _set_model_init(recipe, state)
    state.print(f"model: {model_path} ({args.model_init_kwargs['dtype']}, attention "
                f"{args.model_init_kwargs['attn_implementation']}{', QLoRA 4-bit' if quantization else ''}); "
                f"{_liger_note(args.use_liger_kernel)}")
    state.print(f"mask: {fmt.method}, end of turn {fmt.end_of_turn!r}")
    state.print(_describe(counts, args.max_length))

    wandb_run = _start_wandb(recipe, last_checkpoint) if state.is_main_process and "wandb" in args.report_to else None
    trainer = SFTTrainer(
        model=model_path, args=args, train_dataset=train_set, eval_dataset=eval_set, processing_class=tokenizer,
        peft_config=copy.deepcopy(recipe.lora) if recipe.lora_used else None, quantization_config=quantization,
        callbacks=list(callbacks),
    )
    if trainer.padding_free:
        check_packing(trainer.model, recipe.model.name_or_path)
    if not recipe.lora_used:
        state.print(f"trainable params: {trainer.model.num_parameters():,} (all)")
    elif state.is_main_process:
        trainer.model.print_trainable_parameters()
    with disk_space_errors(args.output_dir):
        result = trainer.train(resume_from_checkpoint=last_checkpoint)

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    eval_losses = [entry["eval_loss"] for entry in trainer.state.log_history if "eval_loss" in entry]
    info = RunInfo(
        recipe=recipe.to_dict(),
        model={"name_or_path": recipe.model.name_or_path, "resolved": model_path, **args.model_init_kwargs,
               "qlora": recipe.model.qlora, "finetune": recipe.model.finetune},
        mask={"method": fmt.method, "end_of_turn": fmt.end_of_turn},
        data={"train": {"path": recipe.data.train, "sha256": file_sha256(Path(recipe.data.train)), **counts},
              "heldout": _file_info(Path(recipe.data.heldout))},
        metrics={"train_loss": whole_run_loss(trainer.state.log_history, _step_of(last_checkpoint),
                                              result.metrics.get("train_loss"), trainer.state.global_step),
                 "first_loss": losses[0] if losses else None,
                 "last_loss": losses[-1] if losses else None, "steps": trainer.state.global_step,
                 "eval_loss": eval_losses[-1] if eval_losses else None,
                 "runtime_s": result.metrics.get("train_runtime"), "processes": state.num_processes},
        resumed_from=last_checkpoint,
        **_wandb_info(wandb_run),
        versions=_versions(),
        git=_git(),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    tokenizer.chat_template = fmt.inference_template  # save_model writes the tokenizer beside the adapter (or model)
    with disk_space_errors(recipe.dir):
        _save(trainer, recipe.dir, info, state)
    if state.is_main_process:
        if wandb_run:
            wandb_run.summary.update({f"data/{k}": v for k, v in counts.items()})
            wandb_run.finish()
        m = info.metrics
        saved = "adapter: " if recipe.lora_used else "model:   "  # a full fine-tune's model, in RUN/adapter
        print(f"trained {m['steps']} steps in {m['runtime_s']:.0f} s, loss {_fmt(m['first_loss'])} -> "
              f"{_fmt(m['last_loss'])}\n  {saved} {recipe.dir / 'adapter'}\n  run.json: {recipe.dir / RUN_INFO}"
              + (f"\n  wandb:    run {wandb_run.id} ({info.wandb_dir})" if wandb_run else ""))
    state.wait_for_everyone()
    trainer.end()
    return info.to_dict()


def check_target_modules(recipe: Recipe, model_path: str) -> None:
    """lora.target_modules must name modules the model has. PEFT finds out only once the weights are loaded, so
    match its way (`check_target_module_exists`) on the model's skeleton, built without weights from its config."""
    import torch
    from peft.tuners.tuners_utils import check_target_module_exists
    from transformers import AutoConfig, AutoModelForCausalLM

    lora = recipe.lora
    if lora.target_modules is None or lora.target_modules == "all-linear":  # PEFT's own choice / every linear layer
        return
    config = AutoConfig.from_pretrained(model_path, trust_remote_code=recipe.model.trust_remote_code)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=recipe.model.trust_remote_code)
    names = [name for name, _ in skeleton.named_modules() if name]
    if any(check_target_module_exists(lora, name) for name in names):
        return
    linear = sorted({name.rsplit(".", 1)[-1] for name, module in skeleton.named_modules()
                     if isinstance(module, torch.nn.Linear)})
    targets = lora.target_modules if isinstance(lora.target_modules, str) else sorted(lora.target_modules)
    raise UserError(f"lora.target_modules {targets} match no module of {recipe.model.name_or_path}; its linear "
                    f"layers are {', '.join(linear)} (or use all-linear)")


def check_packing(model, name: str) -> None:
    """Padding-free packing must keep each sequence to itself (TRL issues 3728 and 3781): a packed row reaches the
    model with position ids restarting per sequence and no attention mask, and only some attention paths honour that
    (flash-attention, and SDPA/eager for most architectures in transformers 5; not OPT's). So run the model once on a
    row of two random sequences and once on the second alone: the second's logits must not change."""
    import torch

    vocab = model.config.get_text_config().vocab_size
    device = next(model.parameters()).device
    ids = torch.randint(vocab, (2, 16), generator=torch.Generator().manual_seed(0)).to(device)
    positions = torch.arange(16, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        alone = model(input_ids=ids[1:], position_ids=positions[None], use_cache=False).logits[0].float()
        packed = model(input_ids=ids.reshape(1, -1), position_ids=positions.repeat(2)[None],
                       use_cache=False).logits[0, 16:].float()
    model.train(was_training)
    error = ((packed - alone).abs().max() / alone.abs().max().clamp_min(1e-6)).item()
    tolerance = 1e-3 if alone.dtype == packed.dtype == torch.float32 and next(model.parameters()).dtype == torch.float32 \
        else 5e-2
    if error > tolerance:
        attention = getattr(model.config, "_attn_implementation", "?")
        raise UserError(f"packed sequences attend to each other in {name} with attention {attention} (relative "
                        f"logit change {error:.2g}): set training.packing=false, or use flash_attention_2")


def _datasets(recipe: Recipe, fmt, state):
    """The encoded training set, the held-out one (only when training.eval_strategy asks for eval loss: its
    samples with an assistant turn), and the training set's counts. The main process encodes (or finds them in
    RUN/cache, `train.encode`); the other processes wait, then load its copy."""

    train_path = data_file(recipe.data.train, "data.train")
    common = {"max_length": recipe.training.max_length, "cache_dir": recipe.dir / "cache",
              "progress": state.is_main_process}
    with state.main_process_first():
        train_set, counts = encoded(fmt, train_path, name="train", **common)
    if not counts.get("tool_calls"):
        raise UserError(f"{train_path} ({counts.get('samples', 0)} samples) holds no assistant tool calls, so nothing "
                        "would teach tool calling; check the inputs given to `dispatchtune prep` (see stats.json)")
    if recipe.training.eval_strategy == "no":
        return train_set, None, counts
    heldout_path = data_file(recipe.data.heldout, "data.heldout")
    with state.main_process_first():
        eval_set, eval_counts = encoded(fmt, heldout_path, name="heldout", assistant_only=True, **common)
    if not eval_counts["samples"]:
        raise UserError(f"{heldout_path} has no sample with an assistant turn to measure eval loss on; "
                        "set training.eval_strategy=no or point data.heldout at such samples")
    return train_set, eval_set, counts


def batched_by_length(dataset, batch_size: int, seed: int):
    """`dataset` reordered for the sequential sampler: each run of `batch_size` rows holds rows of about the same
    length (sorted), the full runs in a seeded random order, the short one last so the others stay aligned."""
    import random

    import pyarrow.compute as pc

    lengths = pc.list_value_length(dataset.with_format("arrow")["input_ids"]).to_pylist()  # no lists of ids built
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    full, rest = (batches[:-1], batches[-1:]) if len(batches[-1]) < batch_size else (batches, [])
    random.Random(seed).shuffle(full)
    return dataset.select([i for batch in full + rest for i in batch])


def _set_model_init(recipe: Recipe, state):
    """Fill training.model_init_kwargs (its own entries win) for SFTTrainer to load the model with; return the
    QLoRA quantization config, or None."""
    import torch

    args = recipe.training
    args.model_init_kwargs = {"dtype": _dtype(recipe.model.dtype, full=not recipe.lora_used),
                              "attn_implementation": _attn_implementation(recipe.model.attn_implementation),
                              "trust_remote_code": recipe.model.trust_remote_code, **(args.model_init_kwargs or {})}
    if not recipe.model.qlora:
        return None
    from transformers import BitsAndBytesConfig

    # QLoRA (Dettmers et al. 2023): NF4 base, double quantisation, bf16 compute; TRL casts the adapter to bf16.
    args.model_init_kwargs |= {"dtype": "bfloat16", "device_map": {"": state.local_process_index}}
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def _save(trainer, run_dir: Path, info: RunInfo, state) -> None:
    """RUN/adapter, then RUN/run.json, each written under a temporary name and renamed into place. Every process
    calls save_model (FSDP gathers the weights) into the main process's temporary name; the main one writes."""
    from accelerate.utils import broadcast_object_list

    [tmp] = broadcast_object_list([staging_path(run_dir / "adapter")])
    trainer.save_model(str(tmp))
    if not state.is_main_process:
        return
    (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; run.json holds the same readably
    commit(tmp, run_dir / "adapter")  # replaces one left by a run killed before its run.json: unfinished
    write_run_info(run_dir, info)  # last: its presence marks the run finished


def load_format(recipe: Recipe, model_path: str | None = None):
    """(model path, tokenizer, ChatFormat): the one way `train` and `inspect` turn samples into tokens.
    `model_path`: the model already resolved (`resolve_model`); resolved here when None."""
    from transformers import AutoTokenizer

    from .mask import ChatFormat

    model_path = model_path or resolve_model(recipe.model.name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=recipe.model.trust_remote_code)
    fmt = ChatFormat.from_tokenizer(tokenizer, chat_template=resolve_template(recipe.model.chat_template),
                                    template_kwargs=recipe.model.template_kwargs)
    return model_path, tokenizer, fmt


def resolve_model(name: str) -> str:
    """A local directory or a Hub id in the cache (downloaded first when online), as a path or id to load from.

    `tiny:<family>` is a tiny random model of that family (`tiny:<family>:real` with its real vocabulary), built on
    first use in $DISPATCHTUNE_TINY_CACHE (default ~/.cache/dispatchtune/tiny) and reused after: tests and the demo
    train one without the Hub.
    """
    from accelerate import PartialState
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    with PartialState().main_process_first():  # one process builds or downloads, the others then find it
        if name.startswith("tiny:"):
            from dispatchtune.tiny_models import cached_tiny_model

            return str(cached_tiny_model(name[5:]))
        if Path(name).is_dir():
            check_model_dir(Path(name))
            return name
        try:
            hf_hub_download(name, "config.json")
        except LocalEntryNotFoundError:
            raise UserError(f"model {name} is neither a local directory nor in the Hugging Face cache (offline); "
                            f"download it with `hf download {name}` or pass a local path") from None
        except RepositoryNotFoundError:  # also a gated repository without access
            raise UserError(f"model {name} is not a local directory, and the Hub has no model by that name that "
                            "you can read (gated: accept its licence on the Hub, then `hf auth login`)") from None
        except HFValidationError:
            raise UserError(f"model {name} is neither a local directory nor a Hub id (org/name)") from None
    return name


def check_model_dir(path: Path) -> None:
    """A local model directory holds a transformers config and weights, not just anything."""
    if not (path / "config.json").is_file():
        raise UserError(f"model directory {path} holds no model (no config.json); pass a transformers model "
                        "directory or a Hub id")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise UserError(f"model directory {path} holds no weights (*.safetensors); pass a complete model directory")


def _check_outputs(recipe: Recipe, resume: bool | str, state) -> str | None:
    """The checkpoint to resume from, if any: the last complete one (train/checkpoints.py), naming the incomplete
    ones skipped; a finished run, or checkpoints without --resume, are refused.
    resume="auto": the last checkpoint where there is one, else a quiet start from step 0."""
    if (recipe.dir / RUN_INFO).exists():
        raise UserError(f"{recipe.dir} holds a finished run (run.json); set another run.dir or remove that one")
    out = Path(recipe.training.output_dir)
    last, skipped = last_complete_checkpoint(out, with_optimizer=not recipe.training.save_only_model)
    if (last or skipped) and not resume:
        raise UserError(f"{out} holds {(last and last.name) or skipped[0]} of an unfinished run; pass --resume to "
                        "continue it, or remove the directory to start over")
    if skipped and resume:
        state.print(f"skipping incomplete checkpoints (a save that was cut short): {', '.join(skipped)}")
    last = None if last is None else str(last)
    if last:
        state.print(f"resuming from {last}")
    elif resume and resume != "auto":
        state.print(f"--resume: no checkpoint in {out}; starting from step 0")
    recipe.dir.mkdir(parents=True, exist_ok=True)
    if state.is_main_process:  # what a killed run was writing
        remove_stale(recipe.dir / "adapter")
        remove_stale(recipe.dir / RUN_INFO)
    return last


def whole_run_loss(log_history: list[dict], resumed_step: int, segment_loss: float | None, last_step: int):
    """The mean loss per step over the whole run. Trainer's `train_loss` averages only the steps this process ran;
    after a resume, the steps before it are in the log history the checkpoint restored, each logged `loss` the mean
    since the log before, so they count by the steps they cover (steps between the last log and the checkpoint were
    never logged and cannot count)."""
    if not resumed_step:
        return segment_loss
    total = steps = previous = 0
    for entry in log_history:
        if "loss" in entry and previous < entry.get("step", 0) <= resumed_step:
            total += entry["loss"] * (entry["step"] - previous)
            steps += entry["step"] - previous
            previous = entry["step"]
    if segment_loss is not None and last_step > resumed_step:
        total += segment_loss * (last_step - resumed_step)
        steps += last_step - resumed_step
    return total / steps if steps else segment_loss


def _step_of(checkpoint: str | None) -> int:
    return int(Path(checkpoint).name.rpartition("-")[2]) if checkpoint else 0


def data_file(path: str, key: str) -> Path:
    if not Path(path).is_file():
        raise UserError(f"data file {path} not found; run `dispatchtune prep ... --out RUN/data` or set {key}=PATH")
    return Path(path)


def _dtype(name: str, full: bool = False) -> str:
    """auto: a full fine-tune's weights in float32, since AdamW's small updates vanish when added to bfloat16 weights
    (training.bf16 still computes in bfloat16); a frozen LoRA base in bfloat16 where the GPU has it."""
    import torch

    if name != "auto":
        return name
    if full:
        return "float32"
    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"


def _attn_implementation(name: str) -> str:
    """auto: FlashAttention 2 on Ampere or newer where `flash_attn` or `kernels` is installed (transformers takes the
    Hub's build through `kernels` when flash_attn is missing); SDPA otherwise. Both handle packed sequences."""
    import torch

    if name != "auto":
        return name
    has_fa = any(importlib.util.find_spec(m) for m in ("flash_attn", "kernels"))
    return "flash_attention_2" if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8 and has_fa \
        else "sdpa"


def _liger_note(enabled: bool) -> str:
    import torch

    if enabled:
        return "Liger kernels on"
    if not torch.cuda.is_available():
        return "Liger kernels off (no CUDA)"
    return "Liger kernels off (pip install 'dispatchtune[gpu]' to turn them on)"


def _describe(counts: dict, max_length: int | None) -> str:
    share = counts["trained_tokens"] / max(counts["tokens"], 1)
    text = (f"train: {counts['samples']} samples in {counts['rows']} rows, {counts['tokens']} tokens, "
            f"{counts['trained_tokens']} trained ({share:.0%}), {counts['tool_calls']} tool calls")
    if counts["truncated"]:
        text += (f"; {counts['truncated']} rows longer than max_length {max_length} are cut to their first "
                 f"{max_length} tokens ({counts['truncated_tokens']} tokens dropped)")
    if counts["left_out"]:
        text += (f"; {counts['left_out']} rows (later turns of long samples) are left out: their prompt fills "
                 f"max_length {max_length}")
    return text


def _start_wandb(recipe: Recipe, resuming: str | None):
    """Our own wandb.init, so the run gets the recipe's project, entity, tags and name, and we learn its id; the
    Trainer's WandbCallback logs into this run. A resumed training run continues its wandb run (the id is kept in
    RUN/wandb_run_id). Offline with WANDB_MODE=offline (files under RUN/wandb)."""
    import wandb

    flat = {f"{section}.{key}": value for section, values in recipe.to_dict().items() if isinstance(values, dict)
            for key, value in values.items()}  # the names sweeps and overrides use: lora.r, training.learning_rate
    id_file = recipe.dir / "wandb_run_id"
    run_id = id_file.read_text().strip() if resuming and id_file.is_file() else None
    run = wandb.init(project=recipe.run.wandb_project, entity=recipe.run.wandb_entity, name=recipe.run.name,
                     tags=recipe.run.wandb_tags, dir=str(recipe.dir), config=flat, id=run_id,
                     resume="allow" if run_id else None)
    id_file.write_text(run.id + "\n")
    return run


def _wandb_info(run) -> dict:
    """The wandb run's id and place: the eval stage logs eval/tool_call_score into this same run."""
    return {"wandb_run_id": run and run.id, "wandb_project": run and run.project,
            "wandb_entity": run and (run.entity or None), "wandb_dir": run and str(Path(run.dir).parent)}



def _file_info(path: Path) -> dict | None:
    return {"path": str(path), "sha256": file_sha256(path)} if path.is_file() else None


def _versions(names=LIBRARIES) -> dict:
    """The installed version of each library in `names` (those not installed left out)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _git() -> dict | None:
    """The commit of the code that trained (and whether it had local changes), when it runs from a git checkout."""
    here = Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def _fmt(x: float | None) -> str:
    return "?" if x is None else f"{x:.3f}"
