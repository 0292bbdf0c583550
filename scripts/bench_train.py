"""Benchmark LoRA SFT: TRL's defaults (padded batches) against our recipe defaults (packed, padding-free), one run.

Both set-ups train the same randomly initialised model of a real architecture (config values below, no download)
on the same synthetic samples for the same number of optimizer steps with the same seed and LoRA (r 32, alpha 64,
all-linear, as recipes/qwen3-0.6b.yaml), each in a fresh process, so peak memory is each one's own:

- vanilla: `SFTTrainer` with `SFTConfig` defaults as a new user writes them: padded batches, no packing, no
  padding-free, no Liger, weights loaded in TRL's default fp32 under bf16 autocast, gradient checkpointing (TRL's
  default), transformers' default attention (sdpa). Its batch holds as many samples as ours packs into its rows on
  average, so both see about the same tokens per step. What it shares with ours: max_length, learning rate and
  schedule, seed (the recipe's), so the two learn the same thing.
- ours: `dispatchtune train`'s own path: the recipe through `train.config.load_recipe` (machine defaults: bfd
  packing, padding-free, bf16, gradient checkpointing, Liger where installed), `train.sft._set_model_init` (dtype,
  attention: flash_attention_2 where flash_attn or kernels is installed, else sdpa; QLoRA), the same LoraConfig and
  `SFTTrainer` call as `train.sft.train`, then `train.sft.check_packing`. Not run: reading and encoding sample files
  (the samples are synthetic token ids) and saving the adapter.

Samples: random token ids (Zipf-distributed, so there is something to learn) with an assistant mask, their lengths
and trained shares drawn from ToolBench traces (TOOLBENCH below). Longer ones than --seq-len are redrawn, as
`prep --max-tokens` would reject them.

Timing: each optimizer step ends with a device synchronisation; the first --warmup steps are not timed. tokens/s
counts real tokens (no padding). MFU and HFU divide FLOPs by the MEASURED matmul ceiling of the machine (bf16
8192^3 timed with CUDA events, median of 10; on CPU fp32 2048^3). FLOPs per optimizer step, summed over its
micro-batches, with T real tokens, T_lab trained tokens, L each sequence's real length:

    frozen linears (forward 2, backward 2: activation gradients only):   4 * N_frozen * T
    LoRA adapters (forward 2, backward 4: activation and weight grads): 6 * N_lora * T
    LM head (TRL's fused head projects the trained positions only*):    4 * V * d * T_lab
    attention scores and values, causal (L^2/2 pairs), per sequence:     6 * layers * heads * head_dim * sum(L^2)
    gradient checkpointing recomputes each layer's forward:              2 * (N_frozen + N_lora) * T
                                                                         + 2 * layers * heads * head_dim * sum(L^2)

N_frozen: weights of the linear layers LoRA wraps (all-linear: every projection of the decoder); N_lora: r * (in +
out) summed over them; V * d: the LM head. MFU counts the first four lines (the convention: recompute is not useful
work), HFU all five. Neither counts padding, nor attention an implementation computes and masks out (sdpa, given a
packed row's block-diagonal mask, computes the row's whole square): such waste shows as lower MFU. Norms, rotary
embeddings and activations are not counted. (*on CUDA; elsewhere the head scores every position, not counted.)

--attn sets ours' attention (e.g. flex_attention, which skips masked-out blocks: the fair comparison on a machine
without FlashAttention); vanilla keeps transformers' default.

    python scripts/bench_train.py --model tiny --device cpu --steps 2 --warmup 1      # CPU smoke (the test)
    python scripts/bench_train.py --model qwen3-0.6b --out /tmp/qwen3-0.6b.md         # GPU
    python scripts/bench_train.py --model qwen3-4b --seq-len 4096 --steps 5           # 4B LoRA bf16 at 4k
    python scripts/bench_train.py --model qwen3-4b --qlora --steps 5                  # 4B QLoRA peak memory
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RECIPE = ROOT / "recipes" / "qwen3-0.6b.yaml"

# Config values of the real checkpoints (their config.json); random weights, so only the shapes matter.
# Qwen3.5-4B is left out: its Gated DeltaNet dimensions could not be confirmed offline, and its packed path needs
# causal-conv1d and flash-linear-attention, which the GPU image lacks (recipes/qwen3.5-4b.yaml turns packing off).
QWEN3 = dict(head_dim=128, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=40960,
             rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0})
ARCHS = {
    "qwen3-0.6b": ("Qwen3Config", dict(QWEN3, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                                       num_attention_heads=16, num_key_value_heads=8)),
    "qwen3-1.7b": ("Qwen3Config", dict(QWEN3, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                                       num_attention_heads=16, num_key_value_heads=8)),
    "qwen3-4b": ("Qwen3Config", dict(QWEN3, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                                     num_attention_heads=32, num_key_value_heads=8)),
    "llama-3.2-1b": ("LlamaConfig", dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True,
        max_position_embeddings=131072, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500_000.0, "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})),
}
# The tiny Qwen3 (2 layers, hidden 256, dispatchtune.tiny_models) is for CPU: its samples are 1/8 the length.
TINY_LENGTH_SCALE, TINY_SEQ_LEN = 1 / 8, 1024

# (tokens, trained tokens) of each sample `prep` accepts from /work/shared/data/toolbench: the DFS answer traces
# (answer/G*_answer/*.json) and the ToolLLaMA sample (toolllama/toolllama_G1_dfs_sample.json); 10 traces, two of them
# the same queries through both readers. Each is rendered with Qwen3's chat template and tools, thinking off, and
# masked by train.mask (the tiny Qwen3, which has the real template and special tokens), as the rows it trains as:
# one per assistant turn, each after the prompt generation sees (39 rows). Tokens = special tokens +
# the other characters / CHARS_PER_TOKEN: the tiny tokenizer's own count means nothing for the real one. Regenerate:
# `python scripts/bench_train.py --derive-lengths ../shared/data/toolbench`.
# Assumed characters per token of Qwen3's tokenizer on this text: about 4 on English prose, fewer on JSON (quotes,
# braces, and digits, which it splits one per token). If the true ratio is r, these lengths are r / 3.5 times the truth.
CHARS_PER_TOKEN = 3.5
TOOLBENCH = [(447, 25), (449, 25), (449, 25), (790, 30), (790, 30), (795, 38), (840, 25), (891, 36), (893, 78),
             (932, 57), (1251, 38), (1334, 183), (1349, 38), (1387, 183), (1412, 161), (1504, 29), (1550, 25),
             (1939, 320), (2016, 30), (2016, 30), (2023, 32), (2085, 225), (2157, 33), (2295, 35), (2338, 357),
             (2354, 27), (2354, 27), (2395, 35), (2525, 65), (2624, 27), (2936, 30), (3035, 128), (3038, 395),
             (3169, 168), (3216, 282), (3268, 168), (3427, 79), (4405, 353), (4758, 43)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen3-0.6b", choices=["tiny", *ARCHS],
                    help="architecture, random weights (default: qwen3-0.6b)")
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps (default: 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps before them (default: 3)")
    ap.add_argument("--rows", type=int, help="ours: packed rows per micro-batch (default: the recipe's 2)")
    ap.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default: 1)")
    ap.add_argument("--seq-len", type=int, help=f"max_length (default: the recipe's 8192; tiny {TINY_SEQ_LEN})")
    ap.add_argument("--attn", help="ours: attention implementation, e.g. flex_attention (default: the recipe's auto)")
    ap.add_argument("--qlora", action="store_true", help="4-bit NF4 base for both set-ups (CUDA only)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--seed", type=int, default=0, help="seed of the weights and samples (default: 0)")
    ap.add_argument("--out", type=Path, help="also write the markdown table to this file")
    ap.add_argument("--work-dir", type=Path, help="keep the model, logs and results here (default: a temp dir)")
    ap.add_argument("--derive-lengths", type=Path, metavar="TOOLBENCH_DIR", help="print TOOLBENCH from this data")
    ap.add_argument("--worker", choices=["vanilla", "ours"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 1:
        ap.error("--steps and --warmup must be at least 1 (the clock starts at the end of the last warm-up step)")
    shortest = min(n for n, _ in TOOLBENCH) * settings(args)["length_scale"]
    if args.seq_len and args.seq_len < shortest:
        ap.error(f"--seq-len {args.seq_len} is below the shortest ToolBench sample ({shortest:.0f} tokens)")
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported, here and in the workers
    if args.derive_lengths:
        print(derive_lengths(args.derive_lengths))
        return 0
    if args.worker:
        result = train_once(args.worker, args, args.work_dir)
        (args.work_dir / f"{args.worker}.json").write_text(json.dumps(result) + "\n")
        return 0

    import torch

    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        sys.exit("--device cuda: no CUDA GPU visible")
    if args.qlora and not cuda:
        sys.exit("--qlora needs a CUDA GPU (bitsandbytes 4-bit); run it on the GPU machine")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_train_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        build_model(args.model, work, args.seed)
        ceiling = matmul_ceiling(cuda)
        results = {}
        for setup in ("vanilla", "ours"):
            print(f"bench_train: training {setup} ...", file=sys.stderr, flush=True)
            results[setup] = run_worker(setup, work)
        table = report(args, results, ceiling, cuda)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")
    return 0 if all("error" not in r for r in results.values()) else 1


def settings(args) -> dict:
    """The run's shape: the CLI's values, else the recipe's (tiny: shorter samples and rows)."""
    import yaml

    training = yaml.safe_load(RECIPE.read_text())["training"]
    tiny = args.model == "tiny"
    return {"rows": args.rows or training["per_device_train_batch_size"],
            "seq_len": args.seq_len or (TINY_SEQ_LEN if tiny else training["max_length"]),
            "length_scale": TINY_LENGTH_SCALE if tiny else 1.0,
            "steps": args.warmup + args.steps}


