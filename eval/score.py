"""Scoring: cases x predictions -> one row of verdicts per case. No model needed, and fast (scripts/bench_score.py).

Per case, booleans (None where a metric does not apply):
- `parsed`: every turn's output decoded into calls (format compliance).
- `tool_selection`: the right multiset of function names; no call where none is expected; for a relevance turn, any
  call, and only tools among its `names` when they are known.
- `arguments`: every expected call was made with acceptable arguments (BFCL's per-call check), extra calls aside;
  applies to turns that expect calls.
- `exact_match`: the calls equal the expected calls with each parameter at its first acceptable value (a first value
  `""` means left out, or passed as `""`), compared as JSON (so `1` is not `1.0`), in any order.
- `ast_match`: BFCL's verdict (see bfcl.py); no call where none is expected; any call for relevance. As in BFCL,
  output that does not decode counts as no call: it passes an irrelevance turn, though `parsed` is False.
- chains only: `order` (no call made in a turn before the one that expects it) and `gating` (every value passed for a
  parameter that the chain fills from a tool result is text the model had already seen: no made-up value).
`reason` says what went wrong first (for a chain: its first failing turn, then what broke order and gating), None
when nothing did. A case without a prediction, with a malformed one, or without expected calls fails every metric
that applies, with its reason; predictions that match no case, and lines that are no prediction at all, are counted
in the report rather than dropped silently.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

from dispatchtune.bounded_json import loads_fast  # orjson, 2-3x faster on these lines (decoding was 15% of scoring)
from dispatchtune.data_prep.sample import Rejected, ToolCall
from dispatchtune.errors import UserError
from dispatchtune.jsonl import json_lines

from . import bfcl_languages
from .bfcl import bfcl_normalized, check_call, check_turn, literal, read_bfcl
from .heldout import chain_links, leaves, message_text
from .records import Case, Prediction, Turn, tool_index

METRICS = ("parsed", "tool_selection", "arguments", "exact_match", "ast_match", "order", "gating")
_EXAMPLES = 5


class Malformed(Exception):
    """A prediction that is not one (wrong shape): the harness's fault, not the model's."""


def score(cases: Iterable[Case], predictions: dict[str, Prediction | str], tokenizer=None) -> list[dict]:
    """One row per case: id, category, every metric, reason. `predictions` maps an id to its prediction, or to why
    its line was malformed. `tokenizer` (the one generation used) parses text in its chat template's call format."""
    return [score_case(case, predictions.get(case.id), tokenizer) for case in cases]


def score_case(case: Case, prediction: Prediction | str | None, tokenizer=None) -> dict:
    if not case.turns:
        return _failed(case, "no expected calls: the case has no turns (a BFCL record without its possible answer?)")
    if prediction is None:
        return _failed(case, "no prediction")
    if isinstance(prediction, str):
        return _failed(case, f"malformed prediction: {prediction}")
    try:
        decoded = [decode_turn(t, tokenizer, case.tools) for t in prediction.turns[: len(case.turns)]]
    except Malformed as e:
        return _failed(case, f"malformed prediction: {e}")
    if len(decoded) < len(case.turns):
        return _failed(case, f"no prediction for turn {len(decoded)} of this {len(case.turns)}-turn chain")
    tools = tool_index(case.tools)
    if lang := case.meta.get("language"):  # BFCL's Java/JavaScript: values are source text, read as BFCL reads them
        tools = bfcl_languages.schemas(lang, case.meta.get("types") or {})
        decoded = [(bfcl_languages.source_values(lang, case.meta.get("types") or {}, c), why) for c, why in decoded]
    turns = [score_turn(tools, turn, calls, why) for turn, (calls, why) in zip(case.turns, decoded)]
    row = {"id": case.id, "category": case.category, **{m: _all(t[m] for t in turns) for m in METRICS[:5]}}
    if not case.is_chain:
        return {**row, "order": None, "gating": None, "reason": turns[0]["reason"]}
    order, gating = _order(case, decoded), _gating(case, decoded)
    row["order"], row["gating"] = order is None, gating is None
    # the first failing turn's reason, then the chain's own
    reasons = [f"turn {k}: {t['reason']}" for k, t in enumerate(turns) if t["reason"]][:1]
    row["reason"] = "; ".join(reasons + [r for r in (order, gating) if r]) or None
    return row


