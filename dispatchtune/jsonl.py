"""JSON Lines files that stages hand each other: a file that is missing or not JSON Lines is the user's mistake,
named with its line, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

from .bounded_json import loads as bounded_loads
from .errors import UserError


def json_lines(path: str | Path, loads: Callable[[str], Any] = bounded_loads) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line, decoded by `loads` (the bounded decode, exact or fast, whose
    errors are json.JSONDecodeErrors, or a function that reports a bad line rather than raising)."""
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    with f:
        n = 0
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    value = loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path} line {n}: not JSON Lines ({e.msg} at column {e.colno})") from None
                yield n, value
        except UnicodeDecodeError:
            raise UserError(f"{path} line {n + 1}: not UTF-8 text (JSON Lines expected)") from None
