"""ToolLLaMA's training file (`toolllama_G123_dfs_train.json`): ReAct step records, several per trace.

Each record `{"id": "Step N: <query>", "conversations": [...]}` is one prefix of a trace (ToolLLaMA trained only its
last assistant turn). With the chat template every assistant turn is trained, so one trace is one sample: its longest
record. A record joins the current trace when its query is the same and it is longer; the shorter ones come out as
`step_prefix` rejections naming the record kept, so read = accepted + rejected. Only ids and lengths are compared: a
full prefix test would cost more and is wrong for DFS traces, whose retry prompts move between steps (see the answer
files G2 119 or G3 3, whose `train_messages` are not prefixes of each other). A second trace of the same query starts
again at a short step, so it starts a group of its own. Only the current group's longest record is held: the file
is streamed.

The system turn is cut like the answer files' (`toolbench_schema.system_prompt`); the API list appended to it is the
sample's `tools` now (rendered by the chat template; kept, it would be every tool twice, in Python repr). So a trace
reads the same from ToolLLaMA and from its answer file.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterator

from ..jsonstream import Record
from ..sample import Rejected, Sample, parse_arguments
from ..toolbench_schema import function_tools, toolbench_sample, trace_chat
from . import Item, convert_one
from ._chat import load_literal, need

API_LIST = "\nSpecifically, you have access to the following APIs: "
_STEP = re.compile(r"Step \d+")


def sniff(record) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("conversations"), list)
            and isinstance(record.get("id"), str) and record["id"].startswith("Step "))


def read(records: Iterator[Record], source: str) -> Iterator[Item]:
    kept, folded = None, []  # (index, record, query) of the current trace's longest record; (index, id) of the rest
    for index, record in records:
        query = _query(record)
        if kept and query == kept[2] and len(record["conversations"]) > len(kept[1]["conversations"]):
            folded.append((kept[0], kept[1]["id"]))
            kept = (index, record, query)
            continue
        if kept:
            yield from _trace(kept, folded, source)
            kept, folded = None, []
        if query is None:  # not a step record: `convert` says what is wrong with it
            yield convert_one(lambda r: convert(r, source), record, source, index)
        else:
            kept = (index, record, query)
    if kept:
        yield from _trace(kept, folded, source)


def boundary(previous, record) -> bool:
    """`read` may start afresh at a record of another query: the trace before it ends there either way."""
    query = _query(record)
    return query is not None and query != _query(previous)


def _trace(kept, folded, source: str) -> Iterator[Item]:
    for index, step in folded:
        problem = Rejected("step_prefix", f"a step of the trace kept whole as record {kept[0]}")
        yield Item(source, index, rejected=problem, record_id=step)
    yield convert_one(lambda r: convert(r, source), kept[1], source, kept[0])


def _query(record) -> str | None:
    """The query of a step record (the id after `Step N: `), None for anything else; cheap, as it runs per record."""
    if not (isinstance(record, dict) and isinstance(record.get("conversations"), list)
            and isinstance(record.get("id"), str)):
        return None
    step, sep, query = record["id"].partition(": ")
    return query if sep and _STEP.fullmatch(step) else None


def convert(record, source: str) -> Sample:
    conversations = need(record, "conversations", list)
    query = _query(record)
    if query is None:
        raise Rejected("bad_shape", "expected 'Step N: <query>'", "id")
    first = conversations[0] if conversations else None
    if not isinstance(first, dict) or first.get("from") != "system":
        raise Rejected("bad_shape", "the first turn must be the system prompt", "conversations[0]")
    prompt, found, apis = need(first, "value", str, "conversations[0]").partition(API_LIST)
    if not found:
        raise Rejected("bad_tools", "the system prompt has no API list", "conversations[0].value")
    tools = function_tools(_api_list(apis), "conversations[0].value")
    turns = [("conversations[0]", {"role": "system", "content": prompt})]
    turns += [(f"conversations[{i}]", _legacy(turn, f"conversations[{i}]"))
              for i, turn in enumerate(conversations[1:], 1)]
    return toolbench_sample(trace_chat(turns), tools, id=record["id"], query=query, source=source)


@lru_cache(maxsize=256)
def _api_list(text: str) -> list:
    """The API list, a Python repr: parsed by `ast`, never evaluated. This is the costliest step of the reader, and
    every trace of a G1 tool lists the same APIs, so recent lists are kept (callers must not modify them)."""
    return load_literal(text, "conversations[0].value", "bad_tools")


def _legacy(turn, field: str) -> dict:
    """A turn in ToolBench's legacy OpenAI shape; an assistant turn is parsed out of its ReAct text."""
    role, value = need(turn, "from", str, field), need(turn, "value", str, field)
    if role != "assistant":
        return {"role": role, "content": value}
    parts = _react(value)
    if not parts:
        raise Rejected("bad_shape", "expected '\\nThought: ...\\nAction: ...\\nAction Input: ...'", f"{field}.value")
    thought, name, arguments = (p.strip() for p in parts)
    return {"role": "assistant", "content": thought or None,
            "function_call": {"name": name, "arguments": parse_arguments(arguments, f"{field}.value[Action Input]")}}


def _react(text: str) -> tuple[str, str, str] | None:
    """Thought, action and action input of `Thought: ...\\nAction: ...\\nAction Input: ...`, each split at the first
    marker after the one before (`str.find`: linear, where a lazy pattern retried every `\\nAction:` line)."""
    body = text.lstrip()
    if not body.startswith("Thought:"):
        return None
    action = body.find("\nAction:", len("Thought:"))
    action_input = body.find("\nAction Input:", action + len("\nAction:")) if action >= 0 else -1
    if action_input < 0:
        return None
    return (body[len("Thought:") : action], body[action + len("\nAction:") : action_input],
            body[action_input + len("\nAction Input:") :])