def decode_turn(turn: Any, tokenizer=None, tools: list[dict] | None = None) -> tuple[list[ToolCall] | None, str | None]:
    """A predicted turn's calls, or None with why the model's output does not decode; Malformed for a turn that is
    neither `{"calls": [...]}` nor `{"text": "..."}`."""
    if not isinstance(turn, dict):
        raise Malformed(f"a turn must be an object, got {type(turn).__name__}")
    if "calls" in turn:
        if not isinstance(turn["calls"], list):
            raise Malformed(f"calls must be a list, got {type(turn['calls']).__name__}")
        try:
            return [ToolCall.from_message(c) for c in turn["calls"]], None
        except Rejected as r:
            return None, r.describe()
    if "text" in turn:
        if not isinstance(turn["text"], str):
            raise Malformed(f"text must be a string, got {type(turn['text']).__name__}")
        from .parse import parse_output  # only text predictions need it

        return parse_output(turn["text"], tokenizer, tools=tools)
    raise Malformed("a turn needs calls or text")


def score_turn(tools: dict[str, dict], turn: Turn, calls: list[ToolCall] | None, why: str | None) -> dict:
    expected = turn.expected
    if calls is None:
        no_call = expected == []
        return {"parsed": False, "tool_selection": no_call, "arguments": False if expected else None,
                "exact_match": no_call if expected is not None else None, "ast_match": no_call,
                "reason": f"output does not decode: {why}"}
    ast = check_turn(tools, calls, expected)
    names = sorted(c.name for c in calls)
    if expected is None:
        wrong = [n for n in names if turn.names is not None and n not in turn.names]
        selection = bool(calls) and not wrong
        selection_reason = f"called {wrong}, not among the expected tools {turn.names}" if wrong else ast
        exact = miss = None
    else:
        selection = names == sorted(next(iter(a)) for a in expected)
        selection_reason = None
        miss = _exact(tools, calls, expected)
        exact = miss is None
    return {
        "parsed": True,
        "tool_selection": selection,
        "arguments": (ast is None or _arguments(tools, calls, expected)) if expected else None,
        "exact_match": exact,
        "ast_match": ast is None,
        "reason": ast or (None if selection else selection_reason) or (miss and _exact_reason(miss, calls)),
    }


def _arguments(tools: dict[str, dict], calls: list[ToolCall], expected: list[dict]) -> bool:
    """Each expected call, in order, finds an unused call of its name with acceptable arguments."""
    free = list(calls)
    for answer in expected:
        (name, params), = answer.items()
        match = next((c for c in free if c.name == name and check_call(tools.get(name), c, name, params) is None), None)
        if match is None:
            return False
        free.remove(match)
    return True


def _exact(tools: dict[str, dict], calls: list[ToolCall], expected: list[dict]) -> tuple | None:
    """What keeps the calls from being the expected ones at their first values, in any order: `(name, arguments)`
    of an expected call not made, or `(call,)` of one made in excess; None when they are exactly those. A first value
    `""` is BFCL's "may be left out", and also what a held-out call that passed an empty string turns into: there,
    `""` and leaving out are both exact. (Found without formatting: most cases never need the message.)"""
    free = list(calls)
    for answer in expected:
        (name, params), = answer.items()
        want, blank = {}, set()
        for p, v in params.items():
            if not v:
                continue
            if v[0] == "":
                blank.add(p)
            else:
                want[p] = literal(v[0], ((tools.get(name) or {}).get("properties") or {}).get(p)) \
                    if isinstance(v[0], (dict, list)) else v[0]
        match = next((c for c in free if c.name == name and _same(
            {p: v for p, v in c.arguments.items() if not (p in blank and v == "")} if blank else c.arguments, want)),
            None)
        if match is None:
            return name, want
        free.remove(match)
    return (free[0],) if free else None


