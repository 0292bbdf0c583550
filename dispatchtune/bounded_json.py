"""The one JSON decode for text from outside (dataset records and the JSON strings inside them, model outputs,
prediction and case files): strict JSON within fixed limits, so hostile input becomes a verdict on that one record or
output, never a crash of the run nor a value changed on the way.

Refused: nesting deeper than MAX_DEPTH levels (deeper values would overflow the recursion of the code that walks
them: validation, `json.dumps`, chat templates), integers of more than MAX_INT_DIGITS digits (Python refuses 4,300
with a ValueError, and converting long ones is quadratic), NaN, Infinity and numbers beyond a double (`1e999`), which
are not JSON and would be written back as `Infinity`, and lone surrogate escapes (`"\\ud800"`), which no UTF-8 file
can hold. A refusal is a `JSONLimitError`, a `json.JSONDecodeError` like a syntax error, so every caller that handles
bad JSON handles it too.

`loads` and `raw_decode` keep every value exact (Python's C decoder, whose integers keep their digits); `loads_fast`
(orjson, about three times faster, for eval's case and prediction files) applies the same limits but, as orjson does,
reads integers beyond 64 bits as floats.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
import re
from typing import Any

import orjson

MAX_DEPTH = 100
MAX_INT_DIGITS = 1000

_SURROGATE = re.compile("[\ud800-\udfff]")
_WS = re.compile(r"[ \t\r\n]*")
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_BLOCK = 1 << 16


class JSONLimitError(json.JSONDecodeError):
    """Valid-looking JSON past one of the limits; `msg` says which."""


def loads(text: str | bytes) -> Any:
    """One JSON document, exact, within the limits."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    value, end = _decode(text, _WS.match(text).end())
    end = _WS.match(text, end).end()
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def raw_decode(text: str, pos: int = 0) -> tuple[Any, int]:
    """The JSON value starting at `pos` and the index after it, as `json.JSONDecoder.raw_decode`, within the limits.
    A value refused for a limit raises JSONLimitError with `end` set to where the value ends (None when that cannot
    be found), so a reader of many values can go on after it."""
    try:
        return _decode(text, pos)
    except JSONLimitError as e:
        if e.end is None:
            e.end = _value_end(text, pos)
        raise


def _decode(text: str, pos: int) -> tuple[Any, int]:
    problems: list[str] = []
    decoder = json.JSONDecoder(parse_int=lambda s: _int(s, problems), parse_float=lambda s: _float(s, problems),
                               parse_constant=lambda s: _constant(s, problems))
    try:
        value, end = decoder.raw_decode(text, pos)
    except RecursionError:
        raise _refused(f"nested more than {MAX_DEPTH} levels deep", text, pos, None) from None
    if problems:
        raise _refused(problems[0], text, pos, end)
    _check_depth(value, text, pos, end)
    if text.find("\\ud", pos, end) >= 0 or text.find("\\uD", pos, end) >= 0:
        _check_strings(value, text, pos, end)
    return value, end


def loads_fast(text: str | bytes) -> Any:
    """One JSON document through orjson (NaN, Infinity, `1e999`, lone surrogates refused by orjson itself), with the
    depth limit; integers beyond 64 bits come back as floats."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        if "depth limit" in e.msg:
            raise _refused(f"nested more than {MAX_DEPTH} levels deep", e.doc, e.pos, None) from None
        raise
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8", "replace")
    _check_depth(value, text, 0, len(text))
    return value


def _refused(message: str, text: str, pos: int, end: int | None) -> JSONLimitError:
    error = JSONLimitError(message, text, pos)
    error.end = end
    return error


def _int(digits: str, problems: list[str]) -> int:
    if len(digits) - digits.startswith("-") > MAX_INT_DIGITS:
        problems.append(f"an integer of {len(digits) - digits.startswith('-'):,} digits (the limit is "
                        f"{MAX_INT_DIGITS:,})")
        return 0
    return int(digits)


def _float(text: str, problems: list[str]) -> float:
    if len(text) > MAX_INT_DIGITS + 20:  # float() of a long mantissa is linear, but keep the record's size sane
        problems.append(f"a number of {len(text):,} characters")
        return 0.0
    value = float(text)
    if not math.isfinite(value):
        problems.append(f"the number {text[:40]} is beyond a double's range")
    return value


def _constant(name: str, problems: list[str]) -> float:
    problems.append(f"{name} is not JSON")
    return 0.0


def _check_depth(value: Any, text: str, pos: int, end: int) -> None:
    """Deeper than MAX_DEPTH? Counting the brackets settles most values without walking them."""
    if text.count("[", pos, end) + text.count("{", pos, end) <= MAX_DEPTH:
        return
    level, depth = [value], 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            raise _refused(f"nested more than {MAX_DEPTH} levels deep", text, pos, end)
        level = [x for v in level for x in (v.values() if type(v) is dict else v) if type(x) in (dict, list)]


def _check_strings(value: Any, text: str, pos: int, end: int) -> None:
    """No string (key or value) holds half of a surrogate pair."""
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is dict:
            stack.extend(v.keys())
            stack.extend(v.values())
        elif type(v) is list:
            stack.extend(v)
        elif type(v) is str and _SURROGATE.search(v):
            raise _refused("a lone surrogate escape (half of a UTF-16 pair, not a character)", text, pos, end)


def _value_end(text: str, pos: int) -> int | None:
    """Where the array or object at `pos` ends, or None: brackets matched outside strings, without recursion and at
    C speed (blocks between strings that cannot hold the end are only counted)."""
    depth, i, n = 1, pos + 1, len(text)
    while True:
        quote = text.find('"', i)
        stop = n if quote < 0 else quote
        for block in range(i, stop, _BLOCK):
            end = min(block + _BLOCK, stop)
            closes = text.count("]", block, end) + text.count("}", block, end)
            if closes >= depth:  # the value may end in this block: follow the depth through it
                running = itertools.accumulate(map(_DEPTH_STEP.get, text[block:end], itertools.repeat(0)),
                                               initial=depth)
                try:
                    return block + operator.indexOf(running, 0)
                except ValueError:
                    pass
            depth += text.count("[", block, end) + text.count("{", block, end) - closes
        string = _STRING.match(text, quote) if quote >= 0 else None
        if string is None:
            return None
        i = string.end()
