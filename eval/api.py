"""eval as functions, for the pipeline and for the CLI (eval/cli.py, which only parses arguments into these calls):
`evaluate` runs a model on a cases file and scores what it predicted; `score_predictions` scores predictions made
anywhere; `score_files` is the scoring of files alone, without the summary on the console or wandb."""

from __future__ import annotations

import json
from pathlib import Path

from dispatchtune.atomic import commit, staging
from dispatchtune.errors import UserError
from dispatchtune.runinfo import is_full_model

from .endpoint import SERVED, Endpoint, endpoint_predictions
from .generate import BATCH_SIZE, GENERATION, MAX_NEW_TOKENS, PREDICTIONS, generate_predictions, load_cases, \
    load_tokenizer
from .leaderboard import summary_lines
from .report import build_report, cell, log_wandb, wandb_target, write_report
from .score import file_hash, score_all


def evaluate(*, cases: Path, out: Path, model: str | None = None, adapter: Path | None = None,
             gguf: Path | None = None, tokenizer: str | None = None, template_kwargs: dict | None = None,
             batch_size: int | None = None, max_new_tokens: int | None = None, limit: int | None = None,
             endpoint: str | Endpoint | None = None) -> dict | None:
    """The model's greedy predictions on `cases` (base `model`, with `adapter`, or the `gguf` file made from it),
    scored into `out` (predictions.jsonl, generation.json, cases.jsonl, report.{json,md,png}) and logged to the
    training run's wandb run when run.json names one; returns the report. `tokenizer` renders the prompts (default:
    the adapter's, else the model's), with `template_kwargs` (default: training's, from run.json). With `limit`, only
    the first cases run, and when that leaves some out nothing is scored (None). None for `batch_size` or
    `max_new_tokens` is the default (BATCH_SIZE, MAX_NEW_TOKENS). A full fine-tune's `adapter` (a model directory,
    `is_full_model`) runs as the model itself, so `model` may be left out.

    With `endpoint` (a URL, or an `Endpoint` with the mode, served model name, API key variable, concurrency), an
    OpenAI-compatible server generates instead (eval/endpoint.py); `model` then names the tokenizer whose template
    renders the prompts in completions mode (and the served model, unless the endpoint names one)."""
    batch_size = BATCH_SIZE if batch_size is None else batch_size
    max_new_tokens = MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
    if batch_size < 1 or max_new_tokens < 1 or (limit is not None and limit < 1):
        raise UserError("--batch-size, --max-new-tokens and --limit must be positive")
    if (out / "cases.jsonl").resolve() == cases.resolve():
        raise UserError(f"--out {out} holds the cases file, which scoring writes over; pick another directory")
    if endpoint is None and model is None and not (adapter is not None and is_full_model(adapter)):
        raise UserError("--model is needed to generate locally (or pass --endpoint URL)")
    if endpoint is not None and gguf is not None:
        raise UserError("--gguf runs the file here; with --endpoint the server runs the model: pass one of them")
    every_case = load_cases(cases)
    chosen = every_case[:limit]
    if endpoint is not None:
        endpoint = Endpoint(endpoint) if isinstance(endpoint, str) else endpoint
        generation, renderer = endpoint_predictions(
            chosen, cases, out, endpoint, model=model, adapter=adapter, tokenizer=tokenizer,
            template_kwargs=template_kwargs, max_new_tokens=max_new_tokens)
    else:
        generation, renderer = generate_predictions(
            chosen, cases, out, model=model, adapter=adapter, gguf=gguf, tokenizer=tokenizer,
            template_kwargs=template_kwargs, batch_size=batch_size, max_new_tokens=max_new_tokens)
    if len(chosen) < len(every_case):  # scoring would fail the cases that did not run
        print(f"eval run: not scored, since --limit ran {len(chosen)} of the {len(every_case)} cases")
        return None
    meta = {"name": out.resolve().name, **{k: generation[k] for k in ("model", "adapter", "gguf", "tokenizer")}}
    meta.update({k: generation[k] for k in SERVED if k in generation})
    return _score_and_log(cases, out / PREDICTIONS, out, meta, renderer, wandb_target(meta["adapter"], None))


