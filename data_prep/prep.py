"""`dispatchtune prep`: input files -> validated, deduplicated, split canonical samples, with every rejection kept.

Outputs in --out: train.jsonl, heldout.jsonl, rejected.jsonl, stats.json. All are written under temporary names and
renamed into place last, so a killed run leaves no output that looks complete.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dispatchtune.atomic import commit, staging
from dispatchtune.errors import UserError

from .parallel import converted, default_workers
from .readers import FORMATS, Item, open_records
from .sample import Rejected, Sample, tool_name
from .split import PLURAL, SPLIT_BY, SplitInfo, assign, tool_units

OUTPUTS = ("train.jsonl", "heldout.jsonl", "rejected.jsonl", "stats.json")
HELDOUT_TOOLS_IN_TRAIN = ("strip", "drop", "keep")  # what becomes of training samples offering a held-out tool


@dataclass
class PrepConfig:
    inputs: list[Path]
    out: Path
    format: str = "auto"
    heldout_frac: float = 0.1
    split_by: str = "query"
    seed: int = 0
    heldout_tools_in_train: str = "strip"  # with split_by tool: strip them from tool lists, drop the samples, or keep
    tokenizer: str | None = None  # render with this tokenizer's own chat template (`prep --tokenizer`)
    max_tokens: int | None = None
    max_record_mb: float = 4.0
    progress: bool = True
    workers: int | None = None  # processes converting records; None: one per core (`data_prep.parallel`)
    chat_format: Any = None  # or a ready `train.mask.ChatFormat`: the training format (recipe template and kwargs)
    heldout_inputs: list[Path] = field(default_factory=list)  # held out whole, beside the split of `inputs`


@dataclass
class _Source:
    format: str
    reasons: Counter = field(default_factory=Counter)
    read: int = 0
    accepted: int = 0


class _TokenCheck:
    """Renders each sample with its tools through a chat template; rejects those over max_tokens. The template is
    the training format's (`chat_format`: a `train.mask.ChatFormat`, with the recipe's template and kwargs) or, for
    `prep --tokenizer`, the tokenizer's own. The sample is measured as rendered for inference, which is the length
    of the longest row it trains as (`train.mask.ChatFormat.encode`), or more where messages follow its last turn."""

    def __init__(self, path: str | None, max_tokens: int | None, chat_format=None):
        if chat_format is not None:
            self.tok, self.template, self.kwargs = (chat_format.tokenizer, chat_format.inference_template,
                                                    dict(chat_format.template_kwargs))
        else:
            from transformers import AutoTokenizer

            try:
                self.tok = AutoTokenizer.from_pretrained(path)
            except (OSError, ValueError) as e:
                raise UserError(f"cannot load the tokenizer {path!r}: {str(e).splitlines()[0]}") from None
            if not self.tok.chat_template:
                raise UserError(f"the tokenizer {path!r} has no chat template; give one that has (a base model has none)")
            self.template, self.kwargs = None, {}
        self.max_tokens = max_tokens
        self.lengths: list[int] = []

    def __call__(self, sample: Sample) -> None:
        from jinja2 import TemplateError

        try:
            ids = self.tok.apply_chat_template(sample.messages, tools=sample.tools or None, chat_template=self.template,
                                               tokenize=True, return_dict=False, **self.kwargs)
        except (TemplateError, TypeError, ValueError) as e:  # the template's refusal, or its operations on the data
            raise Rejected("template_error", f"{type(e).__name__}: {e}") from None
        if self.max_tokens and len(ids) > self.max_tokens:
            raise Rejected("too_long", f"{len(ids)} tokens, over --max-tokens {self.max_tokens}")
        self.lengths.append(len(ids))

    def stats(self) -> dict:
        xs = sorted(self.lengths)
        if not xs:
            return {"tokenizer": self.tok.name_or_path, "max_tokens": self.max_tokens, "count": 0}
        pct = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731
        return {
            "tokenizer": self.tok.name_or_path,
            "max_tokens": self.max_tokens,
            "count": len(xs),
            "total": sum(xs),
            "mean": round(statistics.fmean(xs), 1),
            "p50": pct(0.5),
            "p90": pct(0.9),
            "p99": pct(0.99),
            "max": xs[-1],
        }


def prep(cfg: PrepConfig) -> dict:
    """Runs the whole stage; returns the stats it also writes to stats.json. A failure (a full disk included)
    leaves no temporary file behind."""
    _check_config(cfg)
    try:
        cfg.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {cfg.out}: cannot make this directory ({e.strerror})") from None
    try:
        with ExitStack() as stack:  # accepted.jsonl: the accepted samples before the split, never committed
            tmp = {name: stack.enter_context(staging(cfg.out / name)) for name in (*OUTPUTS, "accepted.jsonl")}
            stats = _write(cfg, tmp)
            for name in OUTPUTS:  # stats.json last: its presence marks the stage complete
                commit(tmp[name], cfg.out / name)
    except OSError as e:  # the inputs were checked, so this is writing: a full disk, permissions
        raise UserError(f"cannot write {e.filename or cfg.out}: {e.strerror}") from None
    return stats


def _write(cfg: PrepConfig, tmp: dict[str, Path]) -> dict:
    """The outputs, each into its temporary path `tmp[name]`; returns the stats."""
    accepted_tmp = tmp["accepted.jsonl"]
    token_check = _TokenCheck(cfg.tokenizer, cfg.max_tokens, cfg.chat_format) \
        if cfg.tokenizer or cfg.chat_format is not None else None
    max_chars = int(cfg.max_record_mb * (1 << 20))

    sources: dict[str, _Source] = {}
    seen: dict[str, tuple[str, int | None]] = {}
    infos: list[SplitInfo] = []
    origins: list[Item] = []  # where each accepted sample came from, should the split drop it
    with open(accepted_tmp, "w", encoding="utf-8") as acc, open(tmp["rejected.jsonl"], "w", encoding="utf-8") as rej:
        for path in [*cfg.inputs, *cfg.heldout_inputs]:
            fmt, records = _open(path, cfg.format)
            src = sources.setdefault(str(path), _Source(fmt))
            bar = tqdm(desc=path.name, unit=" rec", disable=not cfg.progress, leave=False, mininterval=0.5)
            workers = 1 if token_check else cfg.workers or default_workers()  # token checks: in this process
            for done in converted(records, str(path), fmt, cfg.split_by, max_chars, workers):
                bar.update()
                src.read += 1
                item, line, problem = done.item, done.line, done.problem
                if problem is None:
                    problem = _accept(item, done.key, seen, token_check)
                if problem is not None:
                    src.reasons[problem.reason] += 1
                    rej.write(_rejection_line(item, problem) + "\n")
                    continue
                src.accepted += 1
                acc.write(line + "\n")
                # a held-out input's samples are held out as the split holds out prompts, with their queries
                infos.append(replace(done.info, prompt=True) if path in cfg.heldout_inputs else done.info)
                origins.append(Item(item.source, item.index, record_id=item.record_id))
            bar.close()

    try:
        split = assign(infos, cfg.split_by, cfg.heldout_frac, cfg.seed)
    except UserError:
        for path in (accepted_tmp, tmp["rejected.jsonl"]):
            path.unlink()
        raise
    offering = Counter()  # training samples that offer a held-out tool, and what was done to them
    with open(accepted_tmp, encoding="utf-8") as acc, open(tmp["train.jsonl"], "w", encoding="utf-8") as tr, \
            open(tmp["heldout.jsonl"], "w", encoding="utf-8") as ho, \
            open(tmp["rejected.jsonl"], "a", encoding="utf-8") as rej:
        for line, held, info, origin in zip(acc, split.heldout, infos, origins):
            if held:
                ho.write(line)
                continue
            if cfg.split_by == "tool" and not split.units.isdisjoint(info.offers):
                offering[cfg.heldout_tools_in_train] += 1
                if cfg.heldout_tools_in_train == "drop":
                    problem = Rejected("offers_heldout_tool", "offers a tool held out by --split-by tool, and "
                                       "--heldout-tools-in-train is drop")
                    src = sources[origin.source]
                    src.accepted -= 1
                    src.reasons[problem.reason] += 1
                    rej.write(_rejection_line(origin, problem) + "\n")
                    continue
                if cfg.heldout_tools_in_train == "strip":
                    line = _strip(line, split.units) + "\n"
            tr.write(line)
    accepted_tmp.unlink()

    stats = _stats(cfg, sources, infos, split, offering, token_check)
    tmp["stats.json"].write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats


def _check_config(cfg: PrepConfig) -> None:
    if not cfg.inputs:
        raise UserError("no input files given")
    for p in [*cfg.inputs, *cfg.heldout_inputs]:
        if not p.is_file():
            raise UserError(f"input file not found: {p}")
        try:
            open(p, "rb").close()
        except OSError as e:
            raise UserError(f"cannot read the input file {p}: {e.strerror}") from None
    if cfg.format != "auto" and cfg.format not in FORMATS:
        raise UserError(f"unknown format {cfg.format!r}; choose one of auto, {', '.join(FORMATS)}")
    if cfg.split_by not in SPLIT_BY:
        raise UserError(f"--split-by must be one of {', '.join(SPLIT_BY)}")
    if cfg.heldout_tools_in_train not in HELDOUT_TOOLS_IN_TRAIN:
        raise UserError(f"--heldout-tools-in-train must be one of {', '.join(HELDOUT_TOOLS_IN_TRAIN)}")
    if cfg.workers is not None and cfg.workers < 1:
        raise UserError("--workers must be 1 or more")
    if not 0 <= cfg.heldout_frac < 1:
        raise UserError("--heldout-frac must be in [0, 1)")
    if cfg.max_tokens and not cfg.tokenizer and cfg.chat_format is None:
        raise UserError("--max-tokens needs --tokenizer (token counts come from the model's chat template)")


def _open(path: Path, fmt: str):
    """The file's format (detected with `auto`) and its records, read once."""
    try:
        return open_records(path, fmt)
    except ValueError as e:
        raise UserError(str(e)) from None


