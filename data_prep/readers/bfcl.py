"""BFCL (Berkeley Function Calling Leaderboard) test files: eval prompts, one per record, with Gorilla-typed tools.

A test record becomes a prompt sample without an assistant turn (BFCL ships no reference conversation; its expected
calls live in separate possible-answer files). Parameter types are mapped by `schema_types.gorilla_schema`;
function names keep their dots. The category is the id without its number (`simple_python_0` -> `simple_python`,
`live_multiple_12-4-2` -> `live_multiple`).
A possible-answer record (`{"id", "ground_truth"}`) is sniffed too, so that a user who passes an answer file to
prep is told where it belongs instead of being told that no reader knows it; each such record is rejected.
"""

from __future__ import annotations

import re

from ..sample import Rejected, Sample
from ..schema_types import gorilla_schema
from . import per_record
from ._chat import Chat, need, tool_list


_CATEGORY = re.compile(r"(.+)_\d+(-\d+)*")


def sniff(record) -> bool:
    return isinstance(record, dict) and "id" in record and ("question" in record or "ground_truth" in record)


def convert(record) -> Sample:
    if isinstance(record, dict) and "ground_truth" in record:
        raise Rejected(
            "bad_shape",
            "a BFCL possible-answer record, not a prompt: score predictions against this file with "
            "`dispatchtune eval score --format bfcl --answers FILE`, and give prep the test file instead",
            "ground_truth",
        )
    bfcl_id = need(record, "id", str)
    question = need(record, "question", list)
    # Multi-turn records hold one message list per turn, later turns depending on the simulated state after the
    # first; only the first turn is a self-contained prompt.
    if not question or not isinstance(question[0], list):
        raise Rejected("bad_shape", "expected a list of turns, each a list of messages", "question")
    if "function" not in record:
        raise Rejected("bad_tools", "no function list (multi-turn categories keep theirs in BFCL's func_doc "
                       "files, which prep does not read)", "function")
    tools = tool_list(need(record, "function", list), "function", gorilla_schema)
    chat = Chat()
    for k, m in enumerate(question[0]):
        at = f"question[0][{k}]"
        role = need(m, "role", str, at)
        if role == "system":
            chat.system(m.get("content"), f"{at}.content")
        elif role == "user":
            chat.user(m.get("content"), f"{at}.content")
        else:
            raise Rejected("role_order", f"a {role!r} message in a BFCL question", f"{at}.role")
    category = _CATEGORY.fullmatch(bfcl_id)
    return chat.sample(tools, id=bfcl_id, category=category.group(1) if category else None)


read = per_record(convert)
