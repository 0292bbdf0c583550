"""The training benchmark's CPU smoke run (tiny Qwen3; no timing assertions: GPU figures go in docs/benchmarks.md),
and its ToolBench length table, re-derived from the sample data."""

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_train.py"


def test_cpu_smoke_prints_both_set_ups_with_finite_losses(tmp_path):
    out = tmp_path / "table.md"
    run = subprocess.run([sys.executable, str(SCRIPT), "--model", "tiny", "--device", "cpu", "--warmup", "1", "--steps",
                          "2", "--rows", "1", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    table = run.stdout
    assert out.read_text() == table
    assert "- machine: CPU only" in table and "- ceiling: " in table and "MFU counts" in table
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| vanilla")
            or line.startswith("| ours")}
    assert set(rows) == {"vanilla", "ours"}
    assert "padded" in rows["vanilla"] and "packed rows" in rows["ours"]
    for row in rows.values():
        first, last = re.search(r"\| (\S+) → (\S+) \|$", row).groups()
        assert math.isfinite(float(first)) and math.isfinite(float(last))
    assert re.search(r"ours / vanilla: [\d.]+x tokens/s, [\d.]+x peak memory", table)


def test_qlora_needs_cuda():
    run = subprocess.run([sys.executable, str(SCRIPT), "--model", "tiny", "--device", "cpu", "--qlora"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "--qlora needs a CUDA GPU" in run.stderr


def test_toolbench_lengths_rederive(shared_data):
    spec = importlib.util.spec_from_file_location("bench_train", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.derive_lengths(shared_data / "toolbench") == bench.TOOLBENCH
