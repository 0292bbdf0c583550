"""`train` and `inspect` on the tiny Qwen3 model, on CPU: the loss falls, the adapter reloads and changes the model,
two-process DDP writes one adapter, a killed run resumes where it stopped, wandb works offline, and every user
mistake is one line with exit code 2.

The data is `prep` over the short samples of data/sample/formats (about 400 tiny-tokenizer tokens each), so with
max_length 512 a step takes a fraction of a second; the whole file runs in about two minutes on two cores.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
import trl  # noqa: F401  (imported here so its one-time import messages precede the tests that read stderr)
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from dispatchtune.data_prep.prep import PrepConfig, prep
from dispatchtune.data_prep.sample import Sample, read_jsonl
from dispatchtune.cli import main
from dispatchtune.errors import UserError
from dispatchtune.train.config import load_recipe
from dispatchtune.train.inspect import GREEN, RESET, render
from dispatchtune.train.mask import ChatFormat
from dispatchtune.train.sft import batched_by_length, train

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes/tiny.yaml")


@pytest.fixture(scope="module")
def env(tiny_models):
    """tiny:qwen3 resolves to the session's tiny model; no network, wandb offline."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISPATCHTUNE_TINY_CACHE", str(tiny_models("qwen3").parent))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mp.setenv("WANDB_MODE", "offline")
        yield


@pytest.fixture(scope="module")
def data(env, tmp_path_factory) -> Path:
    """train.jsonl: the five short tool-calling samples of data/sample/formats (glaive, hermes, openai, ...)."""
    out = tmp_path_factory.mktemp("data")
    prep(PrepConfig(inputs=sorted((ROOT / "data/sample/formats").iterdir()), out=out, heldout_frac=0.0,
                    progress=False))
    return out / "train.jsonl"


def overrides(run_dir: Path, data: Path, *more: str) -> list[str]:
    return [f"run.dir={run_dir}", f"data.train={data}", "training.max_length=512", *more]


class Record(TrainerCallback):
    """The losses logged and the global step after each optimizer step."""

    def __init__(self):
        self.losses, self.steps = [], []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def test_tiny_recipe_trains_and_the_adapter_reloads(data, tmp_path):
    record = Record()
    info = train(load_recipe(TINY, overrides(tmp_path, data, "training.num_train_epochs=2")), callbacks=[record])

    # 5 samples in 9 rows (Qwen3 trains each assistant turn in a row of its own: train.mask), one packed row each (2
    # never fit 512 together), batch 1: 9 steps an epoch
    assert info["metrics"]["steps"] == 18 and len(record.losses) == 18
    first, last = sum(record.losses[:9]) / 9, sum(record.losses[-9:]) / 9  # first and last epoch, same rows
    assert last < first - 0.5, record.losses
    assert info["metrics"]["first_loss"] == record.losses[0] and info["metrics"]["last_loss"] == record.losses[-1]

    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved == json.loads(json.dumps(info))
    d = saved["data"]["train"]
    assert d["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest() and d["path"] == str(data)
    assert d["samples"] == 5 and d["rows"] == 9 and d["tool_calls"] == 6 and d["truncated"] == d["left_out"] == 0
    assert 0 < d["trained_tokens"] < d["tokens"] and saved["recipe"]["training"]["num_train_epochs"] == 2
    assert saved["recipe"]["model"]["name_or_path"] == "tiny:qwen3" and saved["model"]["attn_implementation"] == "sdpa"
    assert saved["mask"] == {"method": "trl-training-template", "end_of_turn": "<|im_end|>"}
    assert {"torch", "transformers", "trl", "peft", "datasets", "accelerate"} <= set(saved["versions"])
    assert saved["git"] is None or len(saved["git"]["commit"]) == 40
    assert saved["metrics"]["train_loss"] > 0 and saved["metrics"]["runtime_s"] > 0 and saved["wandb_run_id"] is None
    assert saved["resumed_from"] is None and not list(tmp_path.glob(".adapter.partial*"))

    base_dir = saved["model"]["resolved"]
    ids = torch.tensor([list(range(3, 40))])
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    with torch.no_grad():
        base_logits = base(ids).logits
        tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), tmp_path / "adapter")
        tuned_logits = tuned(ids).logits
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-4)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "adapter")
    fmt = ChatFormat.from_tokenizer(AutoTokenizer.from_pretrained(base_dir))
    assert tokenizer.chat_template == fmt.inference_template  # what inference must render with
    assert not (tmp_path / "adapter/training_args.bin").exists()