def build_model(name: str, work: Path, seed: int) -> None:
    """The random model at model_dir(): the tiny Qwen3 (work/tiny), or one of ARCHS in bf16 (work/model). The tiny
    Qwen3's tokenizer serves every architecture: SFTTrainer only takes pad and eos ids from it."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from dispatchtune.tiny_models import build_tiny_model

    build_tiny_model("qwen3", work / "tiny", seed=seed)
    if name != "tiny":
        config_class, values = ARCHS[name]
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(getattr(transformers, config_class)(**values), dtype=torch.bfloat16)
        shutil.rmtree(work / "model", ignore_errors=True)
        model.save_pretrained(work / "model")


def model_dir(name: str, work: Path) -> Path:
    return work / ("tiny" if name == "tiny" else "model")


def matmul_ceiling(cuda: bool) -> dict:
    """The measured matmul ceiling: median TFLOP/s of a bf16 8192^3 product (CUDA events), or fp32 2048^3 on CPU."""
    import torch

    n, dtype, device = (8192, torch.bfloat16, "cuda") if cuda else (2048, torch.float32, "cpu")
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    times = []
    for k in range(13 if cuda else 7):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            a @ b
            seconds = time.perf_counter() - t0
        if k >= 3:  # after warm-up
            times.append(seconds)
    del a, b
    if cuda:
        torch.cuda.empty_cache()
    return {"tflops": 2 * n**3 / statistics.median(times) / 1e12,
            "what": f"{'bf16' if cuda else 'fp32'} {n}^3 matmul, median of {len(times)}"}


def run_worker(setup: str, work: Path) -> dict:
    """One set-up in a fresh process (this script with --worker); its output goes to work/SETUP.log."""
    argv = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], "--worker", setup, "--work-dir", str(work)]
    with open(work / f"{setup}.log", "w") as log:
        rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc == 0:
        return json.loads((work / f"{setup}.json").read_text())
    lines = (work / f"{setup}.log").read_text(errors="replace").strip().splitlines() or ["?"]
    print(f"bench_train: {setup} failed (exit {rc}); end of its log:\n" + "\n".join(lines[-25:]), file=sys.stderr)
    return {"error": lines[-1][:160]}


def samples(rows: int, seq_len: int, length_scale: float, steps: int, vocab: int, seed: int):
    """ToolBench-shaped samples: enough for 1.5x the steps of `rows` packed rows. Lengths and trained shares are drawn
    from TOOLBENCH (linear interpolation between its sorted values); the mask puts the prompt first, then four
    assistant turns with a tool response after each of the first three. Token ids follow a Zipf law."""
    import numpy as np

    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, len(TOOLBENCH))
    lengths = sorted(n for n, _ in TOOLBENCH)
    shares = sorted(t / n for n, t in TOOLBENCH)
    zipf = 1 / np.arange(1, min(vocab, 32768) + 1) ** 1.1
    zipf /= zipf.sum()
    out, total = [], 0
    while total < 1.5 * steps * rows * seq_len:
        length = round(np.interp(rng.random(), grid, lengths) * length_scale)
        if length > seq_len:
            continue
        trained = max(4, round(length * np.interp(rng.random(), grid, shares)))
        turn, tool = trained // 4, (length - trained) // 6
        prompt = length - trained - 3 * tool
        mask = [0] * prompt + ([1] * turn + [0] * tool) * 3 + [1] * (trained - 3 * turn)
        out.append((rng.choice(len(zipf), size=length, p=zipf).tolist(), mask))
        total += length
    return out


def workload(args, vocab: int):
    """(dataset, vanilla batch size): pre-tokenized `input_ids` + `assistant_masks` as `train.encode.encoded` gives
    SFTTrainer, and as many samples per padded batch as TRL's bfd packing puts into `rows` rows on average."""
    from datasets import Dataset, Features, Sequence, Value
    from trl.data_utils import pack_dataset

    s = settings(args)
    drawn = samples(s["rows"], s["seq_len"], s["length_scale"], s["steps"] * args.grad_accum, vocab, args.seed)
    features = Features({"input_ids": Sequence(Value("int32")), "assistant_masks": Sequence(Value("int8"))})
    dataset = Dataset.from_dict({"input_ids": [i for i, _ in drawn], "assistant_masks": [m for _, m in drawn]},
                                features=features)
    packed_rows = len(pack_dataset(dataset.select_columns(["input_ids"]), s["seq_len"], "bfd"))
    return dataset, max(1, round(s["rows"] * len(dataset) / packed_rows))


