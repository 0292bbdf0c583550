"""Benchmark `dispatchtune prep` on a synthetic ToolLLaMA file of realistic record sizes.

The real `toolllama_G123_dfs_train.json` is a ~1.5 GB JSON array of ~187k step records (~8 KB each). This script
writes a file of that shape (`make_corpus.py --shape toolllama`: services shared across traces with a long-tailed
popularity, texts of real sizes from the bundled sample), then measures, each in a fresh process: `json.load` of
the whole file (what a naive reader does), the fast-decoder floor (`orjson.loads` of the whole file: parsing alone,
with a fast decoder) and `prep` (streamed, converted, validated, deduplicated, split, written) in one process and
with one worker per core, checking that both write the same bytes. It prints records/s, MB/s, wall time and peak RSS.

    python scripts/bench_prep.py --records 187000          # the full-size target (needs ~1.6 GB of disk)
    python scripts/bench_prep.py --records 20000 --keep DIR
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from make_corpus import write_corpus  # beside this script


def measure(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) of a child process, and its stdout."""
    code = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter(); p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "dt = time.perf_counter() - t\n"
        "print(json.dumps([dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, p.returncode, p.stdout, p.stderr]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True).stdout
    dt, rss, rc, stdout, stderr = json.loads(out)
    if rc:
        raise SystemExit(f"{' '.join(cmd)} failed ({rc}):\n{stderr}")
    return dt, rss, stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=187_000, help="step records in the synthetic file")
    ap.add_argument("--keep", type=Path, help="work in this directory and keep the file and outputs")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_prep_"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "toolllama_synthetic.json"
    size = data.stat().st_size if data.exists() and args.keep else write_corpus(data, "toolllama", args.records)
    mb = size / 1e6

    floor_dt, floor_rss, _ = measure([sys.executable, "-c", f"import json; json.load(open({str(data)!r}))"])
    fast_dt, fast_rss, _ = measure([sys.executable, "-c",
                                    f"import orjson; orjson.loads(open({str(data)!r}, 'rb').read())"])
    preps = []
    for name, more in (("dispatchtune prep --workers 1", ["--workers", "1"]),
                       ("dispatchtune prep", [])):  # default: one worker per core
        out = work / ("out-1" if more else "out")
        preps.append((name, *measure([sys.executable, "-m", "dispatchtune", "prep", str(data), "--out", str(out),
                                      "--format", "toolllama", "--no-progress", *more])))
        stats = json.loads((out / "stats.json").read_text())
        assert stats["read"] == args.records == stats["accepted"] + stats["rejected"], stats
    same = all((work / "out-1" / name).read_bytes() == (out / name).read_bytes()
               for name in ("train.jsonl", "heldout.jsonl", "rejected.jsonl", "stats.json"))
    stdout = preps[-1][3]

    print(stdout.strip())
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"input: {args.records:,} records, {mb:,.0f} MB\n")
    print("| run | wall s | records/s | MB/s | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for name, dt, rss in (("json.load whole file (no conversion)", floor_dt, floor_rss),
                          ("orjson.loads whole file (fast-decoder floor, no conversion)", fast_dt, fast_rss),
                          *((name, dt, rss) for name, dt, rss, _ in preps)):
        print(f"| {name} | {dt:.1f} | {args.records / dt:,.0f} | {mb / dt:,.0f} | {rss:,.0f} |")
    prep_dt, prep_rss = preps[-1][1:3]
    print(f"\nprep / json.load: {prep_dt / floor_dt:.2f}x the time, {prep_rss / floor_rss:.2f}x the memory; "
          f"prep / orjson.loads: {prep_dt / fast_dt:.2f}x the time, {prep_rss / fast_rss:.2f}x the memory; "
          f"one process / {os.cpu_count()} workers: {preps[0][1] / prep_dt:.2f}x the time; outputs "
          f"{'identical' if same else 'DIFFERENT'}; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("(peak RSS: the largest single process; workers are forks of the main process)")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
