"""Conversion of an input file's records over several processes, in file order, with the outputs of one process.

Three quarters of `prep`'s time is converting records (the reader's `convert`: API lists, tool schemas, the chat)
and checking and serialising the samples (`validate`, `Sample.encode`). Those run in worker processes over chunks of
records; the main process decodes the file (`jsonstream`), cuts it into chunks where the reader may start afresh
(`readers.boundary`), and keeps everything that depends on the order: duplicates, the token check, the outputs, the
split. Results come back in file order, and a chunk is converted by the same code whichever process runs it, so the
outputs are those of a single-process run, byte for byte. Readers that cannot restart mid-file, and token checks
(a tokenizer per worker), run in the main process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterator

from .readers import Item, boundary, read_records
from .sample import Rejected
from .split import SplitInfo, split_info
from .validate import validate

CHUNK = 256  # records per task: large enough that sending them costs little next to converting them
IN_FLIGHT = 4  # tasks queued per worker: keeps the workers busy and memory bounded


@dataclass
class Converted:
    """One Item, checked and serialised: its output line and duplicate key, or why it is rejected."""

    item: Item  # without its sample (it stays in the worker) unless run in the main process
    line: str | None = None
    key: str | None = None
    info: SplitInfo | None = None
    problem: Rejected | None = None


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def converted(records, path: str, fmt: str, split_by: str, max_chars: int, workers: int) -> Iterator[Converted]:
    """Converted records of one file in file order, over `workers` processes where the reader allows it."""
    at = boundary(fmt)
    if workers <= 1 or at is None:
        yield from _convert(records, path, fmt, split_by, max_chars, keep_sample=True)
        return
    # An executor rather than a Pool: a worker that dies (killed, out of memory) raises BrokenProcessPool here
    # instead of leaving the run waiting forever.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        pending = deque()
        for chunk in _chunks(records, at):
            pending.append(pool.submit(_convert_chunk, chunk, path, fmt, split_by, max_chars))
            if len(pending) >= IN_FLIGHT * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


def _chunks(records, at) -> Iterator[list]:
    """Lists of about CHUNK records, each starting where `at(previous record, record)` allows."""
    chunk = []
    for index, record in records:
        if len(chunk) >= CHUNK and at(chunk[-1][1], record):
            yield chunk
            chunk = []
        chunk.append((index, record))
    if chunk:
        yield chunk


def _convert_chunk(chunk, path, fmt, split_by, max_chars) -> list[Converted]:
    return list(_convert(iter(chunk), path, fmt, split_by, max_chars, keep_sample=False))


def _convert(records, path, fmt, split_by, max_chars, keep_sample: bool) -> Iterator[Converted]:
    for item in read_records(records, path, fmt):
        problem, sample = item.rejected, item.sample
        out = Converted(item if keep_sample else Item(item.source, item.index, record_id=item.record_id))
        try:
            if problem is not None:
                raise problem
            validate(sample)
            out.line, out.key = sample.line_and_key()
            if len(out.line) > max_chars:
                raise Rejected("record_too_large",
                               f"{len(out.line) / (1 << 20):.1f} MB once converted, over --max-record-mb")
            out.info = split_info(sample, split_by)
        except Rejected as r:
            out.line = out.key = None
            out.problem = r
        yield out

