"""What the readers of xLAM, Glaive, Hermes, ShareGPT, OpenAI and BFCL share, so each knows only its own format.

- `need`, `load_json`, `load_literal`, `json_list`: field access and parsing that turn every malformed piece into
  a `Rejected` naming the field (`conversations[2].value`), so a bad record never stops a run.
- `tool_list`: tools given bare (`{name, description, parameters}`) or wrapped (`{"type": "function", ...}`), as a
  list or a JSON string, into `function_tool`s with an object schema.
- `Chat`: canonical messages built turn by turn; it fills in missing call ids and pairs each result with its call.
"""

from __future__ import annotations

import json
from itertools import count
from typing import Any, Callable, Iterable

from dispatchtune import bounded_json
from dispatchtune.bounded_json import JSONLimitError

from ..literal import NOT_LITERAL, python_literal
from ..sample import Rejected, Sample, ToolCall, function_tool, tool_name


def need(obj: Any, key: str, kind: type, at: str | None = None) -> Any:
    """`obj[key]` checked to be a `kind`; `at` is where `obj` sits in the record (None for the record itself)."""
    if not isinstance(obj, dict):
        raise Rejected("bad_shape", f"expected an object, got {type(obj).__name__}", at or "record")
    field = f"{at}.{key}" if at else key
    if key not in obj:
        raise Rejected("bad_shape", f"missing (present: {', '.join(sorted(map(str, obj))[:8]) or 'nothing'})", field)
    if not isinstance(obj[key], kind):
        raise Rejected("bad_shape", f"expected a {kind.__name__}, got {type(obj[key]).__name__}", field)
    return obj[key]


def load_json(text: str, field: str, reason: str) -> Any:
    """JSON text; `python_repr` when it is a Python literal instead, `reason` when it is neither (or past the
    limits of `bounded_json`)."""
    try:
        return bounded_json.loads(text)
    except JSONLimitError as e:
        raise Rejected(reason, e.msg, field) from None
    except json.JSONDecodeError as e:
        if python_literal(text) is not NOT_LITERAL:
            raise Rejected("python_repr", f"Python repr, not JSON: {text[:80]!r}", field) from None
        raise Rejected(reason, f"not JSON ({e.msg} at char {e.pos}): {text[:80]!r}", field) from None


def load_literal(text: str, field: str, reason: str) -> Any:
    """JSON or a Python literal, for formats that write repr (Hermes); parsed by `ast`, never evaluated."""
    try:
        return bounded_json.loads(text)
    except JSONLimitError as e:
        raise Rejected(reason, e.msg, field) from None
    except json.JSONDecodeError:
        value = python_literal(text)
    if value is NOT_LITERAL:
        raise Rejected(reason, f"neither JSON nor a Python literal: {text[:80]!r}", field)
    return value


def tool_list(value: Any, field: str, parameters: Callable[[dict], dict] | None = None) -> list[dict]:
    """Tools as `function_tool`s; `parameters` turns a format's own parameter notation into JSON Schema
    (raising ValueError on what it cannot read). None or an empty string is no tools."""
    if value is None or value == "":
        return []
    return [_tool(t, f"{field}[{i}]", parameters) for i, t in enumerate(json_list(value, field, "bad_tools"))]


def json_list(value: Any, field: str, reason: str) -> list:
    """A list given as is or as JSON text (xLAM and LLaMA-Factory store lists as strings); `reason` if it is not."""
    if isinstance(value, str):
        value = load_json(value, field, reason)
    if not isinstance(value, list):
        raise Rejected(reason, f"expected a list, got {type(value).__name__}", field)
    return value


def _tool(tool: Any, field: str, parameters: Callable[[dict], dict] | None) -> dict:
    fn = tool.get("function", tool) if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise Rejected("bad_tools", "a tool needs a function name", field)
    params = fn.get("parameters") or {}
    if not isinstance(params, dict):
        raise Rejected("bad_tools", f"parameters must be an object, got {type(params).__name__}", f"{field}.parameters")
    if parameters:
        try:
            params = parameters(params)
        except ValueError as e:
            raise Rejected("bad_tools", str(e), f"{field}.parameters") from None
    schema = {"type": "object", "properties": {}, "required": [], **params}
    if not isinstance(schema["properties"], dict):
        raise Rejected("bad_tools", "properties must be an object", f"{field}.parameters.properties")
    if not isinstance(schema["required"], list) or not all(isinstance(r, str) for r in schema["required"]):
        raise Rejected("bad_tools", "required must be a list of parameter names", f"{field}.parameters.required")
    return function_tool(fn["name"], fn.get("description") or "", schema)


class Chat:
    """Canonical messages, built turn by turn.

    Calls without an id get `call_<n>`, n counting the sample's calls: deterministic, so reruns give equal samples.
    A result is paired with the pending call it names by id, else by function name, else with the oldest pending
    call; one that answers nothing is rejected here, where the reader still knows the source field.
    """

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.pending: list[tuple[str, str]] = []  # (id, name) of calls awaiting a result, in call order
        self._ids: set[str] = set()  # every call id so far, so a generated id never repeats a source id

    def system(self, text: Any, field: str) -> None:
        self.messages.append({"role": "system", "content": _text(text, field)})

    def user(self, text: Any, field: str) -> None:
        self.messages.append({"role": "user", "content": _text(text, field)})

    def assistant(self, content: str | None, calls: Iterable[ToolCall] = ()) -> None:
        message: dict = {"role": "assistant", "content": content or None}
        tool_calls = []
        for call in calls:
            call_id = call.id or next(f"call_{n}" for n in count(len(self._ids)) if f"call_{n}" not in self._ids)
            self._ids.add(call_id)
            self.pending.append((call_id, call.name))
            tool_calls.append(ToolCall(call.name, call.arguments, call_id).to_message())
        if tool_calls:
            message["tool_calls"] = tool_calls
        self.messages.append(message)

    def result(self, content: Any, field: str, name: str | None = None, call_id: str | None = None) -> None:
        """A tool result; content that is not text (a JSON object in the source) becomes compact JSON text."""
        if content is None:
            raise Rejected("bad_shape", "a tool result has no content", field)
        if call_id is not None:
            match, wanted = next((p for p in self.pending if p[0] == call_id), None), f"id {call_id!r}"
        elif name is not None:
            match, wanted = next((p for p in self.pending if p[1] == name), None), f"function {name!r}"
        else:
            match, wanted = (self.pending or [None])[0], "a call"
        if match is None:
            pending = [n for _, n in self.pending] or "none"
            raise Rejected("orphan_tool_result", f"a result for {wanted}, but pending calls: {pending}", field)
        self.pending.remove(match)
        if not isinstance(content, str):
            content = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        self.messages.append({"role": "tool", "tool_call_id": match[0], "name": name or match[1], "content": content})

    def sample(self, tools: list[dict], id: Any = None, category: str | None = None) -> Sample:
        """The finished sample. `id` is kept as text so the meta column has one type whatever the source used.

        `split_key` is the text of the first user turn in every reader: the query is what must not leak between
        train and held-out, and the same query recurs under different ids (and with none) across records and formats.
        """
        first_user = next((m["content"] for m in self.messages if m["role"] == "user"), None)
        meta = {
            "id": None if id is None else str(id),
            "tool_names": [tool_name(t) for t in tools],
            "category": category,
            "split_key": first_user,
        }
        return Sample(self.messages, tools, meta)


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise Rejected("bad_shape", f"expected text, got {type(value).__name__}", field)
    return value