@pytest.mark.parametrize("variant", ["use_dora", "use_rslora"])
def test_peft_variants_train_straight_from_the_recipe(data, tmp_path, variant):
    """`lora` is PEFT's LoraConfig: DoRA and rsLoRA need nothing of ours but the recipe key."""
    info = train(load_recipe(TINY, overrides(tmp_path, data, f"lora.{variant}=true", "training.max_steps=2")))
    assert info["metrics"]["steps"] == 2 and info["recipe"]["lora"][variant] is True
    saved = json.loads((tmp_path / "adapter/adapter_config.json").read_text())
    assert saved[variant] is True and saved["r"] == 8 and saved["lora_alpha"] == 16
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(info["model"]["resolved"]),
                                      tmp_path / "adapter")
    layer = tuned.base_model.model.model.layers[0].self_attn.q_proj
    if variant == "use_dora":  # DoRA learns a magnitude per output feature beside the low-rank update
        assert layer.lora_magnitude_vector["default"].weight.shape == (layer.out_features,)
    else:  # rsLoRA scales the update by alpha / sqrt(r), not alpha / r
        assert layer.scaling["default"] == pytest.approx(16 / 8 ** 0.5)


def test_full_finetune_trains_every_weight_and_saves_the_model(data, tmp_path, capsys):
    """model.finetune=full: no PEFT; RUN/adapter holds the whole model, loadable on its own, every tensor changed."""
    from safetensors.torch import load_file

    info = train(load_recipe(TINY, overrides(tmp_path, data, "model.finetune=full", "training.max_steps=2")))
    out = capsys.readouterr().out
    assert "the recipe's lora settings are not used" in out and "trainable params: " in out and "(all)" in out
    assert f"model:    {tmp_path / 'adapter'}" in out
    adapter = tmp_path / "adapter"
    assert not (adapter / "adapter_config.json").exists() and not (adapter / "training_args.bin").exists()
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= \
        {p.name for p in adapter.iterdir()}
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["model"]["finetune"] == "full" and saved["recipe"]["model"]["finetune"] == "full"
    assert saved["recipe"]["lora"] == {}  # not used, so not recorded as if it were
    assert saved["model"]["dtype"] == "float32" and info["metrics"]["steps"] == 2

    base = load_file(Path(saved["model"]["resolved"]) / "model.safetensors")
    trained = load_file(adapter / "model.safetensors")
    assert trained.keys() == base.keys()
    unchanged = [name for name in base if torch.equal(base[name], trained[name])]
    assert unchanged == []
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    assert tokenizer.chat_template == ChatFormat.from_tokenizer(tokenizer).inference_template
    AutoModelForCausalLM.from_pretrained(adapter)  # a model on its own, no base needed


def test_full_disk_while_training_is_one_line(data, small_disk, capsys):
    """The first checkpoint (adapter and optimizer state, about 1 MB) does not fit on a 512 KiB disk."""
    args = overrides(small_disk / "run", data, "training.max_steps=2", "training.save_steps=1")
    assert main(["train", "--recipe", TINY, *args]) == 2
    said = re.split(r"[\r\n]", capsys.readouterr().err)
    err = [line for line in said if line.strip() and not re.search(r"\d+%\|", line)]  # progress bars aside
    assert err == [f"dispatchtune train: error: no space left on the device of {small_disk}/run/checkpoints while "
                   "writing there; free some space (or write elsewhere) and run again"]


