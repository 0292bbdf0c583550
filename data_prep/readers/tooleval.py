"""ToolEval's converted answers (`tooleval_results/<method>/G*_*.json`): one file per test set, a dict of queries.

The file is one JSON object `{query_id: {"query", "available_tools", "answer"}}`; each query is one Item (index =
its position, record_id = its id). `answer.answer_details` is the path as nested `{"role", "message", "next"}`
steps, and in the published files every `message` is cut at 100 characters: a tool step is the Python repr of
`{'name', 'arguments', 'response'}` stopped mid-way (the response always lost), the user step is the query cut short.
So a step is converted only when it is whole: a dict, a repr `ast` parses, or text under the cut; anything else is
`truncated_source`, never filled in. The user turn comes from `query` (whole), and the `Finish` step from
`answer.final_answer` (its arguments, whole), so those two cuts lose nothing.

An empty `final_answer` means the run stopped without calling Finish (out of steps, or an error): ToolEval scores it
unsolved, and it is no demonstration of an answer, so it is rejected as `give_up` rather than `invalid_trace` (the
source marks nothing as invalid). Give-ups are decided before truncation: even whole, such a trace would not be kept.
"""

from __future__ import annotations

from itertools import count
from typing import Iterator

from ..jsonstream import Record
from ..literal import NOT_LITERAL, python_literal
from ..sample import Rejected, Sample, parse_arguments
from ..toolbench_schema import FINISH, finish_answer, function_tools, toolbench_sample, trace_chat
from . import Item, convert_one
from ._chat import need

CUT = 100  # ToolEval keeps this many characters of each step's message
_FINISH_REPR = "{'name': 'Finish', "


def sniff(record) -> bool:
    first = next(iter(record.values()), None) if isinstance(record, dict) else None
    return isinstance(first, dict) and "available_tools" in first and "answer" in first


def read(records: Iterator[Record], source: str) -> Iterator[Item]:
    index = count()
    for at, record in records:
        if not isinstance(record, dict):
            problem = Rejected("bad_shape", f"expected an object of queries, got {type(record).__name__}")
            yield Item(source, at, rejected=record if isinstance(record, Rejected) else problem)
            continue
        for query_id, entry in record.items():
            yield convert_one(lambda e: convert(e, query_id, source), entry, source, next(index), record_id=query_id)


def convert(entry, query_id: str, source: str) -> Sample:
    query = need(entry, "query", str)
    tools = function_tools(entry.get("available_tools"), "available_tools")
    answer = need(entry, "answer", dict)
    final = need(answer, "final_answer", str, "answer")
    if not final.strip():
        raise Rejected("give_up", "no final_answer: the run stopped without calling Finish", "answer.final_answer")
    finish_answer(final, "answer.final_answer")  # a give-up, or arguments that are not JSON, rejects the trace here
    chat = trace_chat(_turns(need(answer, "answer_details", list, "answer"), query, final))
    return toolbench_sample(chat, tools, id=query_id, query=query, source=source, query_id=query_id)


def _turns(steps: list, query: str, final: str) -> Iterator[tuple[str, dict]]:
    """The path's steps as legacy turns, each with the field of the step it came from."""
    field = "answer.answer_details"
    while steps:
        if len(steps) > 1:
            raise Rejected("bad_shape", f"{len(steps)} branches, but a converted answer is one path", field)
        field = f"{field}[0]"
        role = need(steps[0], "role", str, field)
        message, at = steps[0].get("message"), f"{field}.message"
        if role == "user":
            yield "query", {"role": "user", "content": query}
        elif role == "tool":
            yield from _tool_step(message, at, final)
        elif role != "system" or message:  # ToolEval leaves the system step empty
            yield at, {"role": role, "content": _whole_text(message, at)}
        steps, field = need(steps[0], "next", list, field), f"{field}.next"


def _tool_step(message, at: str, final: str) -> Iterator[tuple[str, dict]]:
    """A call and its result; a `Finish` step is the call only, with `final_answer` as its whole arguments."""
    if isinstance(message, str) and message.startswith(_FINISH_REPR):
        step = {"name": FINISH}
    else:
        step = message if isinstance(message, dict) else _whole_repr(message, at)
    name = need(step, "name", str, at)
    if name == FINISH:
        yield at, {"role": "assistant", "content": None, "function_call": {"name": FINISH, "arguments": final}}
        return
    arguments = parse_arguments(step.get("arguments", {}), f"{at}.arguments")
    yield at, {"role": "assistant", "content": None, "function_call": {"name": name, "arguments": arguments}}
    yield f"{at}.response", {"role": "function", "name": name, "content": step.get("response")}


def _whole_repr(message, at: str) -> dict:
    if not isinstance(message, str):
        raise Rejected("bad_shape", f"expected a step object or its repr, got {type(message).__name__}", at)
    step = python_literal(message)
    if step is NOT_LITERAL:
        if len(message) >= CUT:
            raise Rejected("truncated_source", f"cut at {len(message)} characters, so the step's response is lost: "
                                               f"{message[:60]!r}...", at)
        raise Rejected("bad_shape", f"not a Python literal: {message[:60]!r}", at)
    if not isinstance(step, dict):
        raise Rejected("bad_shape", f"expected a step object, got {type(step).__name__}", at)
    return step


def _whole_text(message, at: str) -> str:
    if not isinstance(message, str):
        raise Rejected("bad_shape", f"expected text, got {type(message).__name__}", at)
    if len(message) >= CUT:
        raise Rejected("truncated_source", f"{len(message)} characters, the length ToolEval cuts at: the rest is lost",
                       at)
    return message
