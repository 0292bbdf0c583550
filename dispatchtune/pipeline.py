"""`dispatchtune run`: every stage from one recipe into one run directory, resuming where an earlier run stopped.

    dispatchtune run --recipe qwen3-0.6b [--out RUN] [section.key=value ...]

prep (data.inputs -> RUN/data) -> train (RUN/adapter, RUN/run.json) -> eval cases (RUN/eval/cases.jsonl: held-out
cases, at most eval.max_cases of them, plus eval.suite) -> eval of the base model and of the adapter -> gate
(eval.min_score, eval.must_beat_base) -> merge (RUN/merged) -> export gguf (RUN/gguf, export.quants) -> eval of the
first GGUF type (RUN/eval/gguf-f16) -> RUN/eval/compare.md, base vs adapter vs GGUF.

With model.finetune=full, RUN/adapter holds the whole trained model rather than a LoRA adapter: the "adapter" eval
runs that model (the base eval is the same), and merge copies it into RUN/merged, verified, for the GGUF export.

Each stage is its module's own function, which renames its outputs into place only once they are complete; so a
stage whose final output exists is done and is skipped ("skip: ..."), and a re-run after a crash, a kill or a failed
gate carries on where it stopped (training from its last checkpoint). To redo a stage, remove its output: an eval
directory, or RUN/eval to evaluate with other eval settings. To train on several GPUs, run that stage with
`accelerate launch -m dispatchtune.train` on the same recipe first; `dispatchtune run` then skips it.

The gate stops the run before merge, with exit code 1: an adapter that fails it is not worth exporting. A model
llama.cpp cannot convert (OPT) ends at the merged model, with the converter's reason.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import sys
from collections import Counter
from pathlib import Path

from dispatchtune.data_prep.prep import PrepConfig, prep, summary
from dispatchtune.data_prep.sample import read_jsonl
from dispatchtune.eval import evaluate
from dispatchtune.eval.compare import compare, load_run
from dispatchtune.eval.heldout import heldout_cases
from dispatchtune.eval.records import write_cases
from dispatchtune.eval.report import rate
from dispatchtune.eval.suite import SUITES
from dispatchtune.export import VERIFY_FILE
from dispatchtune.export import llama_cpp_tools
from dispatchtune.export.gguf import TOLERANCES, check_convertible, export_gguf
from dispatchtune.export.merge import merge
from dispatchtune.train.catalog import add_recipe_argument
from dispatchtune.train.config import Recipe, load_recipe
from dispatchtune.train.sft import data_file, load_format, resolve_model, train

from .atomic import write_text
from .errors import UserError
from .jsonl import json_lines
from .runinfo import RUN_INFO


class Failed(Exception):
    """A stage ran and said no (the gate, a verification): exit code 1, with this one-line reason."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_argument(parser)
    parser.add_argument("--out", type=Path, help="run directory (default: the recipe's run.dir, runs/<recipe name>)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="recipe overrides, e.g. training.max_steps=100 eval.max_cases=200 export.quants=[q4_k_m]")


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, [*args.overrides, *([f"run.dir={args.out}"] if args.out else [])],
                         prep_inputs=True)
    try:
        pipeline(recipe)
    except Failed as e:
        print(f"dispatchtune run: {e}", file=sys.stderr)
        return 1
    return 0


def pipeline(recipe: Recipe) -> None:
    """Every stage not yet complete, in order; raises Failed when the gate or a verification fails."""
    _check(recipe)
    run_dir, evals = recipe.dir, recipe.dir / "eval"
    base = resolve_model(recipe.model.name_or_path)  # once: prep, train and eval load the same path
    prep_stage(recipe, base)
    train_stage(recipe, base)
    cases = cases_stage(recipe, evals / "cases.jsonl")
    adapter = run_dir / "adapter"
    # The base renders with the adapter's tokenizer: the training template, so both answer the same prompts.
    runs = [eval_stage(recipe, evals / "base", cases, model=base, tokenizer=str(adapter)),
            eval_stage(recipe, evals / "adapter", cases, model=base, adapter=adapter)]
    gate(recipe, *runs)
    merged = merge_stage(run_dir)
    gguf = export_stage(recipe, merged)
    if gguf:  # the GGUF runs with its own metadata's template; RUN/merged gives the tokenizer and run.json's kwargs
        runs.append(eval_stage(recipe, evals / f"gguf-{recipe.export.quants[0]}", cases,
                               model=str(merged), gguf=gguf[0]))
    report = compare_stage(runs, evals / "compare.md")
    full = recipe.model.finetune == "full"
    print(f"\ndispatchtune run: done ({run_dir})\n  report:  {report} (each run: {evals}/<name>/report.md)\n"
          f"  {'model:  ' if full else 'adapter:'} {adapter} (recipe, data and metrics: {run_dir / RUN_INFO})\n"
          f"  merged:  {merged} (verified against {'the trained model' if full else 'base+adapter'}: "
          f"{merged / VERIFY_FILE})")
    if gguf:
        print(f"  gguf:    {gguf[0].parent}: {', '.join(f.name for f in gguf)}, a Modelfile beside each "
              f"(verified against the merged model: {gguf[0].parent / VERIFY_FILE})")
    else:
        print("  gguf:    none (see `skip: export gguf` above); the merged model is the deliverable")