def _exact_reason(miss: tuple, calls: list[ToolCall]) -> str:
    if len(miss) == 1:
        return f"not exactly the expected calls: {_show(miss[0].name, miss[0].arguments)} is extra"
    made = ", ".join(_show(c.name, c.arguments) for c in calls) or "no call"
    return f"not exactly the expected calls: no {_show(*miss)} among {made}"


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: `1`, `1.0` and `true` differ, as they do in the text of a call."""
    return a == b and _same_types(a, b)


def _same_types(a: Any, b: Any) -> bool:
    """For values already equal in Python's sense (where 1 == 1.0 == True), whether their types agree throughout.
    A string only equals a string, so strings need no look."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is dict:
        for k, v in a.items():
            if type(v) is not str and not _same_types(v, b[k]):
                return False
    elif kind is list:
        for x, y in zip(a, b):
            if type(x) is not str and not _same_types(x, y):
                return False
    return True


def _show(name: str, arguments: dict) -> str:
    return f"{name}({json.dumps(arguments, ensure_ascii=False)[1:-1]})"


def _order(case: Case, decoded: list) -> str | None:
    """Why a call came before its turn: a call in excess of its turn's expected ones to a function a later turn
    expects (the model did not wait for the results that call needs)."""
    for k, (calls, _) in enumerate(decoded):
        expected_here = Counter(next(iter(a)) for a in case.turns[k].expected or [])
        later = {next(iter(a)) for t in case.turns[k + 1 :] for a in t.expected or []}
        early = (Counter(c.name for c in calls or []) - expected_here).keys() & later
        if early:
            return f"turn {k}: called {sorted(early)} before its turn"
    return None


def _gating(case: Case, decoded: list) -> str | None:
    """Why a value was made up: a parameter the chain fills from a tool result got text the model had not seen
    (compared as BFCL compares strings, so `ag-7781` for `AG-7781` counts as copied)."""
    linked = {(link["call"], link["param"]) for link in chain_links(case.messages, case.turns)}
    seen = bfcl_normalized("\n".join(message_text(m) for m in case.messages))
    for k, (calls, _) in enumerate(decoded):
        for call in calls or []:
            for param, value in call.arguments.items():
                if (call.name, param) in linked:
                    unseen = [leaf for leaf in leaves(value) if bfcl_normalized(leaf) not in seen]
                    if unseen:
                        return (f"turn {k}: {call.name} argument {param!r} = {unseen[0]!r} "
                                "is no value the tools had returned")
        seen += bfcl_normalized("\n".join(message_text(m) for m in case.turns[k].results))
    return None


def _all(values) -> bool | None:
    applicable = [v for v in values if v is not None]
    return all(applicable) if applicable else None


def _failed(case: Case, reason: str) -> dict:
    """Every metric that applies to the case, failed."""
    calls_expected = not case.turns or any(t.expected for t in case.turns)
    exact_applies = not case.turns or any(t.expected is not None for t in case.turns)
    chain = None if not case.is_chain else False
    return {"id": case.id, "category": case.category, "parsed": False, "tool_selection": False,
            "arguments": False if calls_expected else None, "exact_match": False if exact_applies else None,
            "ast_match": False, "order": chain, "gating": chain, "reason": reason}


# ---- files ----

def iter_cases(path: Path, fmt: str = "cases", answers: list[Path] = (), skipped: Counter | None = None) \
        -> Iterator[Case]:
    """Cases from a cases file (`eval cases` output) or, with fmt `bfcl`, a BFCL test file and its answers (records
    that cannot be cases are counted in `skipped` with their reasons); streamed, so a large file never sits in memory
    whole. Malformed cases, repeated ids, or none at all are the user's mistake."""
    if fmt == "bfcl":
        cases = read_bfcl([path], list(answers), skipped)
    else:
        cases = (_case(path, n, record) for n, record in json_lines(path, loads_fast))
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise UserError(f"{path}: the case id {case.id!r} occurs twice; ids must be unique to match predictions")
        seen.add(case.id)
        problem = _malformed(case)
        if problem:
            raise UserError(f"{path}: case {case.id!r}: {problem}")
        yield case
    if not seen:
        raise UserError(f"{path} holds no cases")


