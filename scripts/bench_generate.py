"""Benchmark `eval run`'s generation: batched against one prompt at a time, on the same cases in one process.

Both passes run `eval.generate.predict` on N cases spread over the dispatch suite (every category, chains too) with
the same loaded model, after a warm-up, and the script checks that they produced the same text (greedy, left
padding). It prints a markdown table
with cases/s and tokens/s. On a CPU with a tiny random model (the default, built offline) only the ratio means
anything: a random model never ends its turn, so every turn runs to --max-new-tokens.

    python scripts/bench_generate.py                                   # tiny Qwen3 on CPU
    python scripts/bench_generate.py --model Qwen/Qwen3-0.6B --cases 77 --batch-size 32 --max-new-tokens 256  # GPU
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dispatchtune.eval.generate import HFBackend, predict  # noqa: E402
from dispatchtune.eval.suite import load_dispatch_suite  # noqa: E402


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), {gpu}; "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads); load average at start "
            f"{os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="Hub id or directory (default: a tiny random Qwen3, built in a temp directory)")
    ap.add_argument("--cases", type=int, default=24, help="N cases, every k-th of the dispatch suite (default: 24)")
    ap.add_argument("--batch-size", type=int, default=16, help="batch size of the batched pass (default: 16)")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="tokens per turn at most (default: 32)")
    args = ap.parse_args()

    model = args.model
    if model is None:
        from dispatchtune.tiny_models import build_tiny_model

        model = str(build_tiny_model("qwen3", Path(tempfile.mkdtemp(prefix="bench_generate_")) / "qwen3"))
    suite = load_dispatch_suite()
    cases = suite[:: max(1, len(suite) // args.cases)][: args.cases]
    backend = HFBackend(model, None, model, args.max_new_tokens)
    backend.generate([backend.render(cases[0], cases[0].messages)])  # warm-up: kernels, allocator, caches

    rows, outputs, walls = [], [], []
    for mode, batch_size in (("batched", args.batch_size), ("one by one", 1)):
        start = time.perf_counter()
        predictions, stats = predict(cases, backend, batch_size)
        wall = time.perf_counter() - start
        outputs.append([p.turns for p in predictions])
        walls.append(wall)
        rows.append(f"| {mode} | {batch_size} | {len(cases)} | {stats['turns']} | {stats['tokens']} | {wall:.1f} | "
                    f"{len(cases) / wall:.2f} | {stats['tokens'] / wall:.1f} |")
    command = "python scripts/bench_generate.py " + shlex.join(sys.argv[1:])
    print(f"\n## eval run generation: batched vs one by one\n\n"
          f"- command: `{command.strip()}`\n- machine: {machine()}\n- date: {datetime.date.today()}\n"
          f"- model: {args.model or 'tiny random Qwen3 (dispatchtune.tiny_models)'}; {len(cases)} cases of the "
          f"dispatch suite ({len({c.category for c in cases})} categories); greedy, "
          f"--max-new-tokens {args.max_new_tokens}\n\n"
          "| mode | batch size | cases | turns | tokens | wall s | cases/s | tokens/s |\n"
          "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
          f"batched is {walls[1] / walls[0]:.2f}x one by one; identical outputs: "
          f"{'yes' if outputs[0] == outputs[1] else 'NO'}")


if __name__ == "__main__":
    main()