def _check(recipe: Recipe) -> None:
    """The eval and export settings, checked before hours of training rather than after."""
    e, quants = recipe.eval, recipe.export.quants
    if e.suite is not None and e.suite not in SUITES:
        raise UserError(f"eval.suite {e.suite!r} is not a built-in suite; choose one of {', '.join(SUITES)} or null")
    if e.min_score is not None and not 0 <= e.min_score <= 1:
        raise UserError(f"eval.min_score is a rate between 0 and 1, got {e.min_score}")
    for key in ("max_new_tokens", "batch_size", "max_cases"):
        if getattr(e, key) is not None and getattr(e, key) < 1:
            raise UserError(f"eval.{key} must be positive (or null for the default)")
    if any(q not in TOLERANCES for q in quants):
        raise UserError(f"export.quants {quants}: choose from {', '.join(TOLERANCES)} ([] for no GGUF)")


def prep_stage(recipe: Recipe, model_path: str) -> None:
    """prep over data.inputs into RUN/data; without inputs, training takes data.train as it is. With
    data.max_tokens, samples are measured in the training format (the recipe's template and kwargs)."""
    out, d = recipe.dir / "data", recipe.data
    if (out / "stats.json").is_file():
        _skip("prep", f"{out / 'stats.json'} exists")
        return
    if not d.inputs:
        if not Path(d.train).is_file():
            raise UserError(f"set data.inputs (the files or globs to prep), or data.train ({d.train} not found)")
        _skip("prep", f"no data.inputs; training on {d.train}")
        return
    _stage("prep")
    settings = {k: v for k in ("split_by", "heldout_frac", "heldout_tools_in_train")
                if (v := getattr(d, k)) is not None}
    chat_format = load_format(recipe, model_path)[2] if d.max_tokens else None
    stats = prep(PrepConfig(_files(d.inputs, "data.inputs"), out, chat_format=chat_format, max_tokens=d.max_tokens,
                            progress=sys.stderr.isatty(), heldout_inputs=_files(d.heldout_inputs, "data.heldout_inputs"),
                            **settings))
    print(summary(stats, out))


def _files(patterns: list[str] | None, key: str) -> list[Path]:
    files = []
    for pattern in patterns or []:
        found = sorted(p for p in map(Path, glob.glob(os.path.expandvars(pattern))) if p.is_file())
        if not found:
            raise UserError(f"{key}: {pattern} matches no file (relative to {Path.cwd()})")
        files += found
    return files


def train_stage(recipe: Recipe, model_path: str) -> None:
    """train, resuming from RUN/checkpoints when a killed run left a checkpoint there."""
    if (recipe.dir / RUN_INFO).is_file():
        _skip("train", f"{recipe.dir / RUN_INFO} exists")
        return
    _stage("train")
    train(recipe, resume="auto", model_path=model_path)


def cases_stage(recipe: Recipe, path: Path) -> Path:
    """The held-out samples' cases (a seeded sample of eval.max_cases, in file order) and eval.suite's, in one file."""
    if path.is_file():
        _skip("eval cases", f"{path} exists")
        return path
    _stage("eval cases")
    skipped: Counter = Counter()
    cases = list(heldout_cases(read_jsonl(data_file(recipe.data.heldout, "data.heldout")), skipped))
    limit = recipe.eval.max_cases
    if limit and len(cases) > limit:
        cases = [cases[i] for i in sorted(random.Random(0).sample(range(len(cases)), limit))]
    if recipe.eval.suite:
        cases += SUITES[recipe.eval.suite]()
    if not write_cases(cases, path, skipped):
        raise UserError(f"{recipe.data.heldout} gives no eval cases; hold out samples with answers "
                        "(data.heldout_frac) or add eval.suite=dispatch")
    return path


