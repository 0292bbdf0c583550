"""The prep benchmark runs (small, no timing assertions: speed is recorded in docs/benchmarks.md)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_prep_runs_and_accounts_for_every_record(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_prep.py"), "--records", "203", "--keep", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "| dispatchtune prep |" in out and "records/s" in out
    assert "read 203 records" in out
