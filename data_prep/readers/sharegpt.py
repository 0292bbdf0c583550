"""ShareGPT with tools, as LLaMA-Factory reads it: `conversations` of human/gpt/function_call/observation turns.

`tools` is a JSON string (empty for records without tools). A `function_call` value is the JSON text of one
`{"name", "arguments"}` call or of a list of them (parallel calls); `arguments` may be an object or a JSON string.
An `observation` answers the calls of the turn before; after parallel calls it may hold a JSON list with one
result per call. The optional `system` is the dataset's own prompt, so it is kept.
"""

from __future__ import annotations

import json

from dispatchtune import bounded_json

from ..sample import Rejected, Sample, ToolCall
from . import per_record
from ._chat import Chat, load_json, need, tool_list


_CALL_SPEAKERS = {"function_call", "observation"}


def sniff(record) -> bool:
    turns = record.get("conversations") if isinstance(record, dict) else None
    return isinstance(turns, list) and (
        "tools" in record or any(isinstance(t, dict) and t.get("from") in _CALL_SPEAKERS for t in turns)
    )


def convert(record) -> Sample:
    chat = Chat()
    turns = need(record, "conversations", list)
    if record.get("system"):
        chat.system(record["system"], "system")
    for k, turn in enumerate(turns):
        at = f"conversations[{k}]"
        speaker, value = need(turn, "from", str, at), need(turn, "value", str, at)
        field = f"{at}.value"
        if speaker == "system":
            chat.system(value, field)
        elif speaker == "human":
            chat.user(value, field)
        elif speaker == "gpt":
            chat.assistant(value)
        elif speaker == "function_call":
            chat.assistant(None, _calls(value, field))
        elif speaker == "observation":
            results = _results(value, len(chat.pending))
            for i, result in enumerate(results):
                chat.result(result, f"{field}[{i}]" if len(results) > 1 else field)
        else:
            raise Rejected("role_order", f"a {speaker!r} turn", f"{at}.from")
    return chat.sample(tool_list(record.get("tools"), "tools"), id=record.get("id"))


def _calls(value: str, field: str) -> list[ToolCall]:
    calls = load_json(value, field, "bad_arguments")
    if isinstance(calls, list):
        return [ToolCall.from_message(c, f"{field}[{i}]") for i, c in enumerate(calls)]
    return [ToolCall.from_message(calls, field)]


def _results(value: str, pending: int) -> list:
    """One result per pending call when a JSON list holds exactly that many; else the whole value is one result."""
    if pending > 1:
        try:
            results = bounded_json.loads(value)
        except json.JSONDecodeError:
            return [value]
        if isinstance(results, list) and len(results) == pending:
            return results
    return [value]


read = per_record(convert)
