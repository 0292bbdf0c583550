"""NousResearch hermes-function-calling-v1: ShareGPT turns with tools, calls and results in XML-ish tags.

Tools sit between `<tools>` and `</tools>` in the system turn, calls in `<tool_call>` tags (several in one gpt turn
are parallel calls), results in `<tool_response>` tags (several in one tool turn answer several calls). Their bodies
are Python repr as often as JSON, so they go through `load_literal` (JSON, else `ast.literal_eval`).
Tags are found with `str.find`, each character looked at once: a turn full of unclosed tags costs no more than any
other text of its length (a lazy `<tool_call>(.*?)</tool_call>` pattern rescans the rest of the turn from every
unclosed tag). The system turn is dropped once its tools are taken: apart from the tools it only describes Hermes' own
`<tool_call>` protocol, which the target chat template replaces with its own, so keeping it would teach a format
the model is not trained to emit.
"""

from __future__ import annotations

from ..sample import Rejected, Sample, ToolCall
from . import per_record
from ._chat import Chat, load_literal, need, tool_list

_SPEAKERS = {"system", "human", "gpt", "tool"}


def sniff(record) -> bool:
    turns = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(turns, list) or not turns or "tools" in record:
        return False
    first = turns[0]
    return (
        isinstance(first, dict)
        and first.get("from") == "system"
        and "<tools>" in str(first.get("value"))
        and all(isinstance(t, dict) and t.get("from") in _SPEAKERS for t in turns)
    )


def convert(record) -> Sample:
    chat, tools = Chat(), []
    for k, turn in enumerate(need(record, "conversations", list)):
        at = f"conversations[{k}]"
        speaker, value = need(turn, "from", str, at), need(turn, "value", str, at)
        field = f"{at}.value"
        if speaker == "system" and k == 0:
            tools = _tools(value, field)
        elif speaker == "human":
            chat.user(value, field)
        elif speaker == "gpt":
            chat.assistant(*_calls(value, field))
        elif speaker == "tool":
            for i, body in enumerate(_blocks(value, "tool_response")[0] or [value]):
                content, name = _response(body.strip())
                chat.result(content, f"{field}.tool_response[{i}]", name=name)
        else:
            raise Rejected("role_order", f"a {speaker!r} turn", f"{at}.from")
    return chat.sample(tools, id=record.get("id"), category=record.get("category") or record.get("subcategory"))


def _tools(system: str, field: str) -> list[dict]:
    """The tool list: the last non-empty `<tools>` block (the prompt's prose mentions an empty `<tools> </tools>`)."""
    blocks = [b.strip() for b in _blocks(system, "tools")[0] if b.strip()]
    return tool_list(load_literal(blocks[-1], f"{field}.tools", "bad_tools"), f"{field}.tools") if blocks else []


def _calls(value: str, field: str) -> tuple[str | None, list[ToolCall]]:
    """The turn's text outside the call tags, and its calls."""
    calls = []
    bodies, text = _blocks(value, "tool_call")
    for i, body in enumerate(bodies):
        at = f"{field}.tool_call[{i}]"
        calls.append(ToolCall.from_message(load_literal(body.strip(), at, "bad_arguments"), at))
    if "<tool_call>" in text:
        raise Rejected("truncated_source", "a <tool_call> tag is never closed", field)
    return text.strip() or None, calls


def _blocks(text: str, tag: str) -> tuple[list[str], str]:
    """The bodies of the `<tag>...</tag>` blocks, in order, and the text outside them (an unclosed tag and what follows
    it stay in that text)."""
    start, end = f"<{tag}>", f"</{tag}>"
    bodies, outside, pos = [], [], 0
    while (i := text.find(start, pos)) >= 0 and (j := text.find(end, i + len(start))) >= 0:
        bodies.append(text[i + len(start) : j])
        outside.append(text[pos:i])
        pos = j + len(end)
    outside.append(text[pos:])
    return bodies, "".join(outside)


def _response(body: str) -> tuple[object, str | None]:
    """(content, function name) of a `{"name", "content"}` body; a body of any other shape is the content itself."""
    try:
        value = load_literal(body, "", "bad_shape")
    except Rejected:
        return body, None
    if isinstance(value, dict) and "content" in value:
        return value["content"], value.get("name")
    return body, None


read = per_record(convert)