def train_once(setup: str, args, work: Path) -> dict:
    """Train one set-up for warmup + steps optimizer steps; what it measured."""
    import resource

    import torch
    from accelerate import PartialState
    from transformers import AutoConfig, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from dispatchtune.train.config import load_recipe
    from dispatchtune.train.sft import _set_model_init, check_packing

    cuda = torch.cuda.is_available()
    s = settings(args)
    overrides = [f"run.dir={work / setup}", f"training.max_steps={s['steps']}", "training.logging_steps=1",
                 f"training.per_device_train_batch_size={s['rows']}", f"training.max_length={s['seq_len']}",
                 f"training.gradient_accumulation_steps={args.grad_accum}", "training.save_strategy=no",
                 "training.disable_tqdm=true", f"model.qlora={str(args.qlora).lower()}"]
    recipe = load_recipe(RECIPE, overrides + ([f"model.attn_implementation={args.attn}"] if args.attn else []))
    quantization = _set_model_init(recipe, PartialState())
    model_path = model_dir(args.model, work)
    dataset, vanilla_batch = workload(args, AutoConfig.from_pretrained(model_path).vocab_size)
    ours = recipe.training
    if setup == "ours":
        config = ours
    else:  # TRL's defaults, with the recipe's optimisation so both learn the same; bf16 autocast (TRL's) on CUDA
        config = SFTConfig(output_dir=str(work / setup), per_device_train_batch_size=vanilla_batch,
                           gradient_accumulation_steps=ours.gradient_accumulation_steps, max_steps=ours.max_steps,
                           max_length=ours.max_length, learning_rate=ours.learning_rate,
                           lr_scheduler_type=ours.lr_scheduler_type, warmup_steps=ours.warmup_steps, seed=ours.seed,
                           logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, bf16=cuda)
    trainer = SFTTrainer(
        model=str(model_path), args=config, train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(work / "tiny"),
        peft_config=recipe.lora,
        quantization_config=quantization,
    )
    if trainer.padding_free:
        check_packing(trainer.model, args.model)
    counter, clock = BatchCounter(trainer.data_collator), step_clock(cuda)
    trainer.data_collator = counter
    trainer.add_callback(clock)
    trainer.train()

    timed = counter.batches[args.warmup * args.grad_accum: s["steps"] * args.grad_accum]
    totals = {key: sum(b[key] for b in timed) for key in timed[0]}
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    model = trainer.model
    base = next(p for p in model.parameters() if not p.requires_grad)
    return {
        "seconds": clock.ends[-1] - clock.ends[args.warmup - 1],
        "steps": args.steps, **totals, **model_flops(model, totals, config.activation_checkpointing),
        "batch": (f"{s['rows']} packed rows of {s['seq_len']}" if trainer.padding_free
                  else f"{vanilla_batch} sample{'s' * (vanilla_batch > 1)}, padded"),
        "attention": model.config._attn_implementation,
        "precision": f"{'4-bit' if quantization else str(base.dtype).removeprefix('torch.')} weights"
                     f"{', bf16 autocast' if config.bf16 else ''}",
        "checkpointing": bool(config.activation_checkpointing), "liger": bool(config.use_liger_kernel),
        "peak_gib": (torch.cuda.max_memory_allocated() / 2**30 if cuda
                     else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20),
        "loss_first": losses[0], "loss_last": losses[-1],
    }


