"""Built-in eval suites: `SUITES` maps a name to a function returning its cases (`dispatchtune eval cases --suite`).

The dispatch suite (dispatch.json) is hand-written: everyday requests over ten tools (weather, currency and unit
conversion, reminders, timers, email, calendar events and their lookup, web search, directions), each case offered
all ten, in seven categories: `tool_selection`, `arguments` (exact dates, numbers, enums, units), `parallel`,
`no_tool` (`[]`: chit-chat, or an action no tool performs), `edge` (missing or ambiguous information, which should
be asked for rather than guessed: `[]`; non-English text; numbers in words; a value from earlier in the
conversation), `format` (nested objects and arrays), `chain` (a call that needs an earlier call's result).

The file writes each tool once, the shared system prompt (which fixes "today" as Friday 14 March 2025, 09:30, so
relative dates have one answer) and per case the user's message, any earlier conversation (`history`), and either
`expected` (one turn) or `turns` (a chain, with each turn's tool results). Acceptable values follow records.py (BFCL's
possible answers: an object argument is itself `{key: [acceptable values]}`, an array of objects a list of those);
the scorer compares strings as BFCL does (case, spaces and `,./-_*^` ignored), so where an argument is free text (a
search query, a reminder's wording) only the usual phrasings are listed; list arguments are expected in the order the
user gave them.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..records import Case, Turn

DISPATCH = Path(__file__).with_name("dispatch.json")


def load_dispatch_suite() -> list[Case]:
    data = json.loads(DISPATCH.read_text(encoding="utf-8"))
    system = {"role": "system", "content": data["system"]}
    meta = {"suite": "dispatch", "date_string": data["date_string"]}  # Llama's template prints date_string
    cases = []
    for c in data["cases"]:
        messages = [system, *c.get("history", []), {"role": "user", "content": c["user"]}]
        turns = [Turn(t["expected"], _results(k, t.get("results", []))) for k, t in enumerate(c.get("turns") or [c])]
        cases.append(Case(c["id"], c["category"], messages, data["tools"], turns, dict(meta)))
    return cases


def _results(turn: int, results: list[dict]) -> list[dict]:
    """Tool messages for the file's `{"name", "content"}` results, with ids unique in the case (`eval run` gives
    the model's call i of a turn the id of result i when it feeds the results back)."""
    return [
        {"role": "tool", "tool_call_id": f"call_{turn}_{i}", "name": r["name"],
         "content": json.dumps(r["content"], ensure_ascii=False)}
        for i, r in enumerate(results)
    ]


SUITES = {"dispatch": load_dispatch_suite}
