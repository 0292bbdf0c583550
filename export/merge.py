"""Merge a LoRA adapter into its base model: one standalone checkpoint for GGUF conversion, serving and the Hub.

    dispatchtune merge --run RUN                      # RUN/adapter -> RUN/merged
    dispatchtune merge --adapter DIR --out DIR [--base ID_OR_DIR]

The base is read in full precision (float32) whatever the adapter was trained on, and PEFT's `merge_and_unload`
adds the LoRA product to those weights; the result is saved in the base's own dtype. A QLoRA adapter needs nothing
special: it was trained against a 4-bit copy of the same full-precision base, and merging into that 4-bit copy
(dequantised) would bake its rounding into every weight, so merge never quantises and refuses a base checkpoint
that is itself quantised.

The tokenizer comes from the adapter directory, because its chat template is the one used in training (train
saves it there). The generation config's eos ids gain the template's end-of-turn token, so `generate` stops where
a trained turn ends. Before the output is renamed into place, the merged model's logits are compared with the
unmerged base+adapter on rendered prompts (some with tools); the figures go to verify.json.

A full fine-tune (`model.finetune=full`) leaves the whole model in RUN/adapter: there is nothing to fold in, so
merge copies it into RUN/merged the same way (cast to the base's dtype where the base is known: --base, else
run.json's; the generation config's stop ids; the sentencepiece file) and checks it the same way, against the
trained model's float32 logits, so later stages read RUN/merged whichever way the run trained.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from dispatchtune.atomic import commit, staging
from dispatchtune.errors import UserError
from dispatchtune.runinfo import is_full_model, read_run_info
from dispatchtune.paths import check_output_dir, disk_space_errors
from dispatchtune.train.mask import end_of_turn_token
from dispatchtune.train.sft import resolve_model

from . import (
    VERIFY_FILE, Tolerance, compare_logits, existing_output, hf_logits, token_ids, verification_prompts, write_json,
)

# Merged (saved in the base's dtype) vs base+adapter computed in float32. float32 differs only by summation order
# (observed: rel err ~3e-6 on the tiny models); 16-bit types add one rounding of every weight (bfloat16 observed:
# rel err up to 2.1e-2, mean cosine > 0.9998, top-1 > 0.98; float16 has 3 more mantissa bits).
TOLERANCES = {
    "float32": Tolerance(max_rel_err=1e-4, min_mean_cosine=0.99999, min_top1=1.0),
    "float16": Tolerance(max_rel_err=1e-2, min_mean_cosine=0.9999, min_top1=0.95),
    "bfloat16": Tolerance(max_rel_err=5e-2, min_mean_cosine=0.999, min_top1=0.9),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="run directory: merges RUN/adapter into RUN/merged")
    src.add_argument("--adapter", type=Path,
                     help="a PEFT LoRA adapter directory, or a full fine-tune's model directory (needs --out)")
    parser.add_argument("--out", type=Path, help="output directory (default with --run: RUN/merged)")
    parser.add_argument("--base", help="base model id or directory (default: the adapter's base_model_name_or_path; "
                                       "for a full fine-tune, run.json's base, whose dtype the copy takes)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: the adapter directory)")
    parser.add_argument("--force", action="store_true", help="replace a complete output instead of skipping")


def run(args: argparse.Namespace) -> int:
    adapter = args.adapter or args.run / "adapter"
    out = args.out or (args.run / "merged" if args.run else None)
    if out is None:
        raise UserError("--adapter needs --out (where to write the merged model)")
    report = merge(adapter, out, base=args.base, tokenizer_dir=args.tokenizer, force=args.force,
                   run_dir=args.run)
    m = report["metrics"]
    summary = (f"max rel err {m['max_rel_err']:.2e}, mean cosine {m['mean_cosine']:.6f}, top-1 {m['top1']:.2f} "
               f"on {report['prompts']} prompts")
    reference = "the trained model" if report.get("finetune") == "full" else "base+adapter"
    if not report["passed"]:
        print(f"merge: parity check FAILED ({'; '.join(report['failures'])}; {summary}); nothing written to {out}")
        return 1
    print(f"merge: {out} ({report['dtype']}, base {report['base']}){' (existing)' if report.get('skipped') else ''}; "
          f"parity vs {reference}: {summary}")
    return 0


def merge(adapter_dir: Path, out_dir: Path, *, base: str | None = None, tokenizer_dir: Path | None = None,
          force: bool = False, run_dir: Path | None = None) -> dict:
    """Merge, verify, and (if verified) write `out_dir`; return the verify report (`passed` says which).
    `run_dir`: the training run, whose run.json says whether it was QLoRA (and a full fine-tune's base).
    A full fine-tune's model directory in place of the adapter is copied and verified against itself."""
    check_output_dir(out_dir, "merge output")
    done = existing_output(out_dir, force)
    if done:
        return {**done, "skipped": True}
    full = is_full_model(adapter_dir)
    if full:
        base = base or _trained_base(run_dir)  # only for its dtype and tokenizer.model; None: the model's own
    else:
        base = base or read_adapter_config(adapter_dir).base_model_name_or_path
        if not base:
            raise UserError(f"{adapter_dir}/adapter_config.json names no base model; pass --base")
    base_path = resolve_model(base) if base else None  # a local model directory, or a Hub id in the cache

    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(base_path or adapter_dir)
    except (OSError, ValueError) as e:  # a config.json that is not JSON, or names no known model type
        raise UserError(f"base {base or adapter_dir}: its config.json cannot be read: {str(e).splitlines()[0]}") \
            from None
    if getattr(config, "quantization_config", None):
        raise UserError(f"base {base} is a quantised checkpoint; merge needs its full-precision original (--base)")
    dtype = _dtype_name(config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or adapter_dir)
    except (OSError, ValueError) as e:
        raise UserError(f"no tokenizer in {tokenizer_dir or adapter_dir} ({e}); pass --tokenizer DIR") from None
    prompts = verification_prompts(tokenizer)
    ids = [token_ids(tokenizer, p) for p in prompts]

    if full:
        model = AutoModelForCausalLM.from_pretrained(adapter_dir, dtype=torch.float32).eval()
        reference = [hf_logits(model, i) for i in ids]
        merged = model.to(getattr(torch, dtype))
    else:
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32),
                                          adapter_dir)
        model.eval()
        reference = [hf_logits(model, i) for i in ids]
        merged = model.merge_and_unload().to(getattr(torch, dtype))
    del model

    with staging(out_dir, directory=True) as tmp, disk_space_errors(out_dir):
        generation = merged.generation_config
        generation.eos_token_id = stop_token_ids(tokenizer, generation)
        if generation.pad_token_id is None:
            generation.pad_token_id = tokenizer.pad_token_id
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _keep_sentencepiece_model(base_path or adapter_dir, tokenizer_dir or adapter_dir, tmp)
        del merged
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=getattr(torch, dtype)).eval()
        metrics = compare_logits(reference, [hf_logits(reloaded, i) for i in ids])
        tolerance = TOLERANCES[dtype]
        failures = tolerance.failures(metrics)
        report = {
            "check": f"merged model vs {'the trained model' if full else 'base+adapter'} (float32) logits at every "
                     "prompt position",
            "passed": not failures,
            "failures": failures,
            "base": str(base) if base else None,
            "adapter": str(adapter_dir),
            "finetune": "full" if full else "lora",
            "dtype": dtype,
            "qlora": _trained_with_qlora(run_dir),
            "eos_token_id": reloaded.generation_config.eos_token_id,
            "tolerance": tolerance.to_dict(),
            "metrics": metrics,
            "prompts": len(prompts),
        }
        if report["passed"]:
            write_json(tmp / VERIFY_FILE, report)
            commit(tmp, out_dir)
    return report


