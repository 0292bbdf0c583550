"""Readers: one module per input format, each turning raw records into `Sample`s or `Rejected`s.

A reader module, named by its `--format` value, has
- `sniff(record) -> bool`: whether a raw record (the first of a file) is of this format;
- `read(records, source) -> Iterator[Item]`: given `jsonstream.iter_records` output, one `Item` per record it holds
  (a container record such as a ToolEval file expands into many), so that read = accepted + rejected.
Most readers convert record by record and only write `convert(record) -> Sample` plus `read = per_record(convert)`.
Optional: `boundary(previous, record) -> bool`: whether `read`, started afresh at `record`, gives the same Items as
reading on (so `prep` may convert chunks of records in parallel); `per_record` readers have it.
"""

from __future__ import annotations

import importlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..jsonstream import Record, iter_records
from ..sample import Rejected, Sample

# Order matters for `auto`: the first reader whose sniff accepts the first record wins.
FORMATS = ("toolbench", "toolllama", "tooleval", "xlam", "glaive", "hermes", "sharegpt", "openai", "bfcl")


@dataclass
class Item:
    """One record of an input file: a sample, or why it was rejected."""

    source: str
    index: int | None
    sample: Sample | None = None
    rejected: Rejected | None = None
    record_id: str | None = None


def reader(name: str):
    if name not in FORMATS:
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}")


def per_record(convert: Callable[[Any], Sample | list[Sample]]):
    """A `read` for formats where each record is one sample; `convert` raises `Rejected` for bad records."""

    def read(records: Iterator[Record], source: str) -> Iterator[Item]:
        for index, record in records:
            record_id = record.get("id") if isinstance(record, dict) else None
            yield convert_one(convert, record, source, index, None if record_id is None else str(record_id))

    read.per_record = True  # no state between records: any record is a `boundary`
    return read


def boundary(name: str) -> Callable[[Any, Any], bool] | None:
    """The reader's `boundary` (see above), None where it must read a file from start to end."""
    module = reader(name)
    if getattr(module.read, "per_record", False):
        return lambda previous, record: True
    return getattr(module, "boundary", None)


def convert_one(convert: Callable[[Any], Sample], record: Any, source: str, index: int | None, record_id=None) -> Item:
    """Run `convert` on one record, turning a `Rejected` (or a record the stream already rejected) into an Item."""
    if isinstance(record, Rejected):
        return Item(source, index, rejected=record, record_id=record_id)
    try:
        sample = convert(record)
    except Rejected as r:
        return Item(source, index, rejected=r, record_id=record_id)
    sample.meta.setdefault("source", source)
    sample.meta.setdefault("index", index)
    return Item(source, index, sample=sample, record_id=record_id or sample.meta.get("id"))


def detect(path: str | Path) -> str:
    """The format of a file, from its first record; raises ValueError when no reader recognises it."""
    return open_records(path)[0]


def open_records(path: str | Path, fmt: str = "auto") -> tuple[str, Iterator[Record]]:
    """The file's format (detected from its first record with `auto`) and its records, read once: the sniffed first
    record is put back in front of the rest. Raises ValueError when no reader recognises the first record."""
    records = iter_records(path)
    if fmt != "auto":
        return fmt, records
    first = next(records, None)
    if first is None:
        raise ValueError(f"{path}: the file holds no records")
    record = first[1]
    if isinstance(record, Rejected):
        raise ValueError(f"{path}: cannot detect the format: {record.message}")
    for name in FORMATS:
        if reader(name).sniff(record):
            return name, itertools.chain([first], records)
    keys = sorted(record)[:8] if isinstance(record, dict) else type(record).__name__
    raise ValueError(f"{path}: no reader recognises a record with keys {keys}; pass --format")


def read_records(records: Iterator[Record], path: str | Path, fmt: str) -> Iterator[Item]:
    """The Items of a file's records (from `open_records`) in the reader of `fmt`, in file order."""
    for item in reader(fmt).read(records, str(path)):
        if item.sample is not None:
            item.sample.meta.setdefault("format", fmt)
        yield item


def read_file(path: str | Path, fmt: str = "auto") -> Iterator[Item]:
    """Every record of one file as Items, in file order."""
    fmt, records = open_records(path, fmt)
    yield from read_records(records, path, fmt)