def _accept(item: Item, key: str, seen: dict, token_check) -> Rejected | None:
    """Why a sample that converted, validated and serialised (`parallel.converted`) is rejected: an exact duplicate of
    an earlier one, or its token length; None when accepted."""
    try:
        if key in seen:
            src, idx = seen[key]
            raise Rejected("duplicate", f"the same messages and tools as {src} record {idx}")
        if token_check:
            token_check(item.sample)
    except Rejected as r:
        return r
    seen[key] = (item.source, item.index)
    return None


def _strip(line: str, heldout_units: set[str]) -> str:
    """A training sample's line without the functions of held-out tools in its tool list (it calls none of them)."""
    sample = Sample.from_record(json.loads(line))
    units = tool_units(sample.tools)
    sample.tools = [t for t in sample.tools if units.get(tool_name(t)) not in heldout_units]
    sample.meta["tool_names"] = sample.tool_names
    return sample.line_and_key()[0]


def _rejection_line(item: Item, problem: Rejected) -> str:
    return json.dumps(
        {"source": item.source, "index": item.index, "record_id": item.record_id, "reason": problem.reason,
         "field": problem.field, "message": problem.message},
        ensure_ascii=False,
    )


def _stats(cfg: PrepConfig, sources: dict[str, _Source], infos, split, offering: Counter, token_check) -> dict:
    by_reason = Counter()
    for s in sources.values():
        by_reason.update(s.reasons)
    n_read = sum(s.read for s in sources.values())
    n_acc = sum(s.accepted for s in sources.values())
    stats = {
        "read": n_read,
        "accepted": n_acc,
        "rejected": sum(by_reason.values()),
        "by_reason": dict(by_reason.most_common()),
        "by_source": {
            path: {"format": s.format, "read": s.read, "accepted": s.accepted, "rejected": sum(s.reasons.values()),
                   "by_reason": dict(s.reasons.most_common())}
            for path, s in sources.items()
        },
        "split": {
            "by": cfg.split_by,
            "heldout_frac": cfg.heldout_frac,
            "seed": cfg.seed,
            "train": split.heldout.count(False) - offering["drop"],
            "heldout": split.heldout.count(True),
            "prompts": sum(i.prompt for i in infos),
            **split.stats,
        },
    }
    if cfg.split_by == "tool":
        stats["split"]["heldout_tools"] = sorted(split.units)
        stats["split"]["train_calling_heldout_tools"] = sum(
            not held and not split.units.isdisjoint(i.calls) for i, held in zip(infos, split.heldout))
        stats["split"]["heldout_calling_seen_tools"] = sum(
            held and not i.prompt and not split.units.issuperset(i.calls) for i, held in zip(infos, split.heldout))
        stats["split"]["train_offering_heldout_tools"] = {"policy": cfg.heldout_tools_in_train,
                                                          "samples": sum(offering.values())}
    if token_check:
        stats["tokens"] = token_check.stats()
    assert stats["read"] == stats["accepted"] + stats["rejected"], "prep lost count of a record"
    return stats


