"""Python literals (repr) in datasets, read as data: parsed, never evaluated.

ToolLLaMA's system prompts and Hermes' calls are `repr()` output. `ast.literal_eval` reads them but builds a full
syntax tree first, which made it the slowest step of `prep` on the ToolLLaMA file (0.4 ms per API list). Most repr
text is JSON but for its quotes and `True`/`False`/`None`, so `python_literal` first rewrites those tokens and lets the
C JSON decoder parse the result; anything the rewrite is not sure about (an escape JSON reads differently, a tuple, a
trailing comma) fails that parse or is refused, and goes to `ast.literal_eval`, so both paths give the same values.
Text without double quotes or backslashes is rewritten at C speed (split at its quotes); other text token by token,
up to MAX_TOKEN_CHARS.

Both paths end in the bounded JSON decode (`dispatchtune.bounded_json`), so a literal past its limits (nesting,
integer digits, `1e999`, a lone surrogate) is no literal here. `ast` builds a node per value, several microseconds
each, so it only reads texts of up to MAX_AST_CHARS; the rewrite is linear (an unclosed quote ends its match at the
end of the line, so no quote is scanned twice).
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from dispatchtune import bounded_json

NOT_LITERAL = object()
MAX_AST_CHARS = 1 << 16
MAX_TOKEN_CHARS = 1 << 18  # repr with escapes or double quotes is rewritten token by token (a Python call each)

_TOKEN = re.compile(  # a single- or double-quoted string, closed or not (loops unrolled: much faster), or a constant
    r"""'([^'\\\n]*(?:\\.[^'\\\n]*)*)'?|"([^"\\\n]*(?:\\.[^"\\\n]*)*)"?|\b(True|False|None|true|false|null)\b""", re.S
)
_CONSTANT = re.compile(r"\b(?:True|False|None|true|false|null)\b")
_CONSTANTS = {"True": "true", "False": "false", "None": "null"}
_ESCAPE = re.compile(r"""\\(x[0-9a-fA-F]{2}|U[0-9a-fA-F]{8}|.)|\"""", re.S)
_SAME_IN_JSON = set('\\"nrtbfu')  # escapes that mean the same in a Python string and a JSON string


class _Unsure(ValueError):
    pass


def python_literal(text: str) -> Any:
    """The literal as JSON values (tuples become lists), or NOT_LITERAL; sets, bytes and complex numbers are not."""
    try:
        if '"' not in text and "\\" not in text:
            return bounded_json.loads(_plain_quotes(text))
        if len(text) <= MAX_TOKEN_CHARS:
            return bounded_json.loads(_TOKEN.sub(_token, text))
    except ValueError:  # JSONDecodeError (a limit too) or _Unsure
        pass
    if len(text) > MAX_AST_CHARS:
        return NOT_LITERAL
    try:
        return bounded_json.loads(json.dumps(ast.literal_eval(text.strip())))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return NOT_LITERAL


def _plain_quotes(text: str) -> str:
    """The rewrite for text without double quotes, backslashes or line breaks (most repr), at C speed: its strings
    are exactly the stretches between single quotes, and a constant is outside them when an even number of quotes
    comes before it."""
    if text.count("'") % 2 or "\n" in text:
        raise _Unsure("a string that is never closed")
    out, last, quotes = [], 0, 0
    for m in _CONSTANT.finditer(text):
        quotes += text.count("'", last, m.start())
        out += [text[last : m.start()], _constant(m) if quotes % 2 == 0 else m.group()]
        last = m.end()
    out.append(text[last:])
    return "".join(out).replace("'", '"')


def _constant(m: re.Match) -> str:
    if m.group() not in _CONSTANTS:  # JSON's own spelling is no Python literal
        raise _Unsure(m.group())
    return _CONSTANTS[m.group()]


def _token(m: re.Match) -> str:
    body, which = m.group(m.lastindex), m.lastindex
    if which != 3 and len(m.group()) != len(body) + 2:
        raise _Unsure("a string that is never closed")
    if which == 3:
        if body not in _CONSTANTS:  # JSON's own spelling is no Python literal
            raise _Unsure(body)
        return _CONSTANTS[body]
    if "\\" not in body and '"' not in body:
        return f'"{body}"'
    return '"' + _ESCAPE.sub(_escape, body) + '"'


def _escape(m: re.Match) -> str:
    escape = m.group(1)
    if escape is None:  # a bare double quote inside a single-quoted string
        return '\\"'
    if escape in _SAME_IN_JSON:
        return m.group(0)
    if escape == "'":
        return "'"
    if escape[0] == "x":
        return "\\u00" + escape[1:]
    if escape[0] == "U" and int(escape[1:], 16) <= 0x10FFFF:
        return json.dumps(chr(int(escape[1:], 16)))[1:-1]
    raise _Unsure(escape)  # octal, \a, \v, \N{...}, a line continuation, \/ ...: leave it to ast
