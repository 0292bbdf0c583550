"""`dispatchtune eval`: build cases, run a model on them, score predictions, compare runs and gate on them.

    dispatchtune eval cases --from RUN/data/heldout.jsonl --out RUN/eval/cases.jsonl
    dispatchtune eval cases --suite dispatch --out RUN/eval/dispatch.jsonl
    dispatchtune eval cases --format bfcl --from BFCL_v4_simple_python.json \
        --answers possible_answer/BFCL_v4_simple_python.json --out cases.jsonl
    dispatchtune eval run --model BASE --adapter RUN/adapter --cases RUN/eval/cases.jsonl --out RUN/eval/adapter
    dispatchtune eval score --cases RUN/eval/cases.jsonl --predictions RUN/eval/adapter/predictions.jsonl \
        --out RUN/eval/adapter
    dispatchtune eval compare RUN/eval/adapter RUN/eval/base --must-beat RUN/eval/base --min-score 0.5 \
        --out RUN/eval/compare.md
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from dispatchtune.data_prep.sample import read_jsonl
from dispatchtune.errors import UserError

from . import generate
from .bfcl import read_bfcl
from .cases import heldout_cases, write_cases
from .compare import compare
from .report import cell, log_wandb, wandb_target
from .score import score_files
from .suite import SUITES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="STEP", required=True)

    p = sub.add_parser("cases", help="cases from held-out samples, BFCL files or a built-in suite",
                       description="One case per assistant turn of each held-out sample, chain cases where calls use "
                                   "earlier tool results, and cases from prompts; or BFCL test files with answers; "
                                   "or a built-in suite.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="inputs", nargs="+", type=Path, metavar="FILE",
                        help="prep's heldout.jsonl, or with --format bfcl BFCL test files (JSON Lines)")
    source.add_argument("--suite", choices=sorted(SUITES), help="a built-in suite's cases")
    p.add_argument("--out", type=Path, required=True, help="cases file to write (JSON Lines)")
    p.add_argument("--format", choices=("heldout", "bfcl"), default="heldout", help="what --from holds")
    p.add_argument("--answers", nargs="+", type=Path, default=[], metavar="FILE",
                   help="with --format bfcl: the possible_answer files of the same categories")
    p.set_defaults(_eval=run_cases)

    p = sub.add_parser("run", help="a model's predictions on cases (needs the model)",
                       description=generate.__doc__.strip().splitlines()[0])
    generate.add_arguments(p)
    p.set_defaults(_eval=generate.run)

    p = sub.add_parser("score", help="score predictions against cases (no model needed)",
                       description="Verdicts per case (BFCL's AST check and more) and reports with 95%% intervals.")
    p.add_argument("--cases", type=Path, required=True, help="cases file, or with --format bfcl a BFCL test file")
    p.add_argument("--format", choices=("cases", "bfcl"), default="cases", help="what --cases holds")
    p.add_argument("--answers", nargs="+", type=Path, default=[], metavar="FILE",
                   help="with --format bfcl: the possible_answer file(s)")
    p.add_argument("--predictions", type=Path, required=True,
                   help='JSON Lines: {"id", "calls": [{"name", "arguments"}]}, {"id", "text"} or {"id", "turns": [...]}')
    p.add_argument("--out", type=Path, required=True, help="directory for cases.jsonl and report.{json,md,png}")
    p.add_argument("--name", help="the run's name in reports (default: the --out directory's name)")
    for flag in ("model", "adapter", "gguf"):
        p.add_argument(f"--{flag}", help=f"the run's {flag}, for the report (default: from generation.json beside "
                                         "the predictions)")
    p.add_argument("--tokenizer", help="tokenizer whose chat template's call format text predictions must keep "
                                       "(default: generation.json's; `none`: read the format off the text)")
    p.add_argument("--wandb-run", metavar="[ENTITY/PROJECT/]ID",
                   help="log the summary to this wandb run (default: the run in run.json beside the adapter)")
    p.add_argument("--no-wandb", action="store_true", help="do not log to wandb")
    p.set_defaults(_eval=run_score)

    p = sub.add_parser("compare", help="runs side by side, and the gate",
                       description="Runs side by side; the first DIR is gated by --min-score and --must-beat "
                                   "(exit 1 when it fails).")
    p.add_argument("runs", nargs="+", type=Path, metavar="DIR", help="scored run directories; the first is gated")
    p.add_argument("--out", type=Path, help="markdown file to write (the chart goes beside it, .png)")
    p.add_argument("--min-score", type=float, help="fail unless the first run's overall AST rate is at least this (0-1)")
    p.add_argument("--must-beat", type=Path, metavar="DIR", help="fail unless the first run's rate is above this run's")
    p.set_defaults(_eval=run_compare)


def run(args: argparse.Namespace) -> int:
    return args._eval(args)


def run_cases(args: argparse.Namespace) -> int:
    skipped: Counter = Counter()
    if args.answers and args.format != "bfcl":
        raise UserError("--answers goes with --format bfcl")
    if args.out.is_dir():
        raise UserError(f"--out {args.out} is a directory; give the cases file to write (e.g. {args.out}/cases.jsonl)")
    if args.suite:
        cases = SUITES[args.suite]()
    elif args.format == "bfcl":
        cases = read_bfcl(args.inputs, args.answers)
    else:
        cases = heldout_cases((s for path in args.inputs for s in read_jsonl(path)), skipped)
    if not write_cases(cases, args.out, skipped):
        raise UserError(f"no cases in {', '.join(map(str, args.inputs or [args.suite]))}"
                        + (f" ({', '.join(f'{n} {r}' for r, n in skipped.items())})" if skipped else ""))
    return 0


def run_score(args: argparse.Namespace) -> int:
    if args.answers and args.format != "bfcl":
        raise UserError("--answers goes with --format bfcl")
    files = [("--cases", args.cases), ("--predictions", args.predictions), *(("--answers", a) for a in args.answers)]
    for flag, path in files:
        if not path.is_file():
            raise UserError(f"{flag} file not found: {path}")
    generation = _generation(args.predictions)
    meta = {"name": args.name or args.out.resolve().name,
            **{k: getattr(args, k) or generation.get(k) for k in ("model", "adapter", "gguf")}}
    source = args.tokenizer or generation.get("tokenizer")
    tokenizer = None if source in (None, "none") else generate.load_tokenizer(
        source, "pass --tokenizer none to read the call format off the text")
    meta["tokenizer"] = None if tokenizer is None else source
    target = None if args.no_wandb else wandb_target(meta["adapter"], args.wandb_run)
    return score_run(args.cases, args.predictions, args.out, meta, tokenizer, target, args.format, args.answers)


def score_run(cases: Path, predictions: Path, out: Path, meta: dict, tokenizer, target: dict | None,
              fmt: str = "cases", answers: list[Path] = ()) -> int:
    """Scores `predictions` into `out` (report files), prints the summary and logs it to the wandb run `target`."""
    report = score_files(cases, predictions, out, fmt, answers, meta, tokenizer)
    overall = report["overall"]
    print(f"eval score: {overall['cases']} cases, AST match {cell(overall, 'ast_match')}, tool selection "
          f"{cell(overall, 'tool_selection')}, parsed {cell(overall, 'parsed')} -> {out}/report.{{json,md,png}}")
    p = report["predictions"]
    if p["missing"] or p["unknown_ids"] or p["malformed_lines"] or p["duplicate_ids"]:
        print(f"  predictions: {p['missing']} cases without one, {p['unknown_ids']} unknown ids, "
              f"{p['malformed_lines']} malformed lines, {p['duplicate_ids']} repeated ids")
    if target:
        try:
            log_wandb(report, target)
        except Exception as e:  # wandb's own errors (no login, no network) must not look like a scoring bug
            raise UserError(f"the report is written, but logging it to wandb run {target['id']} failed "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                            "set WANDB_MODE=offline or pass --no-wandb") from None
        print(f"  logged eval/tool_call_score to wandb run {target['id']}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    table, failure, candidate = compare(args.runs, args.out, args.min_score, args.must_beat)
    print(table, end="")
    if args.out:
        print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    if failure:
        print(f"dispatchtune eval compare: gate failed: {failure}", file=sys.stderr)
        return 1
    if args.min_score is not None or args.must_beat:
        print(f"gate passed: {candidate}")
    return 0


def _generation(predictions: Path) -> dict:
    """What `eval run` recorded beside its predictions (model, adapter, gguf, tokenizer), if it did."""
    path = predictions.parent / "generation.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError:
        raise UserError(f"{path} is not JSON; remove it or pass --model/--adapter/--gguf/--tokenizer") from None