def summary(stats: dict, out: Path) -> str:
    s = stats["split"]
    lines = [
        f"prep: read {stats['read']:,} records from {len(stats['by_source'])} file(s): "
        f"{stats['accepted']:,} accepted ({s['train']:,} train, {s['heldout']:,} held out by {s['by']}"
        + (f", {s['prompts']:,} of them prompts without an answer" if s["prompts"] else "")
        + f"), {stats['rejected']:,} rejected"
    ]
    if s.get("heldout_share") is not None:
        lines.append(f"  held out {s['heldout_share']:.1%} of {s['trainable']:,} trainable samples "
                     f"(--heldout-frac {s['heldout_frac']:g}; {s['heldout_units']:,} held-out {PLURAL[s['by']]})")
    if "train_offering_heldout_tools" in s and s["train_offering_heldout_tools"]["samples"]:
        o = s["train_offering_heldout_tools"]
        done = {"strip": "those tools stripped from their tool lists", "drop": "dropped",
                "keep": "kept as they are"}[o["policy"]]
        lines.append(f"  {o['samples']:,} training samples offered a held-out tool without calling it: {done}")
    if stats["by_reason"]:
        lines.append("  rejected: " + ", ".join(f"{r} {n:,}" for r, n in stats["by_reason"].items()))
    if "tokens" in stats and stats["tokens"]["count"]:
        t = stats["tokens"]
        lines.append(f"  tokens per sample: mean {t['mean']}, p50 {t['p50']}, p90 {t['p90']}, max {t['max']}")
    lines.append(f"  wrote {out}/{{train,heldout,rejected}}.jsonl and {out}/stats.json")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="input files (JSON array, JSON Lines or JSON)")
    p.add_argument("--out", type=Path, required=True, help="output directory (e.g. RUN/data)")
    p.add_argument("--format", default="auto", choices=("auto",) + FORMATS,
                   help="input format; auto detects it per file from its first record")
    p.add_argument("--heldout-frac", type=float, default=0.1, help="share of trainable samples held out (default 0.1)")
    p.add_argument("--split-by", default="query", choices=SPLIT_BY,
                   help="hold out whole queries, tools (no training sample calls a held-out tool) or categories; the "
                        "held-out share lands within 20%% of --heldout-frac (or 2 samples), else exit 2 saying why")
    p.add_argument("--heldout-tools-in-train", default="strip", choices=HELDOUT_TOOLS_IN_TRAIN,
                   help="with --split-by tool, training samples that offer a held-out tool without calling it: strip "
                        "it from their tool lists (default), drop the samples (counted as rejected), or keep them")
    p.add_argument("--heldout-inputs", nargs="+", type=Path, default=[], metavar="FILE",
                   help="files held out whole (a test set made apart from the training data), validated like the "
                        "inputs; with --heldout-frac 0 the inputs all train")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (same seed, same split)")
    p.add_argument("--tokenizer", help="tokenizer dir or Hub id: render samples through its chat template")
    p.add_argument("--max-tokens", type=int, help="with --tokenizer: reject samples longer than this")
    p.add_argument("--max-record-mb", type=float, default=4.0, help="reject converted samples larger than this")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=int, help="processes converting records (default: one per core; the outputs "
                   "are the same for any number)")


def run(args: argparse.Namespace) -> int:
    cfg = PrepConfig(args.inputs, args.out, args.format, args.heldout_frac, args.split_by, args.seed,
                     args.heldout_tools_in_train, args.tokenizer, args.max_tokens, args.max_record_mb,
                     progress=not args.no_progress and sys.stderr.isatty(), workers=args.workers,
                     heldout_inputs=args.heldout_inputs)
    stats = prep(cfg)
    print(summary(stats, cfg.out))
    return 0