def test_two_process_ddp_writes_one_adapter(data, tmp_path, user_folder):
    # Two processes on CPU: `--multi_gpu` makes accelerate start them (torchrun), ACCELERATE_USE_CPU makes them join
    # over gloo on the CPU. (`--cpu --num_processes 2` alone starts one process unless mpirun is set up.) It runs
    # from a folder holding the user's own train.py and eval.py, which `-m dispatchtune.train` must not pick up.
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "dispatchtune.train", "--recipe", TINY,
           *overrides(tmp_path, data, "training.max_length=400")]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=user_folder, timeout=300,
                         env={**os.environ, "ACCELERATE_USE_CPU": "true"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("adapter:") == 1  # the summary, from the main process only
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["metrics"]["processes"] == 2 and info["metrics"]["steps"] == 4  # 8 rows over 2 processes
    assert info["data"]["train"]["truncated"] == 1  # the row over 400 tokens, cut by packing
    assert "1 rows longer than max_length 400 are cut to their first 400 tokens" in out.stdout
    assert info["data"]["train"]["left_out"] == 1  # the last turn of a sample, its prompt over 400 tokens
    assert "1 rows (later turns of long samples) are left out: their prompt fills max_length 400" in out.stdout
    assert (tmp_path / "adapter/adapter_model.safetensors").is_file()


KILL = textwrap.dedent("""
    import os, sys
    from transformers import TrainerCallback
    from dispatchtune.train.config import load_recipe
    from dispatchtune.train.sft import train

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 3:
                os._exit(1)

    train(load_recipe(sys.argv[1], sys.argv[2:]), callbacks=[Kill()])
""")


def test_killed_run_resumes_from_its_last_checkpoint(data, tmp_path, capsys):
    args = overrides(tmp_path / "run", data, "training.save_steps=1")  # one epoch: 9 steps
    script = tmp_path / "kill.py"
    script.write_text(KILL)
    killed = subprocess.run([sys.executable, str(script), TINY, *args], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert killed.returncode == 1, killed.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "checkpoints/checkpoint-3").is_dir(), killed.stderr[-3000:]
    assert not (run / "adapter").exists() and not (run / "run.json").exists()

    assert main(["train", "--recipe", TINY, *args]) == 2  # checkpoints there, but no --resume
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds checkpoint-3 of an unfinished run; pass --resume" in err[0]

    record = Record()
    info = train(load_recipe(TINY, args), resume=True, callbacks=[record])
    assert info["resumed_from"].endswith("checkpoint-3")
    assert record.steps == list(range(4, 10))  # continued at step 4, not from 0
    assert info["metrics"]["steps"] == 9 and json.loads((run / "run.json").read_text())["metrics"]["steps"] == 9
    state = json.loads((run / "checkpoints/checkpoint-9/trainer_state.json").read_text())
    assert state["global_step"] == 9 and [e["step"] for e in state["log_history"] if "loss" in e] == list(range(1, 10))


def test_resume_skips_checkpoints_a_kill_cut_short(data, tmp_path, capsys):
    """A kill or a full disk during a save leaves checkpoints without trainer_state.json (the Trainer writes it
    last) or with a weights file cut short: --resume continues from the last complete one, names the others, and
    run.json's train_loss covers the whole run, not only the resumed steps."""
    args = overrides(tmp_path / "run", data, "training.save_steps=1")  # one epoch: 9 steps
    script = tmp_path / "kill.py"
    script.write_text(KILL)
    killed = subprocess.run([sys.executable, str(script), TINY, *args], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert killed.returncode == 1, killed.stderr[-3000:]
    checkpoints = tmp_path / "run/checkpoints"
    weights = checkpoints / "checkpoint-3/adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a partially written file
    (checkpoints / "checkpoint-2/trainer_state.json").unlink()  # killed before the save's last file

    info = train(load_recipe(TINY, args), resume=True)
    out = capsys.readouterr().out
    assert "checkpoint-3 (adapter_model.safetensors is cut short" in out and "checkpoint-2 (no trainer_state" in out
    assert info["resumed_from"].endswith("checkpoint-1") and info["metrics"]["steps"] == 9
    state = json.loads((checkpoints / "checkpoint-9/trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 9 and info["metrics"]["train_loss"] == pytest.approx(sum(losses) / 9, abs=1e-3)


def test_wandb_offline_run_is_recorded(data, tmp_path):
    info = train(load_recipe(TINY, overrides(tmp_path, data, "run.wandb_project=dispatchtune-test",
                                             "run.wandb_tags=[test]", "training.eval_strategy=epoch",
                                             f"data.heldout={data}")))
    assert info["metrics"]["eval_loss"] > 0  # held-out loss, as a sweep can compare before the eval stage runs
    run_id = info["wandb_run_id"]
    assert info["wandb_project"] == "dispatchtune-test"
    assert json.loads((tmp_path / "run.json").read_text())["wandb_run_id"] == run_id
    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    assert (run_dir / f"run-{run_id}.wandb").is_file() and info["wandb_dir"] == str(run_dir)
    assert (tmp_path / "wandb_run_id").read_text().strip() == run_id  # what --resume continues


def empty_dir(tmp_path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def config_only(tmp_path) -> Path:
    folder = tmp_path / "config-only"
    folder.mkdir()
    (folder / "config.json").write_text((Path(os.environ["DISPATCHTUNE_TINY_CACHE"]) / "qwen3/config.json").read_text())
    return folder


def no_tool_calls(tmp_path) -> Path:
    path = tmp_path / "chat.jsonl"
    sample = Sample([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], [],
                    {"source": "chat.jsonl", "index": 0})
    path.write_text(sample.line_and_key()[0] + "\n")
    return path


@pytest.mark.parametrize("case, message", [
    ("missing recipe", "recipe file .*nope.yaml not found"),
    ("unknown key", "unknown recipe key training.learnig_rate; did you mean 'learning_rate'"),
    ("model not found", "model nobody/no-such-model is neither a local directory nor in the Hugging Face cache "
                        r"\(offline\); download it with `hf download nobody/no-such-model`"),
    ("no tool calls", r"chat.jsonl \(1 samples\) holds no assistant tool calls"),
    ("prompt too long", r"max_length 300 is shorter than the prompt of .*sharegpt_tools.json record 0 \(\d+ tokens\); "
                        r"raise training.max_length or filter with `prep --tokenizer ... --max-tokens 300`"),
    ("qlora on cpu", r"QLoRA needs a CUDA GPU \(bitsandbytes 4-bit\); set model.qlora=false"),
    ("missing data", "data file .*missing.jsonl not found; run `dispatchtune prep"),
    ("no such modules", r"lora.target_modules \['nope_proj', 'q_prj'\] match no module of tiny:qwen3; its linear "
                        r"layers are down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"),
    ("full with qlora", "model.qlora=true needs model.finetune=lora: QLoRA trains a LoRA adapter"),
    ("unknown finetune", "model.finetune=partial is not usable: expected one of lora, full"),
    ("batches by length with packing", "data.batch_by_length=True is not usable: it orders the batches itself: set "
                                       "training.packing=false"),
    ("empty model dir", "model directory .*empty holds no model \\(no config.json\\)"),
    ("model dir without weights", "model directory .*config-only holds no weights"),
])
def test_user_mistakes_are_one_line_and_exit_2(data, tmp_path, capsys, case, message):
    if case == "qlora on cpu" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv = {
        "missing recipe": ["train", "--recipe", str(tmp_path / "nope.yaml")],
        "unknown key": ["train", "--recipe", TINY, "training.learnig_rate=1e-4"],
        "model not found": ["train", "--recipe", TINY, "model.name_or_path=nobody/no-such-model",
                            *overrides(tmp_path, data)],
        "no tool calls": ["train", "--recipe", TINY, *overrides(tmp_path, no_tool_calls(tmp_path))],
        "prompt too long": ["train", "--recipe", TINY, *overrides(tmp_path, data, "training.max_length=300")],
        "qlora on cpu": ["train", "--recipe", TINY, "model.qlora=true", *overrides(tmp_path, data)],
        "missing data": ["train", "--recipe", TINY, *overrides(tmp_path, tmp_path / "missing.jsonl")],
        "no such modules": ["train", "--recipe", TINY, "lora.target_modules=[q_prj,nope_proj]",
                            *overrides(tmp_path, data)],
        "full with qlora": ["train", "--recipe", TINY, "model.qlora=true", "model.finetune=full",
                            *overrides(tmp_path, data)],
        "unknown finetune": ["train", "--recipe", TINY, "model.finetune=partial", *overrides(tmp_path, data)],
        "batches by length with packing": ["train", "--recipe", TINY, "data.batch_by_length=true",
                                           "training.packing=true", *overrides(tmp_path, data)],
        "empty model dir": ["train", "--recipe", TINY, f"model.name_or_path={empty_dir(tmp_path)}",
                            *overrides(tmp_path, data)],
        "model dir without weights": ["train", "--recipe", TINY, f"model.name_or_path={config_only(tmp_path)}",
                                      *overrides(tmp_path, data)],
    }[case]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("dispatchtune train: error: ")
    assert re.search(message, err[0]), err[0]


def test_inspect_marks_the_trained_tokens(data, capsys):
    assert main(["inspect", "--recipe", TINY, "--data", str(data), "--n", "2"]) == 0
    out = capsys.readouterr().out
    heads = [line for line in out.splitlines() if line.startswith("=== ")]
    assert len(heads) == 5 and heads[-1].startswith("=== overall: ")  # two samples of two rows, then the overall line
    assert " row 1/2: " in heads[0] and " row 2/2: " in heads[1]
    assert "[[" in out and "<|im_end|>\n]]" in out  # not a terminal: brackets; the end of turn trains
    assert "trained (" in out and "=== overall: " in out

    assert main(["inspect", "--recipe", TINY, "--data", str(data), "--n", "5", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(os.environ["DISPATCHTUNE_TINY_CACHE"] + "/qwen3")
    fmt = ChatFormat.from_tokenizer(tokenizer)
    encoded = [(sample, k, *row) for sample in read_jsonl(data) for k, row in enumerate(fmt.encode(sample))]
    assert len(rows) == len(encoded) == 9
    for row, (sample, k, input_ids, mask) in zip(rows, encoded):
        assert row["sample"] == sample.where() and row["row"] == k
        assert row["input_ids"] == input_ids and row["trained"] == mask
        assert len(row["tokens"]) == len(input_ids) and row["tokens"][0] == tokenizer.decode(input_ids[:1])
    text = render(tokenizer, input_ids, mask, color=True)  # on a terminal: each trained run in green
    assert text.count(GREEN) == text.count(RESET) == sum(1 for a, b in zip([0, *mask], mask) if b and not a)


@pytest.mark.parametrize("family, separates", [("qwen3", True), ("llama-3.2", True), ("opt", False)])
def test_packing_probe_refuses_models_whose_attention_mixes_packed_sequences(tiny_models, family, separates):
    from dispatchtune.train.sft import check_packing

    model = AutoModelForCausalLM.from_pretrained(tiny_models(family), attn_implementation="sdpa")
    if separates:
        check_packing(model, family)
    else:
        with pytest.raises(UserError, match=f"packed sequences attend to each other in {family}.*packing=false"):
            check_packing(model, family)


def test_batches_by_length_come_in_random_order_with_the_short_one_last():
    from datasets import Dataset

    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 11]
    rows = batched_by_length(Dataset.from_dict({"input_ids": [[0] * n for n in lengths]}), 3, seed=1)["input_ids"]
    batches = [[len(ids) for ids in rows[i : i + 3]] for i in range(0, len(rows), 3)]
    assert sorted(n for b in batches for n in b) == sorted(lengths)  # every row once
    assert batches[-1] == [10, 11]  # the short batch stays last, so the full ones keep their boundaries
    assert sorted(batches[:-1]) == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]  # neighbours in length batch together
    assert batches[:-1] != sorted(batches[:-1])  # in a seeded random order, not longest or shortest first