def _case(path: Path, n: int, record: Any) -> Case:
    try:
        return Case.from_dict(record)
    except (KeyError, TypeError, AttributeError) as e:
        bfcl = isinstance(record, dict) and "question" in record
        hint = " (a BFCL test file? pass --format bfcl --answers FILE)" if bfcl else ""
        raise UserError(f"{path} line {n}: not a case ({type(e).__name__}: {e}){hint}") from None


def _malformed(case: Case) -> str | None:
    """What is wrong with a case's expected calls, which must be `[{name: {param: [values]}}, ...]`, `[]` or None."""
    for turn in case.turns:
        if turn.expected is None:
            continue
        if not isinstance(turn.expected, list):
            return f"expected calls must be a list, got {type(turn.expected).__name__}"
        for answer in turn.expected:
            if not (isinstance(answer, dict) and len(answer) == 1):
                return f"an expected call must be {{name: {{param: [values]}}}}, got {answer!r}"
            (name, params), = answer.items()
            if not (isinstance(params, dict) and all(isinstance(v, list) for v in params.values())):
                return f"the expected call {name!r} is not {{param: [values]}}"
    return None


def load_predictions(path: Path) -> tuple[dict[str, Prediction | str], dict]:
    """id -> prediction (or why it is malformed), and counts of the lines that are no prediction at all."""
    predictions: dict[str, Prediction | str] = {}
    stats = {"lines": 0, "malformed_lines": 0, "duplicate_ids": 0, "examples": []}
    for n, (record, problem) in json_lines(path, _prediction_line):
        stats["lines"] += 1
        if problem:
            stats["malformed_lines"] += 1
            _example(stats, f"line {n}: {problem}")
            continue
        key = str(record["id"])
        if key in predictions:
            stats["duplicate_ids"] += 1
            _example(stats, f"line {n}: id {key!r} again (the first one counts)")
            continue
        turns = record.get("turns", [record])
        predictions[key] = (Prediction.from_line(record) if isinstance(turns, list)
                            else f"turns must be a list, got {type(turns).__name__}")
    if stats["lines"] == stats["malformed_lines"]:
        raise UserError(f"{path} holds no predictions: expected JSON Lines of "
                        '{"id", "calls": [{"name", "arguments"}]} or {"id", "text"}')
    return predictions, stats


def _example(stats: dict, text: str) -> None:
    if len(stats["examples"]) < _EXAMPLES:
        stats["examples"].append(text)


def _prediction_line(line: str) -> tuple[Any, str | None]:
    """A predictions line and what is wrong with it: a bad line is counted, not an error."""
    try:
        record = loads_fast(line)
    except json.JSONDecodeError as e:  # orjson's error is a subclass, as is a refusal for the limits
        return None, f"not JSON ({e.msg})"
    return record, None if isinstance(record, dict) and "id" in record else "not an object with an id"


def file_hash(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def score_all(cases_path: Path, predictions_path: Path, fmt: str = "cases", answers: list[Path] = (), tokenizer=None,
              rows_to: TextIO | None = None) -> tuple[list[dict], dict]:
    """Every case's row, in case order (each also written to `rows_to` as a JSON line once scored), and counts of the
    predictions: lines, malformed lines, repeated ids, ids that match no case, cases without one, a few examples."""
    ids: set[str] = set()
    rows = []
    with gc_paused():
        predictions, stats = load_predictions(predictions_path)
        skipped: Counter = Counter()
        for case in iter_cases(cases_path, fmt, answers, skipped):
            ids.add(case.id)
            rows.append(score_case(case, predictions.get(case.id), tokenizer))
            if rows_to is not None:
                rows_to.write(json.dumps(rows[-1], ensure_ascii=False) + "\n")
    unknown = [k for k in predictions if k not in ids]
    stats["unknown_ids"] = len(unknown)
    for k in unknown:
        _example(stats, f"id {k!r} matches no case")
    stats["missing"] = sum(1 for k in ids if k not in predictions)
    if skipped:
        stats["skipped_records"] = sorted(skipped)
    return rows, stats


@contextmanager
def gc_paused():
    """Python's cyclic collector rescans every live object as allocations pile up, which made loading 20k cases
    five times slower than parsing them; nothing here makes reference cycles, so collection waits until the end."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
