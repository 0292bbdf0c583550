"""Records from JSON files of any size: a top-level array is decoded element by element, never loaded whole.

Yields `(index, record)` or `(index, Rejected)`, one per record found, so that every record a file holds is
counted. The array reader hands fixed-size chunks to the C decoder (`json.JSONDecoder.raw_decode`), which keeps
memory bounded by the chunk size plus the largest record, and keeps speed near `json.loads`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from .sample import Rejected

CHUNK = 8 << 20
MAX_RECORD = 256 << 20  # past this, a record that still does not parse ends the file: we cannot find the next one
_WS = re.compile(r"[ \t\r\n]*")
_BAD_BYTE = re.compile("[\udc80-\udcff]")

Record = tuple[int, Any]


def iter_records(path: str | Path) -> Iterator[Record]:
    """A JSON array (streamed), JSON Lines, or a single JSON document (one record, index 0)."""
    with open(path, "rb") as f:
        head = f.read(CHUNK)
        start = head.lstrip()[:1]
        f.seek(0)
        if start == b"[":
            yield from _iter_array(f)
        elif start == b"{" and _is_jsonl(head):
            yield from _iter_lines(f)
        elif not start:
            yield 0, Rejected("not_json", "the file is empty")
        else:
            yield 0, _load_whole(f.read())


def _is_jsonl(head: bytes) -> bool:
    """True when the first line is a complete JSON value and another value follows it."""
    first, _, rest = head.lstrip().partition(b"\n")
    if not rest.strip():
        return False
    try:
        json.loads(first)
        return True
    except ValueError:
        return False


def _decode(data: bytes) -> tuple[str, bool]:
    """Text, and whether some bytes were not UTF-8 (those become lone surrogates, found again per record)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape"), True


def _check_utf8(text: str) -> Rejected | None:
    m = _BAD_BYTE.search(text)
    if m:
        byte = ord(m.group()) - 0xDC00
        return Rejected("invalid_utf8", f"byte 0x{byte:02x} at char {m.start()} of the record is not valid UTF-8")
    return None


def _load_whole(data: bytes) -> Any:
    text, bad = _decode(data)
    if bad:
        return _check_utf8(text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return Rejected("not_json", f"not JSON: {e.msg} at line {e.lineno} column {e.colno}")


def _iter_lines(f) -> Iterator[Record]:
    index = 0
    for raw in f:
        if not raw.strip():
            continue
        text, bad = _decode(raw)
        if bad:
            yield index, _check_utf8(text)
        else:
            try:
                yield index, json.loads(text)
            except json.JSONDecodeError as e:
                yield index, Rejected("not_json", f"line {index + 1} is not JSON: {e.msg} at column {e.colno}")
        index += 1


def _iter_array(f) -> Iterator[Record]:
    decoder = json.JSONDecoder()
    raw_decode = decoder.raw_decode
    pending = b""  # undecoded bytes (a chunk may end inside a multi-byte character)
    buf, bad, eof = "", False, False
    pos, index = 0, 0

    def more() -> bool:
        """Append the next chunk; at least as much as is pending, so a huge record is re-parsed O(log n) times."""
        nonlocal buf, pos, bad, eof, pending
        data = f.read(max(CHUNK, len(buf) - pos))
        if not data:
            eof = True
            if pending:  # the file ends inside a character
                buf, pos, bad, pending = buf[pos:] + pending.decode("utf-8", "surrogateescape"), 0, True, b""
            return False
        data, pending = pending + data, b""
        cut = len(data)
        while cut > 0 and cut > len(data) - 4 and (data[cut - 1] & 0xC0) == 0x80:
            cut -= 1
        if cut > 0 and data[cut - 1] >= 0xC0:  # a lead byte whose continuation is in the next chunk
            cut -= 1
        data, pending = data[:cut], data[cut:]
        text, chunk_bad = _decode(data)
        buf, pos, bad = buf[pos:] + text, 0, bad or chunk_bad
        return True

    more()
    pos = _WS.match(buf, pos).end()
    if buf[pos : pos + 1] != "[":
        yield 0, Rejected("not_json", "not a JSON array")
        return
    pos += 1
    while True:
        pos = _WS.match(buf, pos).end()
        while pos >= len(buf) and more():
            pos = _WS.match(buf, pos).end()
        if pos >= len(buf):
            yield index, Rejected("truncated_json", "the file ends before the array is closed")
            return
        ch = buf[pos]
        if ch == "]":
            return
        if ch == "," and index > 0:
            pos += 1
            continue
        try:
            record, end = raw_decode(buf, pos)
        except json.JSONDecodeError as e:
            if not eof and len(buf) - pos < MAX_RECORD and more():
                continue
            reason = "truncated_json" if eof and _only_open(buf, pos) else "not_json"
            yield index, Rejected(reason, f"{e.msg} at char {e.pos - pos} of the record; the rest of the file is unreadable")
            return
        if bad:
            problem = _check_utf8(buf[pos:end])
            if problem:
                record = problem
        yield index, record
        index += 1
        pos = end
        if pos > CHUNK:  # drop consumed text so memory stays bounded
            buf, pos = buf[pos:], 0


def _only_open(buf: str, pos: int) -> bool:
    """True when the failing record just runs to the end of the file (a truncated file, not a syntax error)."""
    try:
        json.loads(buf[pos:])
    except json.JSONDecodeError as e:
        return e.pos >= len(buf) - pos - 1 or e.msg.startswith("Unterminated")
    return False