class BatchCounter:
    """Stands in for the trainer's collator: counts what each micro-batch holds (real tokens, positions including
    padding, trained tokens, sequences and the sum of their squared lengths)."""

    def __init__(self, collate):
        self.collate, self.batches = collate, []

    def __call__(self, examples):
        batch = self.collate(examples)
        lengths = (batch["cu_seq_lens_q"].diff() if "cu_seq_lens_q" in batch else batch["attention_mask"].sum(1)).long()
        self.batches.append({"tokens": int(lengths.sum()), "positions": batch["input_ids"].numel(),
                             "trained": int((batch["labels"][:, 1:] != -100).sum()), "sequences": len(lengths),
                             "square": int((lengths**2).sum())})
        return batch


def step_clock(cuda: bool):
    """A TrainerCallback that ends each optimizer step with a device synchronisation and a timestamp (`.ends`)."""
    import torch
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    return StepClock()


def model_flops(model, totals: dict, checkpointing: bool) -> dict:
    """MFU and HFU FLOPs of the timed micro-batches (the formula in this file's docstring)."""
    from peft.tuners.lora import LoraLayer

    wrapped = [m for m in model.modules() if isinstance(m, LoraLayer)]
    frozen = sum(m.in_features * m.out_features for m in wrapped)
    adapters = sum(r * (m.in_features + m.out_features) for m in wrapped for r in m.r.values())
    head = model.get_output_embeddings().weight.shape.numel()
    text = model.config.get_text_config()
    attention = text.num_hidden_layers * text.num_attention_heads * (
        getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)
    tokens, square = totals["tokens"], totals["square"]
    mfu = 4 * frozen * tokens + 6 * adapters * tokens + 4 * head * totals["trained"] + 6 * attention * square
    recompute = 2 * (frozen + adapters) * tokens + 2 * attention * square if checkpointing else 0
    return {"flops_mfu": mfu, "flops_hfu": mfu + recompute, "n_frozen": frozen, "n_lora": adapters, "n_head": head}