def eval_stage(recipe: Recipe, out: Path, cases: Path, **model) -> Path:
    """eval's `evaluate` (generation, then scoring) of `model` (model=, and adapter=, gguf= or tokenizer=) into
    `out`; eval's defaults hold wherever eval.batch_size or eval.max_new_tokens is null."""
    if (out / "report.json").is_file():
        _skip(f"eval {out.name}", f"{out / 'report.json'} exists")
        return out
    _stage(f"eval {out.name}")
    evaluate(**model, cases=cases, out=out, batch_size=recipe.eval.batch_size,
             max_new_tokens=recipe.eval.max_new_tokens)
    return out


def gate(recipe: Recipe, base: Path, adapter: Path) -> None:
    """eval.compare's gate on the adapter: its AST match at least eval.min_score, and above the base's if asked."""
    e = recipe.eval
    table, failure, _ = compare([adapter], None, e.min_score, base if e.must_beat_base else None)
    settings = f"eval.min_score {json.dumps(e.min_score)}, eval.must_beat_base {json.dumps(e.must_beat_base)}"
    if failure:
        print(table, end="")
        raise Failed(f"gate failed: {failure} ({settings}); stopped before merge")
    print(f"gate: passed ({settings})")


def merge_stage(run_dir: Path) -> Path:
    out = run_dir / "merged"
    if (out / VERIFY_FILE).is_file():
        _skip("merge", f"{out / VERIFY_FILE} exists")
        return out
    _stage("merge")
    report = merge(run_dir / "adapter", out, run_dir=run_dir)
    if not report["passed"]:
        reference = "the trained model" if report["finetune"] == "full" else "base+adapter"
        raise Failed(f"merge: the merged model differs from {reference} ({'; '.join(report['failures'])}); "
                     f"nothing written to {out}")
    m = report["metrics"]
    print(f"merge: {out} ({report['dtype']}), verified: max rel err {m['max_rel_err']:.2e}, top-1 {m['top1']:.2f}")
    return out


def export_stage(recipe: Recipe, merged: Path) -> list[Path]:
    """The GGUF files of export.quants in RUN/gguf, in that order; none for an empty list or a model llama.cpp's
    converter has no architecture for (its own check decides, so only that case is a skip rather than an error)."""
    out, quants = recipe.dir / "gguf", recipe.export.quants
    if not quants:
        _skip("export gguf", "export.quants is empty")
        return []
    if (out / VERIFY_FILE).is_file():
        _skip("export gguf", f"{out / VERIFY_FILE} exists")
    else:
        llama_cpp_tools.converter_dir()  # a missing converter is for the user to install, not a reason to skip
        try:
            check_convertible(merged)
        except UserError as e:
            _skip("export gguf", str(e))
            return []
        _stage("export gguf")
    report = export_gguf(merged, out, quants, name=recipe.dir.resolve().name, run_dir=recipe.dir)
    if not report["passed"]:
        failed = [f"{f['file']}: {'; '.join(f['failures'])}" for f in report["files"] if not f["passed"]]
        raise Failed(f"export gguf: verification failed ({' | '.join(failed)}); nothing written to {out}")
    if not report.get("skipped"):
        print(f"export gguf: {out}: {', '.join(f['file'] for f in report['files'])}, verified")
    return [out / f["file"] for f in report["files"]]


def compare_stage(runs: list[Path], out: Path) -> Path:
    """eval.compare's table of the runs, and how far the GGUF's verdicts moved from the adapter's, into `out`."""
    if out.is_file() and all(out.stat().st_mtime >= (r / "report.json").stat().st_mtime for r in runs):
        _skip("compare", f"{out} is newer than its reports")
        print(out.read_text(encoding="utf-8"), end="")
        return out
    _stage("compare")
    table, _, _ = compare(runs)
    if len(runs) > 2:
        table += _gguf_delta(runs[1], runs[2])
    write_text(out, table)
    print(table, end="")
    return out


def _gguf_delta(hf: Path, gguf: Path) -> str:
    """The GGUF's overall AST match against the adapter's, and on how many cases their verdicts agree: a GGUF that
    behaves like the weights it came from agrees on nearly all (greedy decoding can still part at a near-tie)."""
    a, b = (rate(load_run(d)[1]["overall"]) or 0.0 for d in (hf, gguf))
    verdicts = [{row["id"]: row["ast_match"] for _, row in json_lines(d / "cases.jsonl")} for d in (hf, gguf)]
    same = sum(verdicts[1].get(k) == v for k, v in verdicts[0].items())
    return (f"\n## {gguf.name} vs {hf.name} (llama.cpp vs transformers)\n\nAST match {100 * b:.1f}% vs "
            f"{100 * a:.1f}%: {100 * (b - a):+.1f} points; the same verdict on {same} of {len(verdicts[0])} cases.\n")


def _stage(name: str) -> None:
    print(f"\n== {name}", flush=True)


def _skip(stage: str, why: str) -> None:
    print(f"skip: {stage} ({why})", flush=True)
