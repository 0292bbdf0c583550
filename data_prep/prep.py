"""`dispatchtune prep`: input files -> validated, deduplicated, split canonical samples, with every rejection kept.

Outputs in --out: train.jsonl, heldout.jsonl, rejected.jsonl, stats.json. All are written under temporary names and
renamed into place last, so a killed run leaves no output that looks complete.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dispatchtune.errors import UserError

from .readers import FORMATS, Item, open_records, read_records
from .sample import Rejected, Sample
from .split import SPLIT_BY, SplitInfo, assign
from .validate import validate

OUTPUTS = ("train.jsonl", "heldout.jsonl", "rejected.jsonl", "stats.json")


@dataclass
class PrepConfig:
    inputs: list[Path]
    out: Path
    format: str = "auto"
    heldout_frac: float = 0.1
    split_by: str = "query"
    seed: int = 0
    tokenizer: str | None = None  # render with this tokenizer's own chat template (`prep --tokenizer`)
    max_tokens: int | None = None
    max_record_mb: float = 4.0
    progress: bool = True
    chat_format: Any = None  # or a ready `train.mask.ChatFormat`: the training format (recipe template and kwargs)


@dataclass
class _Source:
    format: str
    reasons: Counter = field(default_factory=Counter)
    read: int = 0
    accepted: int = 0


class _TokenCheck:
    """Renders each sample with its tools through a chat template; rejects those over max_tokens. The template is
    the training format's (`chat_format`: a `train.mask.ChatFormat`, with the recipe's template and kwargs) or, for
    `prep --tokenizer`, the tokenizer's own."""

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
                raise UserError(f"the tokenizer {path!r} has no chat template; give one that has (OPT has none)")
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
    temporaries = [cfg.out / f".{name}.tmp" for name in ("accepted.jsonl",) + OUTPUTS]
    try:
        return _prep(cfg)
    except OSError as e:  # the inputs were checked, so this is writing: a full disk, permissions
        raise UserError(f"cannot write {e.filename or cfg.out}: {e.strerror}") from None
    finally:
        for path in temporaries:
            path.unlink(missing_ok=True)


def _prep(cfg: PrepConfig) -> dict:
    tmp = {name: cfg.out / f".{name}.tmp" for name in OUTPUTS}
    accepted_tmp = cfg.out / ".accepted.jsonl.tmp"
    token_check = _TokenCheck(cfg.tokenizer, cfg.max_tokens, cfg.chat_format) \
        if cfg.tokenizer or cfg.chat_format is not None else None
    max_chars = int(cfg.max_record_mb * (1 << 20))

    sources: dict[str, _Source] = {}
    seen: dict[str, tuple[str, int | None]] = {}
    infos: list[SplitInfo] = []
    with open(accepted_tmp, "w", encoding="utf-8") as acc, open(tmp["rejected.jsonl"], "w", encoding="utf-8") as rej:
        for path in cfg.inputs:
            fmt, records = _open(path, cfg.format)
            src = sources.setdefault(str(path), _Source(fmt))
            bar = tqdm(desc=path.name, unit=" rec", disable=not cfg.progress, leave=False, mininterval=0.5)
            for item in read_records(records, path, fmt):
                bar.update()
                src.read += 1
                problem = item.rejected
                if problem is None:
                    line, problem = _accept(item, seen, token_check, max_chars)
                if problem is not None:
                    src.reasons[problem.reason] += 1
                    rej.write(_rejection_line(item, problem) + "\n")
                    continue
                src.accepted += 1
                acc.write(line + "\n")
                meta = item.sample.meta
                infos.append(SplitInfo(meta.get("split_key"), meta.get("tool_names") or item.sample.tool_names,
                                       meta.get("category"), not item.sample.has_assistant))
            bar.close()

    heldout = assign(infos, cfg.split_by, cfg.heldout_frac, cfg.seed)
    with open(accepted_tmp, encoding="utf-8") as acc, open(tmp["train.jsonl"], "w", encoding="utf-8") as tr, \
            open(tmp["heldout.jsonl"], "w", encoding="utf-8") as ho:
        for line, held in zip(acc, heldout):
            (ho if held else tr).write(line)
    accepted_tmp.unlink()

    stats = _stats(cfg, sources, infos, heldout, token_check)
    tmp["stats.json"].write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    for name in OUTPUTS:  # stats.json last: its presence marks the stage complete
        os.replace(tmp[name], cfg.out / name)
    return stats


def _check_config(cfg: PrepConfig) -> None:
    if not cfg.inputs:
        raise UserError("no input files given")
    for p in cfg.inputs:
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


def _accept(item: Item, seen: dict, token_check, max_chars: int) -> tuple[str | None, Rejected | None]:
    """The sample's output line, or why it is rejected: validation, size, exact duplicates, token length."""
    sample = item.sample
    try:
        validate(sample)
        line, key = sample.line_and_key()
        if len(line) > max_chars:
            raise Rejected("record_too_large", f"{len(line) / (1 << 20):.1f} MB once converted, over --max-record-mb")
        if key in seen:
            src, idx = seen[key]
            raise Rejected("duplicate", f"the same messages and tools as {src} record {idx}")
        if token_check:
            token_check(sample)
    except Rejected as r:
        return None, r
    seen[key] = (item.source, item.index)
    return line, None


def _rejection_line(item: Item, problem: Rejected) -> str:
    return json.dumps(
        {"source": item.source, "index": item.index, "record_id": item.record_id, "reason": problem.reason,
         "field": problem.field, "message": problem.message},
        ensure_ascii=False,
    )


def _stats(cfg: PrepConfig, sources: dict[str, _Source], infos, heldout, token_check) -> dict:
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
            "train": heldout.count(False),
            "heldout": heldout.count(True),
            "prompts": sum(i.prompt for i in infos),
        },
    }
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
                   help="hold out whole queries, whole tools (no held-out tool is seen in training) or categories")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (same seed, same split)")
    p.add_argument("--tokenizer", help="tokenizer dir or Hub id: render samples through its chat template")
    p.add_argument("--max-tokens", type=int, help="with --tokenizer: reject samples longer than this")
    p.add_argument("--max-record-mb", type=float, default=4.0, help="reject converted samples larger than this")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    cfg = PrepConfig(args.inputs, args.out, args.format, args.heldout_frac, args.split_by, args.seed,
                     args.tokenizer, args.max_tokens, args.max_record_mb, progress=not args.no_progress and sys.stderr.isatty())
    stats = prep(cfg)
    print(summary(stats, cfg.out))
    return 0
