"""The encode benchmark runs (small, no timing assertions: speed is recorded in docs/benchmarks.md), and its floor
tokenizes the very texts the encode does (the script checks the two token counts agree)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_encode_runs_and_counts_the_same_tokens(tiny_models, tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_encode.py"), "--records", "60", "--single",
                          "--tokenizer", str(tiny_models("qwen3")), "--keep", str(tmp_path)],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line.split("|")[1].strip() for line in run.stdout.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["tokenizer(texts), one batch (floor)", "encoded as training does (1 process)",
                        "encoded again (cache)", "encoded in 1 process (--single)"], run.stdout
