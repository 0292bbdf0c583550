"""ToolBench answer traces (`answer/G*_answer/<query_id>_<method>.json`) and query files (`instruction/G*_query.json`).

Both shapes come out of one ToolBench checkout, so one reader takes both and tells them apart per record. An answer
trace becomes a training sample; a query becomes an eval prompt: the user turn and its tools, no assistant turn,
and the APIs the query was written for in `meta["expected_tools"]`.

A query prompt has no system turn. ToolBench's own prompt (the AutoGPT text kept in answer traces) lists each tool's
description, which query files do not carry, and tells the model to call `Finish`, which is not among the tools;
anything shorter would be text of our own that no training sample has. The chat template's default (with the tool
list) is what the model gets, as it does for every other prompt-only format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..jsonstream import Record
from ..sample import Rejected, Sample
from ..toolbench_schema import api_tool, function_name, function_tools, toolbench_sample, trace_chat
from . import Item, convert_one
from ._chat import Chat, need


def sniff(record) -> bool:
    """An answer trace, or a query (with its `api_list`, or an open-domain one that has only `query_id`)."""
    return isinstance(record, dict) and (
        "answer_generation" in record or "query" in record and ("api_list" in record or "query_id" in record))


def read(records: Iterator[Record], source: str) -> Iterator[Item]:
    for index, record in records:
        yield convert_one(lambda r: convert(r, source), record, source, index)


def convert(record, source: str) -> Sample:
    if isinstance(record, dict) and "answer_generation" in record:
        return answer(record, source)
    return query(record, source)


def answer(record: dict, source: str) -> Sample:
    """The last element of `train_messages` is the whole path; the earlier ones are its prefixes (ToolLLaMA's steps)."""
    at = "answer_generation"
    gen = need(record, at, dict)
    if gen.get("valid_data") is False:
        raise Rejected("invalid_trace", "valid_data is false: the search found no path (no train_messages)",
                       f"{at}.valid_data")
    if gen.get("finish_type") == "give_up":
        raise Rejected("give_up", "finish_type is give_up", f"{at}.finish_type")
    paths = need(gen, "train_messages", list, at)
    if not paths or not isinstance(paths[-1], list):
        raise Rejected("bad_shape", "expected a non-empty list of message lists", f"{at}.train_messages")
    field = f"{at}.train_messages[-1]"
    chat = trace_chat((f"{field}[{i}]", turn) for i, turn in enumerate(paths[-1]))
    tools = function_tools(gen.get("function"), f"{at}.function")
    path = Path(source)
    query_id = path.stem.split("_", 1)[0]  # <query_id>_<method>.json; ids repeat across groups: `id` keeps the folder
    return toolbench_sample(chat, tools, id=f"{path.parent.name}/{path.stem}", query=need(gen, "query", str, at),
                            source=source, query_id=query_id if query_id.isdigit() else None)


def query(record, source: str) -> Sample:
    text = need(record, "query", str)
    if "api_list" not in record:
        raise Rejected("bad_shape", "no api_list: an open-domain query, whose tools a retriever picks", "api_list")
    tools = [api_tool(api, f"api_list[{i}]") for i, api in enumerate(need(record, "api_list", list))]
    chat = Chat()
    chat.user(text, "query")
    return toolbench_sample(chat, tools, id=record.get("query_id"), query=text, source=source,
                            query_id=record.get("query_id"), expected_tools=_expected(record.get("relevant APIs")))


def _expected(relevant) -> list[str] | None:
    """`relevant APIs` (`[[tool_name, api_name], ...]`) as function names; None where the record does not say."""
    if relevant is None:
        return None
    if not isinstance(relevant, list):
        raise Rejected("bad_shape", f"expected a list, got {type(relevant).__name__}", "relevant APIs")
    names = []
    for k, pair in enumerate(relevant):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise Rejected("bad_shape", "expected [tool_name, api_name]", f"relevant APIs[{k}]")
        names.append(function_name(pair[1], pair[0]))
    return names
