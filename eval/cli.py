"""`dispatchtune eval`: build cases, run a model on them, score predictions, compare runs and gate on them.

    dispatchtune eval cases --from RUN/data/heldout.jsonl --out RUN/eval/cases.jsonl
    dispatchtune eval cases --suite dispatch --out RUN/eval/dispatch.jsonl
    dispatchtune eval cases --format bfcl --from BFCL_v4_simple_python.json \
        --answers possible_answer/BFCL_v4_simple_python.json --out cases.jsonl
    dispatchtune eval run --model BASE --adapter RUN/adapter --cases RUN/eval/cases.jsonl --out RUN/eval/adapter
    dispatchtune eval run --endpoint http://localhost:8000/v1 --served-model NAME --model BASE \
        --cases RUN/eval/cases.jsonl --out RUN/eval/served
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

from . import endpoint, generate
from .api import evaluate, score_predictions
from .bfcl import read_bfcl
from .compare import compare
from .endpoint import Endpoint
from .heldout import heldout_cases
from .records import write_cases
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

    p = sub.add_parser("run", help="a model's predictions on cases, scored (needs the model)",
                       description=generate.__doc__.strip().splitlines()[0])
    _run_arguments(p)
    p.set_defaults(_eval=run_model)

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
        cases = read_bfcl(args.inputs, args.answers, skipped)
    else:
        cases = heldout_cases((s for path in args.inputs for s in read_jsonl(path)), skipped)
    if not write_cases(cases, args.out, skipped):
        raise UserError(f"no cases in {', '.join(map(str, args.inputs or [args.suite]))}"
                        + (f" ({', '.join(f'{n} {r}' for r, n in skipped.items())})" if skipped else ""))
    return 0


def run_model(args: argparse.Namespace) -> int:
    endpoint = None
    if args.endpoint:
        endpoint = Endpoint(args.endpoint, mode=args.mode, served_model=args.served_model, api_key_env=args.api_key_env,
                            concurrency=args.concurrency, timeout=args.timeout, max_retries=args.max_retries)
    elif any(getattr(args, k) != d for k, d in _SERVER_DEFAULTS.items()):
        raise UserError("--mode, --served-model, --api-key-env, --concurrency, --timeout and --max-retries go with "
                        "--endpoint")
    evaluate(model=args.model, adapter=args.adapter, gguf=args.gguf, tokenizer=args.tokenizer,
             template_kwargs=args.template_kwargs, cases=args.cases, out=args.out, batch_size=args.batch_size,
             max_new_tokens=args.max_new_tokens, limit=args.limit, endpoint=endpoint)
    return 0


def run_score(args: argparse.Namespace) -> int:
    if args.answers and args.format != "bfcl":
        raise UserError("--answers goes with --format bfcl")
    score_predictions(args.cases, args.predictions, args.out, fmt=args.format, answers=args.answers, name=args.name,
                      model=args.model, adapter=args.adapter, gguf=args.gguf, tokenizer=args.tokenizer,
                      wandb_run=args.wandb_run, log_to_wandb=not args.no_wandb)
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


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model",
                        help="Hub id or directory of the (base) model; with --gguf, the model the GGUF was made from "
                             "(only its tokenizer is read); with --endpoint, the tokenizer that renders prompts in "
                             "completions mode and the default --served-model; not needed with a fully fine-tuned "
                             "--adapter")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--adapter", type=Path,
                        help="train's RUN/adapter: a PEFT adapter directory to apply to --model, or with "
                             "model.finetune=full the trained model itself, which runs instead of --model")
    source.add_argument("--gguf", type=Path, help="a GGUF file to run through llama-cpp-python instead")
    parser.add_argument("--tokenizer",
                        help="tokenizer whose chat template renders the prompts (default: the adapter's, else the "
                             "model's); give the adapter's to score a base model on the training template")
    parser.add_argument("--template-kwargs", type=_json_object, metavar="JSON",
                        help="chat template variables, e.g. '{\"enable_thinking\": false}' (default: the training "
                             "recipe's, from run.json beside the adapter or --tokenizer directory)")
    parser.add_argument("--cases", required=True, type=Path, help="cases JSON Lines file (`eval cases` writes one)")
    parser.add_argument("--out", required=True, type=Path,
                        help="directory for predictions.jsonl, generation.json and the scores")
    parser.add_argument("--batch-size", type=int, default=generate.BATCH_SIZE,
                        help=f"prompts per generation batch (default: {generate.BATCH_SIZE})")
    parser.add_argument("--max-new-tokens", type=int, default=generate.MAX_NEW_TOKENS,
                        help=f"tokens per turn at most (default: {generate.MAX_NEW_TOKENS})")
    parser.add_argument("--limit", type=int, help="only the first N cases (then not scored)")
    served = parser.add_argument_group("a model behind an OpenAI-compatible server")
    served.add_argument("--endpoint", metavar="URL",
                        help="an OpenAI-compatible server's base URL (http://localhost:8000/v1) to generate with")
    served.add_argument("--mode", choices=endpoint.MODES, default=_SERVER_DEFAULTS["mode"],
                        help="completions: we render the prompt, the server returns text, our parser reads it; "
                             "chat: messages and tools go to the server, its tool_calls are scored "
                             "(default: completions)")
    served.add_argument("--served-model", metavar="NAME",
                        help="the model name the server knows, e.g. a LoRA adapter served by name "
                             "(default: --model, else the only model the server lists)")
    served.add_argument("--api-key-env", metavar="NAME",
                        help="environment variable holding the API key (default: OPENAI_API_KEY, if set)")
    served.add_argument("--concurrency", type=int, default=_SERVER_DEFAULTS["concurrency"],
                        help=f"cases in flight at once (default: {endpoint.CONCURRENCY})")
    served.add_argument("--timeout", type=float, default=_SERVER_DEFAULTS["timeout"], metavar="SECONDS",
                        help=f"per request (default: {endpoint.TIMEOUT_S:g})")
    served.add_argument("--max-retries", type=int, default=_SERVER_DEFAULTS["max_retries"],
                        help="retries of a request that failed transiently (connection, timeout, 429, 5xx), with "
                             f"exponential backoff (default: {endpoint.MAX_RETRIES})")


_SERVER_DEFAULTS = {"mode": "completions", "served_model": None, "api_key_env": None,
                    "concurrency": endpoint.CONCURRENCY, "timeout": endpoint.TIMEOUT_S,
                    "max_retries": endpoint.MAX_RETRIES}


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a JSON object: {text!r}")
    return value