def stop_token_ids(tokenizer, generation_config) -> list[int]:
    """The base's eos ids plus the tokenizer's eos and the chat template's end-of-turn token, in that order."""
    eos = generation_config.eos_token_id
    ids = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    end = end_of_turn_token(tokenizer) if tokenizer.chat_template else None
    ids += [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(end) if end else None]
    return list(dict.fromkeys(i for i in ids if i is not None))


def _keep_sentencepiece_model(base: str, tokenizer_dir: Path, out: Path) -> None:
    """Copy the SentencePiece `tokenizer.model` of the tokenizer (or else the base) into the merged model.

    transformers 5 saves tokenizers as tokenizer.json only, but llama.cpp's converter builds Gemma's vocabulary
    from tokenizer.model; without it, it takes the BPE path and refuses the unknown pre-tokenizer. The GGUF
    tokenizer parity check catches a file that does not match the tokenizer.
    """
    source = Path(tokenizer_dir) / "tokenizer.model"
    if not source.is_file():
        source = _base_file(base, "tokenizer.model")
    if source and not (out / "tokenizer.model").exists():
        shutil.copyfile(source, out / "tokenizer.model")


def _base_file(base: str, name: str) -> Path | None:
    """The base model's file `name` (from its directory, or the Hub and its cache), or None where it has none."""
    if Path(base).is_dir():
        return Path(base) / name if (Path(base) / name).is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(base, name))
    except EntryNotFoundError:  # not in the repository, or (offline) not in the cache
        return None


def read_adapter_config(adapter_dir: Path):
    """The LoRA adapter's PEFT config; a UserError for a directory that is not a LoRA adapter."""
    from peft import PeftConfig

    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise UserError(f"{path} not found; --adapter must be a PEFT adapter directory (train writes RUN/adapter)")
    try:
        config = PeftConfig.from_pretrained(str(adapter_dir))
    except (ValueError, TypeError) as e:
        raise UserError(f"{path} is not a PEFT adapter config: {e}") from None
    if config.peft_type != "LORA":
        raise UserError(f"{adapter_dir} holds a {getattr(config.peft_type, 'value', config.peft_type)} adapter; merge handles LoRA adapters")
    return config


def _dtype_name(config) -> str:
    """The base checkpoint's dtype as a torch attribute name; float32 where the config does not say."""
    dtype = getattr(config, "dtype", None)
    name = str(dtype).removeprefix("torch.") if dtype is not None else "float32"
    if name not in TOLERANCES:
        raise UserError(f"base dtype {name} is not one merge can write; expected one of {', '.join(TOLERANCES)}")
    return name


def _trained_base(run_dir: Path | None) -> str | None:
    """The base model a run trained from, as its recipe named it (run.json), or None where that is not known."""
    info = read_run_info(run_dir) if run_dir else None
    return info.base_model if info else None


def _trained_with_qlora(run_dir: Path | None) -> bool | None:
    """Whether the run's recipe trained on a 4-bit base (recorded for the model card; the merge is the same)."""
    info = read_run_info(run_dir) if run_dir else None
    return info.qlora if info else None
