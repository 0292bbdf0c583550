"""OpenAI chat messages with tools: already the canonical form, normalised where sources cut corners.

Arguments given as JSON strings become dicts (`parse_arguments` rejects repr and broken JSON); a tool message
without `name` takes the name of the call it answers; calls without ids get generated ones; bare function dicts
in `tools` get wrapped; `tools` given as a JSON string is parsed. The legacy shape (assistant `function_call`,
`role: "function"` results, a `functions` list) maps onto the same messages.
"""

from __future__ import annotations

from ..sample import Rejected, Sample, ToolCall
from . import per_record
from ._chat import Chat, need, tool_list


def sniff(record) -> bool:
    return isinstance(record, dict) and isinstance(record.get("messages"), list)


def convert(record) -> Sample:
    chat = Chat()
    for i, m in enumerate(need(record, "messages", list)):
        at = f"messages[{i}]"
        role = need(m, "role", str, at)
        if role == "system":
            chat.system(m.get("content"), f"{at}.content")
        elif role == "user":
            chat.user(m.get("content"), f"{at}.content")
        elif role == "assistant":
            chat.assistant(m.get("content"), _calls(m, at))
        elif role == "tool":
            chat.result(m.get("content"), at, name=m.get("name"), call_id=m.get("tool_call_id"))
        elif role == "function":
            chat.result(m.get("content"), at, name=m.get("name"))
        else:
            raise Rejected("role_order", f"unknown role {role!r}", f"{at}.role")
    key = "tools" if "tools" in record else "functions"
    return chat.sample(tool_list(record.get(key), key), id=record.get("id"))


def _calls(message: dict, at: str) -> list[ToolCall]:
    raw = message.get("tool_calls") or []
    if not isinstance(raw, list):
        raise Rejected("bad_shape", f"expected a list, got {type(raw).__name__}", f"{at}.tool_calls")
    calls = [ToolCall.from_message(c, f"{at}.tool_calls[{k}]") for k, c in enumerate(raw)]
    bad_id = next((k for k, c in enumerate(calls) if not isinstance(c.id, (str, type(None)))), None)
    if bad_id is not None:
        raise Rejected("bad_shape", "a call id must be text", f"{at}.tool_calls[{bad_id}].id")
    if message.get("function_call"):
        calls.append(ToolCall.from_message(message["function_call"], f"{at}.function_call"))
    return calls


read = per_record(convert)