def report(args, results: dict, ceiling: dict, cuda: bool) -> str:
    """The markdown table, under the command, machine, versions, date, workload and FLOP formula."""
    s, batches, peak = settings(args), args.steps * args.grad_accum, ceiling["tflops"] * 1e12
    header = ["set-up", "batch", "attention", "precision", "checkpointing", "Liger", "samples / micro-batch",
              "real tokens / micro-batch", "padding", "tokens/s", "MFU", "HFU",
              "peak GPU GiB (max allocated)" if cuda else "peak RSS GiB", "loss first → last"]
    rows = [header, ["---"] * len(header)]
    for setup, r in results.items():
        if "error" in r:
            rows.append([setup, "failed: " + r["error"].replace("|", "/")] + [""] * (len(header) - 2))
            continue
        rows.append([setup, r["batch"], r["attention"], r["precision"], "yes" if r["checkpointing"] else "no",
                     "yes" if r["liger"] else "no", f"{r['sequences'] / batches:.1f}", f"{r['tokens'] / batches:,.0f}",
                     f"{1 - r['tokens'] / r['positions']:.0%}", f"{r['tokens'] / r['seconds']:,.0f}",
                     f"{r['flops_mfu'] / r['seconds'] / peak:.1%}", f"{r['flops_hfu'] / r['seconds'] / peak:.1%}",
                     f"{r['peak_gib']:.2f}", f"{r['loss_first']:.3f} → {r['loss_last']:.3f}"])
    vanilla, ours = results["vanilla"], results["ours"]
    if "error" in vanilla or "error" in ours:
        ratio, sizes = "ours / vanilla: no ratio, a set-up failed", ours if "error" in vanilla else vanilla
    else:
        speed = (ours["tokens"] / ours["seconds"]) / (vanilla["tokens"] / vanilla["seconds"])
        ratio = f"ours / vanilla: {speed:.2f}x tokens/s, {ours['peak_gib'] / vanilla['peak_gib']:.2f}x peak memory"
        sizes = ours
    lengths = [round(n * s["length_scale"]) for n, _ in TOOLBENCH]
    trained = sum(t for _, t in TOOLBENCH) / sum(n for n, _ in TOOLBENCH)
    model = "tiny Qwen3, 2 layers, hidden 256" if args.model == "tiny" else args.model
    lines = [
        f"## LoRA SFT: TRL defaults vs our recipe defaults ({model}, random weights{', QLoRA' if args.qlora else ''})",
        "",
        f"- command: `python scripts/bench_train.py {shlex.join(sys.argv[1:])}`",
        f"- machine: {machine(cuda)}",
        f"- versions: {versions()}",
        f"- date: {datetime.date.today()}",
        f"- workload: synthetic samples shaped like ToolBench traces ({min(lengths)}-{max(lengths)} tokens, longer "
        f"than max_length {s['seq_len']} redrawn; {trained:.0%} trained); {args.warmup} warm-up + {args.steps} timed "
        f"optimizer steps of {args.grad_accum} micro-batch(es); LoRA r 32, alpha 64, all-linear; seed {args.seed}",
        f"- ceiling: {ceiling['tflops']:.3g} TFLOP/s, measured ({ceiling['what']})",
        "- FLOPs per step: MFU counts 4·N_frozen·T + 6·N_lora·T + 4·V·d·T_trained + 6·layers·heads·head_dim·ΣL²; "
        "HFU adds gradient checkpointing's recompute, 2·(N_frozen + N_lora)·T + 2·layers·heads·head_dim·ΣL²; T real "
        f"tokens, L real sequence lengths (no padding); N_frozen {sizes.get('n_frozen', 0) / 1e6:,.1f}M, N_lora "
        f"{sizes.get('n_lora', 0) / 1e6:,.2f}M, V·d {sizes.get('n_head', 0) / 1e6:,.1f}M",
        "",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        ratio,
    ]
    return "\n".join(lines)


