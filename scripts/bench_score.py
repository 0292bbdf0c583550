"""Benchmark `dispatchtune eval score` on generated cases and predictions, on one CPU core.

Writes N cases of every category (BFCL-sized tool schemas: 1-4 tools of 2-6 typed parameters, 1 in 12 a two-turn
chain) and a prediction for each (calls, or with --text the Hermes text a model writes, parsed by eval.parse), a
third of them wrong in some way. Then measures, each in a fresh process pinned to one core:
- baseline: `json.loads` of every line of both files, nothing else (the floor for any scorer of JSON Lines);
- score: load cases and predictions, score every case (eval.score.score);
- cli: the whole `dispatchtune eval score` command (start-up, imports, cases.jsonl and the report files).
Times are CPU seconds of the process (user + system), which a busy shared machine disturbs far less than wall time.
It prints a markdown table with cases/s and each step's time as a multiple of the baseline's.

    python scripts/bench_score.py                  # 100k cases, calls-only predictions
    python scripts/bench_score.py --text --cases 50000
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TYPES = ["string", "integer", "number", "boolean", "array", "object"]
WORDS = ["Paris", "New York, NY", "2024-04-01", "celsius", "USD", "express", "blue", "Tokyo", "premium", "north"]


def _value(rng: random.Random, kind: str):
    if kind == "object":
        return {"unit": rng.choice(WORDS), "max": rng.randint(1, 9)}
    if kind == "array":
        return rng.sample(WORDS, 2)
    return {"string": rng.choice(WORDS), "integer": rng.randint(0, 500), "number": round(rng.uniform(0, 100), 2),
            "boolean": rng.random() < 0.5}[kind]


def _tool(rng: random.Random, name: str) -> dict:
    props = {f"p{i}": {"type": rng.choice(TYPES), "description": "a parameter of some length to look realistic"}
             for i in range(rng.randint(2, 6))}
    for p in props.values():
        if p["type"] == "array":
            p["items"] = {"type": "string"}
    return {"type": "function", "function": {"name": name, "description": "Does something useful with its inputs.",
            "parameters": {"type": "object", "properties": props, "required": list(props)[:2]}}}


def make_files(work: Path, n: int, text: bool, seed: int = 0) -> tuple[Path, Path]:
    """Writes cases.jsonl and predictions.jsonl; returns their paths."""
    from dispatchtune.data_prep.sample import ToolCall
    from dispatchtune.eval.records import Case, Turn, exact

    rng = random.Random(seed)
    cases_path, preds_path = work / "cases.jsonl", work / "predictions.jsonl"
    with open(cases_path, "w") as cf, open(preds_path, "w") as pf:
        for i in range(n):
            tools = [_tool(rng, f"tool_{i % 97}_{k}") for k in range(rng.randint(1, 4))]
            chain = i % 12 == 0
            turns, predicted = [], []
            for _ in range(2 if chain else 1):
                calls = []
                for _ in range(0 if rng.random() < 0.1 else rng.choice([1, 1, 1, 2, 3])):
                    fn = rng.choice(tools)["function"]
                    props = fn["parameters"]["properties"]
                    calls.append((fn["name"], {p: _value(rng, s["type"]) for p, s in props.items()}))
                expected = exact([ToolCall(name, args) for name, args in calls], tools)
                turns.append(Turn(expected, [{"role": "tool", "content": '{"result": "ok"}'}] if chain else []))
                if rng.random() < 0.33 and calls:  # a wrong prediction: another value
                    name, args = calls[0]
                    calls[0] = (name, {**args, next(iter(args)): "wrong"} if args else args)
                if text:
                    predicted.append({"text": "".join(f'<tool_call>\n{json.dumps({"name": c, "arguments": a})}\n</tool_call>'
                                                      for c, a in calls) or "No tool needed."})
                else:
                    predicted.append({"calls": [{"name": c, "arguments": a} for c, a in calls]})
            category = "chain" if chain else "simple"
            cf.write(Case(f"case-{i}", category, [{"role": "user", "content": f"Request number {i}: please help."}],
                          tools, turns).to_json() + "\n")
            pf.write(json.dumps({"id": f"case-{i}", **(predicted[0] if not chain else {"turns": predicted})}) + "\n")
    return cases_path, preds_path


def measure(kind: str, cases: Path, preds: Path, out: Path) -> float:
    """CPU seconds of one step, in this process (already pinned to one core by the parent)."""
    start = time.process_time()
    if kind == "baseline":
        for path in (cases, preds):
            with open(path) as f:
                for line in f:
                    json.loads(line)
    elif kind == "score":
        from dispatchtune.eval.score import gc_paused, iter_cases, load_predictions, score

        with gc_paused():
            score(iter_cases(cases), load_predictions(preds)[0])
    else:
        from dispatchtune.cli import main

        if main(["eval", "score", "--cases", str(cases), "--predictions", str(preds), "--out", str(out), "--no-wandb",
                 "--tokenizer", "none"]):
            raise SystemExit("eval score failed")
    return time.process_time() - start


def child(kind: str, cases: Path, preds: Path, out: Path) -> float:
    """Runs one step in a fresh interpreter on core 0; for `cli` the interpreter's start-up counts too."""
    code = ("import os, sys, json, time; os.sched_setaffinity(0, {0});"
            "sys.path.insert(0, sys.argv[5]); from scripts.bench_score import measure;"
            "dt = measure(sys.argv[1], *map(__import__('pathlib').Path, sys.argv[2:5]));"
            "print(json.dumps([dt, time.process_time()]))")
    root = Path(__file__).resolve().parents[1]
    out_ = subprocess.run([sys.executable, "-c", code, kind, str(cases), str(preds), str(out), str(root)],
                          capture_output=True, text=True, check=True, cwd=root).stdout
    step, total = json.loads(out_.strip().splitlines()[-1])
    return total if kind == "cli" else step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000, help="number of cases (default 100000)")
    ap.add_argument("--text", action="store_true", help="text predictions (parsed by eval.parse) instead of calls")
    ap.add_argument("--repeat", type=int, default=3, help="runs per step; the fastest counts (default 3)")
    ap.add_argument("--keep", type=Path, help="work in this directory and keep the files")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_score_"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    cases, preds = make_files(work, args.cases, args.text)
    size = (cases.stat().st_size + preds.stat().st_size) / 1e6
    times = {k: min(child(k, cases, preds, work / "out") for _ in range(args.repeat)) for k in ("baseline", "score", "cli")}
    kind = "text (Hermes)" if args.text else "calls"
    print(f"`python scripts/bench_score.py --cases {args.cases}{' --text' if args.text else ''}`: {args.cases:,} cases "
          f"({kind} predictions, {size:.0f} MB of JSON Lines), one core, best of {args.repeat}; "
          f"Python {platform.python_version()}, {platform.processor() or platform.machine()}\n")
    print("| step | CPU seconds | cases/s | x baseline |")
    print("|---|---:|---:|---:|")
    labels = {"baseline": "baseline: `json.loads` of both files", "score": "load + score (eval.score)",
              "cli": "`dispatchtune eval score` end to end"}
    for k, t in times.items():
        print(f"| {labels[k]} | {t:.2f} | {args.cases / t:,.0f} | {t / times['baseline']:.1f} |")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
