"""The one sample type every stage reads and writes: OpenAI-style chat messages plus JSON-schema tools.

In memory a `Sample` holds plain dicts (what `tokenizer.apply_chat_template(messages, tools=tools)` wants, arguments
as dicts). On disk (JSON Lines) `tools` and every call's `arguments` are JSON strings, so that records with
different schemas load with `datasets` without Arrow unifying their fields (see ../shared/FORMATS.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterator

from dispatchtune import bounded_json
from dispatchtune.bounded_json import JSONLimitError

from .literal import NOT_LITERAL, python_literal

# Keys every sample's meta carries (None where unknown), so a `datasets` column keeps one type.
META_KEYS = ("format", "source", "index", "id", "query_id", "tool_names", "category", "split_key", "expected_tools")


class Rejected(Exception):
    """A record that cannot become a valid sample; `reason` is a stable code (see REASONS), `field` where it broke."""

    def __init__(self, reason: str, message: str, field: str | None = None):
        if reason not in REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        super().__init__(message)
        self.reason, self.message, self.field = reason, message, field

    def __reduce__(self):  # pickled whole (prep's worker processes send records and rejections)
        return type(self), (self.reason, self.message, self.field)

    def describe(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


REASONS = {
    "not_json": "the file or record is not valid JSON",
    "truncated_json": "the file ends in the middle of a record",
    "json_limit": "JSON past the reader's limits: nested over 100 levels, an integer over 1,000 digits, NaN, Infinity "
                  "or a number beyond a double, a lone surrogate escape",
    "invalid_utf8": "the record holds bytes that are not valid UTF-8",
    "record_too_large": "the record is larger than --max-record-mb",
    "bad_shape": "a field is missing or of the wrong type for the format",
    "python_repr": "Python repr where JSON is expected",
    "bad_arguments": "tool-call arguments are not a JSON object",
    "unknown_tool": "a tool call names a tool that is not in `tools`",
    "schema_violation": "tool-call arguments do not satisfy the tool's JSON schema",
    "bad_tools": "the tool list is malformed (missing name, non-object parameters, duplicate names)",
    "role_order": "message roles are out of order (or a turn is empty)",
    "unanswered_call": "a tool call has no result before the conversation goes on",
    "orphan_tool_result": "a tool result answers no pending call",
    "give_up": "the trace ends in give-up (not a successful demonstration)",
    "invalid_trace": "the source marks the trace as invalid",
    "truncated_source": "the source text was cut short, so calls or results cannot be recovered",
    "no_assistant": "the record has no assistant turn to learn from and no query to evaluate",
    "step_prefix": "a ToolLLaMA step record folded into the full trajectory of its trace",
    "duplicate": "an exact duplicate of an earlier sample",
    "offers_heldout_tool": "a training sample offering a tool held out by --split-by tool (--heldout-tools-in-train drop)",
    "too_long": "longer than --max-tokens once rendered through the chat template",
    "template_error": "the chat template refuses to render the sample",
}


def parse_arguments(arguments: Any, field: str = "arguments") -> dict:
    """Call arguments as a dict: a dict as is, or a JSON string holding an object; anything else is rejected."""
    if isinstance(arguments, dict):
        return arguments
    if isinstance(arguments, str):
        try:
            value = bounded_json.loads(arguments) if arguments.strip() else {}
        except JSONLimitError as e:
            raise Rejected("bad_arguments", e.msg, field) from None
        except json.JSONDecodeError as e:
            reason = "bad_arguments" if python_literal(arguments) is NOT_LITERAL else "python_repr"
            raise Rejected(reason, f"not JSON ({e.msg} at char {e.pos}): {arguments[:80]!r}", field) from None
        if isinstance(value, dict):
            return value
        raise Rejected("bad_arguments", f"a JSON {type(value).__name__}, not an object: {arguments[:80]!r}", field)
    raise Rejected("bad_arguments", f"a {type(arguments).__name__}, not an object or a JSON string", field)




@dataclass(frozen=True)
class ToolCall:
    """One function call: what the model emits, what eval compares."""

    name: str
    arguments: dict
    id: str | None = None

    def to_message(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    @classmethod
    def from_message(cls, call: dict, field: str = "tool_calls") -> "ToolCall":
        """From the OpenAI form (`{"id", "type", "function": {"name", "arguments"}}`) or a bare `{name, arguments}`."""
        if not isinstance(call, dict):
            raise Rejected("bad_shape", f"a tool call must be an object, got {type(call).__name__}", field)
        fn = call.get("function", call)
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise Rejected("bad_shape", "a tool call has no function name", f"{field}.function.name")
        return cls(name, parse_arguments(fn.get("arguments", {}), f"{field}.function.arguments"), call.get("id"))


def function_tool(name: str, description: str, parameters: dict) -> dict:
    """A tool in the form chat templates and TRL expect."""
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


def tool_name(tool: dict) -> str | None:
    fn = tool.get("function", tool) if isinstance(tool, dict) else None
    return fn.get("name") if isinstance(fn, dict) else None


@dataclass
class Sample:
    messages: list[dict]
    tools: list[dict]
    meta: dict = field(default_factory=dict)

    def where(self) -> str:
        """The sample's origin for messages: source file, record index and original id, as prep recorded them."""
        m = self.meta
        place = f"{m.get('source') or '?'} record {m.get('index')}"
        return f"{place} (id {m['id']})" if m.get("id") is not None else place

    @property
    def has_assistant(self) -> bool:
        """Whether any message is an assistant turn (a sample to learn from, not only a prompt)."""
        return any(m.get("role") == "assistant" for m in self.messages)

    @property
    def tool_names(self) -> list[str]:
        return [tool_name(t) for t in self.tools]

    def calls(self) -> Iterator[tuple[int, ToolCall]]:
        """Every tool call with the index of the assistant message that makes it."""
        for i, m in enumerate(self.messages):
            if m.get("role") == "assistant":
                for k, c in enumerate(m.get("tool_calls") or []):
                    yield i, ToolCall.from_message(c, f"messages[{i}].tool_calls[{k}]")

    def to_record(self) -> dict:
        """The on-disk form: `tools` and call arguments as JSON strings, meta with every key of META_KEYS."""
        messages = []
        for m in self.messages:
            m = dict(m)
            if m.get("tool_calls"):
                m["tool_calls"] = [
                    {**c, "function": {**c["function"], "arguments": _dumps(c["function"]["arguments"])}}
                    for c in m["tool_calls"]
                ]
            messages.append(m)
        meta = {k: self.meta.get(k) for k in META_KEYS} | self.meta
        return {"messages": messages, "tools": _dumps(self.tools), "meta": meta}

    @classmethod
    def from_record(cls, record: dict) -> "Sample":
        """Inverse of `to_record`; also drops the None fields `datasets` adds when it unifies message structs."""
        tools = record.get("tools") or []
        tools = bounded_json.loads(tools) if isinstance(tools, str) else tools
        messages = []
        for m in record["messages"]:
            m = {k: v for k, v in m.items() if v is not None or k == "content"}
            if m.get("tool_calls"):
                m["tool_calls"] = [
                    {**c, "function": {**c["function"], "arguments": parse_arguments(c["function"]["arguments"])}}
                    for c in m["tool_calls"]
                ]
            else:
                m.pop("tool_calls", None)
            messages.append(m)
        return cls(messages, tools, dict(record.get("meta") or {}))

    def line_and_key(self) -> tuple[str, str]:
        """The JSON line of `to_record`, and a hash of its messages and tools (not meta): equal hashes are exact
        duplicates. One serialisation gives both, since prep needs both for every sample."""
        record = self.to_record()
        body = json.dumps({"messages": record["messages"], "tools": record["tools"]}, ensure_ascii=False)
        key = hashlib.blake2b(body.encode(), digest_size=16).hexdigest()
        return f'{body[:-1]}, "meta": {json.dumps(record["meta"], ensure_ascii=False)}}}', key


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def read_jsonl(path) -> Iterator[Sample]:
    """Samples from a JSON Lines file written by `prep`; a line of another shape is the user's mistake, named."""
    from dispatchtune.errors import UserError
    from dispatchtune.jsonl import json_lines

    for n, record in json_lines(path):
        try:
            yield Sample.from_record(record)
        except (KeyError, TypeError, AttributeError, ValueError, Rejected) as e:
            raise UserError(f"{path} line {n}: not a sample written by `dispatchtune prep` "
                            f"({type(e).__name__}: {e})") from None
