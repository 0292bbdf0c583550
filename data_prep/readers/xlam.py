"""Salesforce xLAM / APIGen (`xlam-function-calling-60k`): one query answered by one turn of parallel calls.

`tools` and `answers` are JSON strings; parameters use xLAM's own notation (see `schema_types.xlam_parameters`).
`answers == []` means no tool applies, but xLAM gives no assistant text to learn from. Such a record is kept as a
prompt without an assistant turn (the shape of ToolBench query files and BFCL prompts) with category `irrelevance`,
BFCL's name for "the right answer is no call": training has nothing to take from it, but it is a real eval case, and
rejecting it would silently drop xLAM's no-call examples.
"""

from __future__ import annotations

from ..sample import Sample, ToolCall
from ..schema_types import xlam_parameters
from . import per_record
from ._chat import Chat, json_list, need, tool_list


def sniff(record) -> bool:
    return isinstance(record, dict) and {"query", "tools", "answers"} <= record.keys()


def convert(record) -> Sample:
    chat = Chat()
    chat.user(need(record, "query", str), "query")
    tools = tool_list(record.get("tools"), "tools", xlam_parameters)
    answers = json_list(record.get("answers"), "answers", "bad_arguments")
    calls = [ToolCall.from_message(a, f"answers[{k}]") for k, a in enumerate(answers)]
    if calls:
        chat.assistant(None, calls)
    return chat.sample(tools, id=record.get("id"), category=None if calls else "irrelevance")


read = per_record(convert)