def machine(cuda: bool) -> str:
    import torch

    if cuda:
        props = torch.cuda.get_device_properties(0)
        memory = props.total_memory / 2**30
        return f"{props.name} ({memory:.0f} GiB, CUDA {torch.version.cuda}), {os.cpu_count()} CPU cores"
    cpu = platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU only: {cpu}, {os.cpu_count()} cores, torch {torch.get_num_threads()} threads"


def versions() -> str:
    from dispatchtune.train.sft import _versions

    names = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "liger-kernel", "bitsandbytes",
             "flash-attn", "kernels")
    found = _versions(names)
    return ", ".join(f"{name} {found.get(name, '-')}" for name in names) + f"; Python {platform.python_version()}"


def derive_lengths(toolbench: Path) -> list[tuple[int, int]]:
    """TOOLBENCH from the data (see its comment): (tokens, trained tokens) per row of the accepted samples, sorted."""
    from transformers import AutoTokenizer

    from dispatchtune.data_prep.prep import PrepConfig, prep
    from dispatchtune.data_prep.sample import read_jsonl
    from dispatchtune.tiny_models import build_tiny_model
    from dispatchtune.train.mask import ChatFormat

    inputs = sorted(toolbench.glob("answer/*/*.json")) + [toolbench / "toolllama" / "toolllama_G1_dfs_sample.json"]
    with tempfile.TemporaryDirectory() as tmp:
        prep(PrepConfig(inputs=inputs, out=Path(tmp) / "data", heldout_frac=0.0, progress=False))
        tokenizer = AutoTokenizer.from_pretrained(build_tiny_model("qwen3", Path(tmp) / "qwen3"))
        fmt = ChatFormat.from_tokenizer(tokenizer, template_kwargs={"enable_thinking": False})
        special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}

        def estimate(ids: list[int]) -> int:
            plain = [i for i in ids if i not in special]
            return round(len(ids) - len(plain) + len(tokenizer.decode(plain)) / CHARS_PER_TOKEN)

        out = []
        for sample in read_jsonl(Path(tmp) / "data" / "train.jsonl"):
            for ids, mask in fmt.encode(sample):
                out.append((estimate(ids), estimate([i for i, m in zip(ids, mask) if m])))
    return sorted(out)


if __name__ == "__main__":
    sys.exit(main())
