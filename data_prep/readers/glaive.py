"""Glaive function-calling v2: a `system` text carrying the functions and a `chat` transcript.

The functions are pretty-printed JSON objects concatenated after the system sentence, read one by one with
`raw_decode`. The system sentence itself is Glaive's boilerplate ("You are a helpful assistant with access to the
following functions. Use them if required -", or "..., with no access to external functions."): it is dropped,
because `tools` carries the schemas and the chat template writes its own tool preamble; any other system text is kept.
A call line, `<functioncall> {"name": "f", "arguments": '{"k": "v"}'}`, is not JSON (the arguments are a
single-quoted JSON string), so name and arguments are cut out with a pattern and the arguments parsed as JSON.
"""

from __future__ import annotations

import json
import re

from dispatchtune import bounded_json
from dispatchtune.bounded_json import JSONLimitError

from ..sample import Rejected, Sample, ToolCall, parse_arguments
from . import per_record
from ._chat import Chat, need, tool_list


_BOILERPLATE = re.compile(
    r"^\s*You are a helpful assistant,? with (no )?access to (the following|external) functions\.?"
    r"(\s*Use them if required\s*-?)?"
)
_FUNCTION_START = re.compile(r"^\{", re.MULTILINE)
_TURN = re.compile(r"(?:^|\n)(USER|ASSISTANT|FUNCTION RESPONSE):[ \t]*")
_QUOTED_CALL = re.compile(r'\{\s*"name"\s*:\s*"(?P<name>[^"]+)"\s*,\s*"arguments"\s*:\s*\'(?P<args>.*)\'\s*\}', re.S)
_END = "<|endoftext|>"


def sniff(record) -> bool:
    return isinstance(record, dict) and isinstance(record.get("system"), str) and isinstance(record.get("chat"), str)


def convert(record) -> Sample:
    tools, system = _functions(need(record, "system", str).strip().removeprefix("SYSTEM:"))
    chat = Chat()
    if system:
        chat.system(system, "system")
    parts = _TURN.split(need(record, "chat", str))
    if parts[0].strip():
        raise Rejected("bad_shape", "text before the first USER:/ASSISTANT: marker", "chat")
    for k, (speaker, text) in enumerate(zip(parts[1::2], parts[2::2])):
        field = f"chat.turns[{k}]"
        text = text.replace(_END, "").strip()
        if speaker == "USER":
            chat.user(text, field)
        elif speaker == "FUNCTION RESPONSE":
            chat.result(text, field)
        else:
            content, sep, call = text.partition("<functioncall>")
            chat.assistant(content.strip(), [_call(call.strip(), f"{field}.functioncall")] if sep else [])
    return chat.sample(tools)


def _functions(system: str) -> tuple[list[dict], str]:
    """The tools, and the system text left once the functions and the boilerplate are cut out."""
    start = _FUNCTION_START.search(system)
    if not start:
        return [], _BOILERPLATE.sub("", system).strip()
    pos, functions = start.start(), []
    while system[pos : pos + 1] == "{":
        try:
            function, pos = bounded_json.raw_decode(system, pos)
        except json.JSONDecodeError as e:
            raise Rejected("bad_tools", f"function {len(functions)} is not JSON: {e.msg}", "system") from None
        functions.append(function)
        pos += len(system[pos:]) - len(system[pos:].lstrip())
    rest = _BOILERPLATE.sub("", system[: start.start()]) + system[pos:]
    return tool_list(functions, "system.functions"), rest.strip()


def _call(text: str, field: str) -> ToolCall:
    """A call line: Glaive's quoted-arguments form, or plain JSON where a record happens to use it."""
    try:
        return ToolCall.from_message(bounded_json.loads(text), field)
    except JSONLimitError as e:
        raise Rejected("bad_arguments", e.msg, field) from None
    except json.JSONDecodeError:
        pass
    m = _QUOTED_CALL.fullmatch(text)
    if not m:
        raise Rejected("bad_arguments", f'not a {{"name", "arguments"}} call: {text[:80]!r}', field)
    return ToolCall(m["name"], parse_arguments(m["args"], f"{field}.arguments"))


read = per_record(convert)