def score_predictions(cases: Path, predictions: Path, out: Path, *, fmt: str = "cases", answers: list[Path] = (),
                      name: str | None = None, model: str | None = None, adapter: str | None = None,
                      gguf: str | None = None, tokenizer: str | None = None, wandb_run: str | None = None,
                      log_to_wandb: bool = True) -> dict:
    """`predictions` scored against `cases` (a cases file, or with fmt "bfcl" a BFCL test file and its `answers`)
    into `out`; returns the report. The run's model, adapter, gguf and tokenizer default to generation.json's beside
    the predictions; text predictions are parsed in the tokenizer's call format (`tokenizer="none"`: read off the
    text). The summary goes to `wandb_run` ([ENTITY/PROJECT/]ID), else to the training run's, if `log_to_wandb`."""
    files = [("--cases", cases), ("--predictions", predictions), *(("--answers", a) for a in answers)]
    for flag, path in files:
        if not path.is_file():
            raise UserError(f"{flag} file not found: {path}")
    generation = _generation(predictions)
    given = {"model": model, "adapter": adapter, "gguf": gguf}
    meta = {"name": name or out.resolve().name, **{k: v or generation.get(k) for k, v in given.items()}}
    source = tokenizer or generation.get("tokenizer")
    parser = None if source in (None, "none") else load_tokenizer(
        source, "pass --tokenizer none to read the call format off the text")
    meta["tokenizer"] = None if parser is None else source
    target = wandb_target(meta["adapter"], wandb_run) if log_to_wandb else None
    return _score_and_log(cases, predictions, out, meta, parser, target, fmt, answers)


def score_files(cases_path: Path, predictions_path: Path, out: Path, fmt: str = "cases",
                answers: list[Path] = (), meta: dict | None = None, tokenizer=None) -> dict:
    """Scores a predictions file; writes cases.jsonl and the report files into `out`; returns the report."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot make this directory ({e.strerror})") from None
    if (out / "cases.jsonl").resolve() == Path(cases_path).resolve():
        raise UserError(f"--out {out} would overwrite the cases file {cases_path}; score into another directory")
    with staging(out / "cases.jsonl") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            rows, stats = score_all(cases_path, predictions_path, fmt, answers, tokenizer, rows_to=f)
        commit(tmp, out / "cases.jsonl")
    meta = {**(meta or {}), "cases_file": str(cases_path), "cases_sha256": file_hash(cases_path, *answers),
            "predictions_file": str(predictions_path)}
    report = build_report(rows, meta, stats)
    write_report(out, report)
    return report


def _score_and_log(cases: Path, predictions: Path, out: Path, meta: dict, tokenizer, target: dict | None,
                   fmt: str = "cases", answers: list[Path] = ()) -> dict:
    """Scores `predictions` into `out` (report files), prints the summary and logs it to the wandb run `target`."""
    report = score_files(cases, predictions, out, fmt, answers, meta, tokenizer)
    overall = report["overall"]
    print(f"eval score: {overall['cases']} cases, AST match {cell(overall, 'ast_match')}, tool selection "
          f"{cell(overall, 'tool_selection')}, parsed {cell(overall, 'parsed')} -> {out}/report.{{json,md,png}}")
    if report.get("bfcl"):
        print("\n".join(summary_lines(report["bfcl"])))
    p = report["predictions"]
    for record in p.get("skipped_records", []):
        print(f"  skipped {record}")
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
    return report


def _generation(predictions: Path) -> dict:
    """What `eval run` recorded beside its predictions (model, adapter, gguf, tokenizer), if it did."""
    path = predictions.parent / GENERATION
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError:
        raise UserError(f"{path} is not JSON; remove it or pass --model/--adapter/--gguf/--tokenizer") from None
