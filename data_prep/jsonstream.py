"""Records from JSON files of any size: a top-level array is decoded element by element, never loaded whole.

Yields `(index, record)` or `(index, Rejected)`, one per record found, so that every record a file holds is
counted. The array reader hands fixed-size chunks to the C decoder (`bounded_json.raw_decode`), which keeps memory
bounded by the chunk size plus the largest record, and keeps speed near `json.loads`. Every record goes through the
bounded decode (`dispatchtune.bounded_json`): one past its limits is rejected as `json_limit`, and the file goes on.

The layout is read off the first lines: JSON Lines when the first line is a whole JSON value and another line
follows (or, when the first line is broken, the second one is a whole object or array: one corrupt line must not turn
a file into one rejected document), else a streamed array (`[`) or one document. A UTF-8 byte order mark is skipped.
An array whose closing bracket is followed by more values is JSON Lines whose first line is that array (its first
line was too long to look at): the lines after it are read as records too.
"""

from __future__ import annotations

import codecs
import io
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from dispatchtune import bounded_json
from dispatchtune.bounded_json import JSONLimitError

from .sample import Rejected

CHUNK = 8 << 20
MAX_RECORD = 256 << 20  # past this, a record that still does not parse ends the file: we cannot find the next one
_WS = re.compile(r"[ \t\r\n]*")
_BAD_BYTE = re.compile("[\udc80-\udcff]")

Record = tuple[int, Any]


def iter_records(path: str | Path) -> Iterator[Record]:
    """A JSON array (streamed), JSON Lines, or a single JSON document (one record, index 0)."""
    with open(path, "rb") as f:
        start = len(codecs.BOM_UTF8) if f.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8 else 0
        f.seek(start)
        layout = _layout(f)
        f.seek(start)
        if layout == "array":
            yield from _iter_array(f)
        elif layout == "lines":
            yield from _iter_lines(f.readline)
        elif layout == "empty":
            yield 0, Rejected("not_json", "the file is empty")
        else:
            yield 0, _load_whole(f.read())


def _layout(f) -> str:
    """array, lines, whole or empty, from the first two non-blank lines (f is just past any byte order mark)."""
    head = f.read(CHUNK).lstrip()
    start = head[:1]
    if not start:
        return "empty"
    if start not in b"[{":
        return "whole"
    first, newline, rest = head.partition(b"\n")
    if not newline:
        if start == b"[":
            return "array"  # a one-line array too long to look at: streamed (see _iter_array for JSONL)
        first += f.readline()  # the first record of JSON Lines, or a document that is read whole anyway
        rest = b""
    second = rest.lstrip()
    if not second:
        second = f.readline(CHUNK).lstrip()
        while not second and (line := f.readline(CHUNK)):
            second = line.lstrip()
    second = second.partition(b"\n")[0]
    if second and (_whole_value(first) or second[:1] in b"[{" and _whole_value(second)):
        return "lines"
    return "array" if start == b"[" else "whole"


def _whole_value(line: bytes) -> bool:
    """Whether the line is one complete JSON value (one past the decoder's limits counts: it is still one)."""
    try:
        bounded_json.loads(line.decode("utf-8", "surrogateescape"))
    except JSONLimitError:
        return True
    except (ValueError, UnicodeEncodeError):
        return False
    return True


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
        return bounded_json.loads(text)
    except JSONLimitError as e:
        return Rejected("json_limit", e.msg)
    except json.JSONDecodeError as e:
        return Rejected("not_json", f"not JSON: {e.msg} at line {e.lineno} column {e.colno}")


def _iter_lines(readline: Callable[[int], bytes], index: int = 0) -> Iterator[Record]:
    while raw := readline(MAX_RECORD):
        if len(raw) == MAX_RECORD and not raw.endswith(b"\n"):  # never held whole: skipped to its end
            while (rest := readline(CHUNK)) and not rest.endswith(b"\n"):
                pass
            yield index, Rejected("record_too_large", f"line {index + 1} is longer than {MAX_RECORD >> 20} MiB")
            index += 1
            continue
        if not raw.strip():
            continue
        text, bad = _decode(raw)
        if bad:
            yield index, _check_utf8(text)
        else:
            try:
                yield index, bounded_json.loads(text)
            except JSONLimitError as e:
                yield index, Rejected("json_limit", f"line {index + 1}: {e.msg}")
            except json.JSONDecodeError as e:
                yield index, Rejected("not_json", f"line {index + 1} is not JSON: {e.msg} at column {e.colno}")
        index += 1


def _iter_array(f) -> Iterator[Record]:
    raw_decode = bounded_json.raw_decode
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
            if _more_values(buf[pos + 1 :], pending, f):
                # JSON Lines whose first line is an array: the rest are lines, each a record
                tail = io.BytesIO(buf[pos + 1 :].encode("utf-8", "surrogateescape") + pending)
                yield from _iter_lines(_joined(tail.readline, f.readline), index)
            return
        if ch == "," and index > 0:
            pos += 1
            continue
        try:
            record, end = raw_decode(buf, pos)
        except JSONLimitError as e:
            if e.end is None and not eof and len(buf) - pos < MAX_RECORD and more():
                continue
            yield index, Rejected("json_limit", e.msg + ("" if e.end else "; the rest of the file is unreadable"))
            if e.end is None:
                return
            index += 1
            pos = e.end
            continue
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


def _more_values(text: str, pending: bytes, f) -> bool:
    """Whether anything but whitespace follows the array's closing bracket (f is left where it was)."""
    if text.strip() or pending.strip():
        return True
    at = f.tell()
    while chunk := f.read(1 << 16):
        if chunk.strip():
            f.seek(at)
            return True
    f.seek(at)
    return False


def _joined(first: Callable[[int], bytes], then: Callable[[int], bytes]) -> Callable[[int], bytes]:
    """readline over two streams, a line split between them read as one."""

    def readline(limit: int = -1) -> bytes:
        line = first(limit)
        if line.endswith(b"\n") or 0 < limit <= len(line):
            return line
        return line + then(limit - len(line) if limit > 0 else -1)

    return readline


def _only_open(buf: str, pos: int) -> bool:
    """True when the failing record just runs to the end of the file (a truncated file, not a syntax error)."""
    try:
        bounded_json.loads(buf[pos:])
    except JSONLimitError:
        return False
    except json.JSONDecodeError as e:
        return e.pos >= len(buf) - pos - 1 or e.msg.startswith("Unterminated")
    return False
