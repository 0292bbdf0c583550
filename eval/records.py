"""The eval vocabulary: a `Case` (what the model sees, what it should call) and a `Prediction` (what it called), and
the cases file every source of cases is written to (`write_cases`).

Expected calls use BFCL's possible-answer form, so one scorer serves our held-out cases, the built-in dispatch suite
and BFCL's own files: a list of calls, each `{function_name: {param: [acceptable values, ...]}}`; `""` among a
parameter's values means it may be omitted; a parameter absent from the dict must not be passed. A case cut from a
held-out sample expects exactly the calls the sample made, so each parameter gets one acceptable value.

A chain case has several turns: the model answers turn 0, then gets the case's tool results (not its own guesses) and
answers turn 1, and so on. A call fired a turn too early, or with a value the tools had not yet returned, fails its turn.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from dispatchtune.atomic import commit, staging
from dispatchtune.data_prep.sample import ToolCall, tool_name
from dispatchtune.data_prep.schema_types import json_type


@dataclass
class Turn:
    """One model turn of a case: the calls it should make (`[]`: none; None: any call at all, BFCL's relevance) and,
    for chains, the tool results fed back before the next turn (tool messages, in call order). With `expected=None`,
    `names` lists the tools a right answer calls when only their names are known (a ToolBench query's relevant APIs):
    tool selection then checks them, while BFCL's relevance verdict still asks for any call."""

    expected: list[dict] | None
    results: list[dict] = field(default_factory=list)
    names: list[str] | None = None


@dataclass
class Case:
    """`category` is for reporting (BFCL's names, held-out ones, the dispatch suite's); scoring follows `turns` alone."""

    id: str
    category: str
    messages: list[dict]  # the conversation before the first turn to predict
    tools: list[dict]
    turns: list[Turn]
    meta: dict = field(default_factory=dict)

    @property
    def is_chain(self) -> bool:
        return len(self.turns) > 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict) -> "Case":
        return cls(d["id"], d["category"], d["messages"], d["tools"], [Turn(**t) for t in d["turns"]], d.get("meta") or {})


def write_cases(cases: Iterable[Case], path: Path, skipped: Counter | None = None) -> Counter:
    """Writes `cases` to `path` (JSON Lines, renamed into place once complete) and prints how many of each category,
    and the samples `skipped` by reason; returns the counts. With no cases it writes nothing and returns them empty."""
    categories: Counter = Counter()
    with staging(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for case in cases:
                categories[case.category] += 1
                f.write(case.to_json() + "\n")
        if not categories:
            return categories
        commit(tmp, path)
    print(f"eval cases: {sum(categories.values())} cases ("
          + ", ".join(f"{c} {n}" for c, n in sorted(categories.items())) + f") -> {path}")
    for reason, n in (skipped or {}).items():
        print(f"  skipped {n} {reason}")
    return categories


def exact(calls: list[ToolCall], tools: list[dict] | None = None) -> list[dict]:
    """Calls a held-out sample made, as a possible answer that accepts exactly them.

    Give the sample's tools: BFCL reads the answer of an object parameter (or an array of objects) per key, as
    `{key: [acceptable values]}`, so such a value is written that way; without the schema it stays as it is, and a
    checker that knows the parameter is an object would misread it.
    """
    params = {name: schema.get("properties") or {} for name, schema in tool_index(tools or []).items()}
    return [{c.name: {k: [_answer(v, params.get(c.name, {}).get(k))] for k, v in c.arguments.items()}} for c in calls]


def tool_index(tools: list[dict]) -> dict[str, dict]:
    """Tool name -> its parameter schema; the first of a repeated name wins, as BFCL's lookup does."""
    index: dict[str, dict] = {}
    for tool in tools:
        name = tool_name(tool)
        if isinstance(name, str):
            params = tool.get("function", tool).get("parameters")
            index.setdefault(name, params if isinstance(params, dict) else {})
    return index


def _answer(value, schema) -> object:
    kind = _type(schema)
    if kind == "object" and isinstance(value, dict):
        return {k: [v] for k, v in value.items()}
    if kind == "array" and _type(schema.get("items")) == "object" and isinstance(value, list) \
            and all(isinstance(v, dict) for v in value):
        return [{k: [v] for k, v in item.items()} for item in value]
    return value


def _type(schema) -> str | None:
    kind = schema.get("type") if isinstance(schema, dict) else None
    return json_type(kind) if isinstance(kind, str) else None


@dataclass
class Prediction:
    """What a model did on one case: per turn, its decoded calls or its raw text (parsed before scoring)."""

    id: str
    turns: list[dict]  # each {"calls": [{"name", "arguments"}, ...]} or {"text": "..."}

    @classmethod
    def from_line(cls, d: dict) -> "Prediction":
        """`{"id", "calls"}`, `{"id", "text"}`, or `{"id", "turns": [...]}` for chains."""
        if "turns" in d:
            return cls(str(d["id"]), list(d["turns"]))
        return cls(str(d["id"]), [{k: d[k] for k in ("calls", "text") if k in d}])

    def to_json(self) -> str:
        if len(self.turns) == 1:
            return json.dumps({"id": self.id, **self.turns[0]}, ensure_ascii=False)
        return json.dumps({"id": self.id, "turns": self.turns}, ensure_ascii=False)

