"""BFCL's AST verdict on our own terms, and BFCL's test and possible-answer files as cases.

The checker reproduces `bfcl_eval.eval_checker.ast_eval.ast_checker` for Python, case by case
(tests/test_bfcl_agreement.py holds it to that against the real package), so a number we report on BFCL's
categories means what BFCL's would. Its rules, including the odd ones, matter for that agreement:
- the name must match; every required parameter is present; a parameter must be in both the schema and the
  expected call; an expected parameter may be left out only when `""` is among its values;
- types are strict (`"10"` is not an integer, `10.0` is not an integer, `True` is not an integer) except that an int
  is accepted for a float; a value whose expected values are of another type than the schema's (BFCL's "variable"
  answers) is compared by type of the expected values and then by equality;
- strings compare after lower-casing and removing spaces and `,./-_*^` (and `'` reads as `"`); inside lists only the
  top-level strings are normalised; lists compare in order; a dict compares key by key against each option;
- array items are type-checked one level deep, and not at all when an option is not a list (`""`);
- several expected calls are matched greedily: each expected call, in order, takes the first unmatched predicted
  call that passes; counts must be equal. One expected call is BFCL's simple and multiple categories alike.
Tool schemas may be JSON Schema (what prep writes) or Gorilla's own names (`dict`, `float`, `tuple`, `any`): both map
to the Python type BFCL checks against, a missing type (`any`) to `str` as BFCL does. BFCL's Java and JavaScript
categories take values as source text; eval/bfcl_languages.py converts them as BFCL does before this checker runs.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from dispatchtune.data_prep.readers import bfcl as bfcl_reader
from dispatchtune.data_prep.sample import Rejected, Sample, ToolCall
from dispatchtune.data_prep.schema_types import json_type
from dispatchtune.errors import UserError
from dispatchtune.jsonl import json_lines

from . import bfcl_languages
from .records import Case, Turn

IRRELEVANCE = ("irrelevance", "live_irrelevance")  # right answer: no call
RELEVANCE = ("live_relevance",)  # right answer: any call

_PYTHON = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list, "object": dict}
_BY_NAME = {**_PYTHON, "float": float, "tuple": list, "dict": dict}  # the common names, without json_type's lookup
_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object",
          type(None): "null"}
_IGNORED = re.compile(r"[ ,./\-_*^]")


# ---- the checker ----

def check_turn(tools: dict[str, dict], calls: list[ToolCall], expected: list[dict] | None) -> str | None:
    """Why `calls` fail BFCL's verdict for one turn, or None when they pass."""
    if expected is None:
        return None if calls else "expected a call, got none"
    if len(calls) != len(expected):
        got = ", ".join(repr(c.name) for c in calls) or "none"
        return f"expected {_count(len(expected))}, got {len(calls)} ({got})"
    free = list(range(len(calls)))
    for n, answer in enumerate(expected):
        (name, params), = answer.items()
        reasons = []
        for k in free:
            reason = check_call(tools.get(name), calls[k], name, params)
            if reason is None:
                free.remove(k)
                break
            reasons.append((calls[k].name != name, reason))
        else:
            if len(expected) == 1:
                return reasons[0][1]
            same_name = [r for other, r in reasons if not other]
            return f"expected call {n + 1} ({name!r}): " + (same_name[0] if same_name else "no call to it")
    return None


def check_call(schema: dict | None, call: ToolCall, name: str, expected: dict[str, list]) -> str | None:
    """Why one call fails against one expected call (`{param: [acceptable values]}`), or None."""
    if call.name != name:
        return f"called {call.name!r}, expected {name!r}"
    if schema is None:
        return f"{name!r} is not among the case's tools"
    props = schema.get("properties") or {}
    args = call.arguments
    for param in schema.get("required") or []:
        if param not in args:
            return f"{name}: missing required argument {param!r}"
    for param, value in args.items():
        if param not in props:
            return f"{name}: unexpected argument {param!r} (not in the tool's schema)"
        if param not in expected:
            return f"{name}: unexpected argument {param!r} (not in the expected call)"
        problem = value_problem(param, value, props[param], expected[param])
        if problem:
            return f"{name}: {problem}"
    for param, options in expected.items():
        if param not in args and "" not in options:
            return f"{name}: missing argument {param!r} (expected one of {options!r})"
    return None


def value_problem(param: str, value: Any, schema: Any, options: list) -> str | None:
    """Why a value is not acceptable for a parameter of this schema, or None."""
    want = schema_python_type(schema)
    nested = schema_python_type(schema["items"]) if want is list and isinstance(schema.get("items"), dict) else None
    if want is float and type(value) is int:
        value = float(value)
    ok, variable = _type_ok(value, options, want, nested)
    if not ok:
        return f"argument {param!r}: expected {_NAMES[want]}, got {_NAMES.get(type(value), type(value).__name__)} {value!r}"
    if variable:
        match = value in options
    elif want is dict:
        match = _dict_match(value, options)
    elif want is list and nested is dict:
        match = _dicts_match(value, options)
    elif want is str:
        match = bfcl_normalized(value) in [bfcl_normalized(o) for o in options if type(o) is str]
    elif want is list:
        match = _std_list(value) in [_std_list(o) for o in options if isinstance(o, (list, str))]
    else:
        match = value in options
    return None if match else f"argument {param!r}: {value!r} not in {options!r}"


def literal(option: Any, schema: Any) -> Any:
    """The value an answer option stands for: an object parameter's option (`{key: [values]}`, BFCL's form) as its
    first values, keys whose first value is `""` left out; likewise each object in an array of objects."""
    want = schema_python_type(schema)
    items = schema.get("items") if want is list and isinstance(schema, dict) else None
    if want is dict and isinstance(option, dict):
        return _first_values(option)
    if want is list and schema_python_type(items) is dict and isinstance(option, list) \
            and all(isinstance(o, dict) for o in option):
        return [_first_values(o) for o in option]
    return option


def _first_values(option: dict) -> dict:
    if not all(isinstance(v, list) for v in option.values()):
        return option
    return {k: v[0] for k, v in option.items() if v and v[0] != ""}


def schema_python_type(schema: Any) -> type:
    """The Python type BFCL checks a value of this schema against (`any`, or a type it cannot name: `str`)."""
    kind = schema.get("type") if type(schema) is dict else None
    if type(kind) is not str:  # none (`any`), or a list of types (`["string", "null"]`): BFCL knows neither
        return str
    return _BY_NAME.get(kind) or _PYTHON.get(json_type(kind), str)


@lru_cache(maxsize=1 << 16)  # expected values recur across calls and cases; scoring speed is mostly this
def bfcl_normalized(text: str) -> str:
    """BFCL's string normalisation: `April 1, 2024` and `april 1 2024` compare equal."""
    return _IGNORED.sub("", text).lower().replace("'", '"')


def _type_ok(value: Any, options: list, want: type, nested: type | None) -> tuple[bool, bool]:
    """(type acceptable, compare as a "variable"): BFCL takes expected values of another type than the schema's as
    variables, judged by their own type and then by plain equality."""
    answer_type = None
    for option in options:
        if option != "":
            answer_type = type(option)
            break
    if type(value) is want:
        if nested is not None and not any(
            not isinstance(o, list) or all(_type_ok(item, o, nested, None)[0] for item in value) for o in options
        ):
            return False, False
        return True, answer_type is not None and answer_type is not want
    return answer_type is not None and type(value) is answer_type, True


def _std(value: Any) -> Any:
    return bfcl_normalized(value) if type(value) is str else value


def _std_list(values) -> list:
    return [_std(v) for v in values]


def _dict_match(value: dict, options: list) -> bool:
    """Some option (a dict of per-key value lists) accepts every key given, and every key left out may be."""
    for option in options:
        if option == "" or not isinstance(option, dict):
            continue
        if all(k in option and _std(v) in _std_list(option[k]) for k, v in value.items()) and all(
            k in value or "" in vs for k, vs in option.items()
        ):
            return True
    return False


def _dicts_match(value: list, options: list) -> bool:
    """A list of dicts: some option has as many dicts, each accepting the one at its place."""
    return any(
        isinstance(option, (list, str)) and len(option) == len(value)
        and all(isinstance(v, dict) and _dict_match(v, [option[i]]) for i, v in enumerate(value))
        for option in options
    )


def _count(n: int) -> str:
    return {0: "no call", 1: "1 call"}.get(n, f"{n} calls")


# ---- BFCL's files ----

def read_bfcl(tests: list[Path], answers: list[Path], skipped: Counter | None = None) -> Iterator[Case]:
    """Cases from BFCL test files (JSON Lines, read through prep's BFCL reader) and their possible-answer files.

    The tools are the function docs as BFCL shows them to the model (its language note on each description; in the
    Java and JavaScript categories every parameter a string of source text, the original types kept in the case's
    meta for scoring: eval/bfcl_languages.py). Earlier assistant turns of a question (a few live_irrelevance
    records hold one) stay in the conversation as BFCL sends them. A record that cannot be a case is left out and
    counted in `skipped` with its id and reason; the others still are cases.
    Irrelevance categories expect no call and live_relevance any call, with no answer needed. A record of another
    category whose answer is missing becomes a case without turns, which scoring counts as a failure by name;
    when none has one, the answer file is the wrong one and this says so.
    """
    truth = {rec["id"]: rec["ground_truth"] for path in answers for _, rec in _records(path, "ground_truth")}
    needed = found = 0
    for path in tests:
        for line, record in _records(path, "question"):
            try:
                sample = _sample(record)
            except Rejected as r:
                if skipped is not None:
                    skipped[f"BFCL record {record['id']} ({path.name} line {line}): {r.describe()}"] += 1
                continue
            category = sample.meta["category"] or "bfcl"
            meta = {"format": "bfcl"}
            if lang := bfcl_languages.language(category):
                meta.update(language=lang, types=bfcl_languages.source_types(record["function"]))
            if category in IRRELEVANCE:
                turns = [Turn([])]
            elif category in RELEVANCE:
                turns = [Turn(None)]
            else:
                needed += 1
                answer = truth.get(record["id"])
                found += answer is not None
                turns = [Turn(answer)] if isinstance(answer, list) else []
            yield Case(record["id"], category, sample.messages, sample.tools, turns, meta)
    if needed and not found:
        files = ", ".join(map(str, answers))
        hint = f"none of the {len(truth)} answers in {files} match" if answers else "no --answers given"
        raise UserError(f"{needed} BFCL test records need possible answers, but {hint}; pass the possible_answer "
                        "file of the same category")


def _sample(record: dict) -> Sample:
    """A test record as prep reads it, with BFCL's function docs for the model; plain assistant turns of the
    question (which prep refuses: a prompt has none) are kept between the user turns, as BFCL sends them."""
    category = record["id"].rsplit("_", 1)[0] if isinstance(record["id"], str) else ""
    functions = record.get("function")
    record = {**record, "function": bfcl_languages.function_doc(functions, category)} \
        if isinstance(functions, list) else record
    question = record["question"]
    history = isinstance(question, list) and question and isinstance(question[0], list) and any(
        isinstance(m, dict) and m.get("role") == "assistant" for m in question[0])
    if not history:
        return bfcl_reader.convert(record)
    for k, m in enumerate(question[0]):
        if m.get("role") == "assistant" and (not isinstance(m.get("content"), str) or set(m) - {"role", "content"}):
            raise Rejected("role_order", "an assistant turn that is not plain text", f"question[0][{k}]")
    sample = bfcl_reader.convert({**record, "question": [[m for m in question[0] if m.get("role") != "assistant"]]})
    read = iter(sample.messages)  # one for each message that is not an assistant's, in order
    messages = [{"role": "assistant", "content": m["content"]} if m.get("role") == "assistant" else next(read)
                for m in question[0]]
    return Sample(messages, sample.tools, sample.meta)


def _records(path: Path, key: str) -> Iterator[tuple[int, dict]]:
    """(line number, record) of a BFCL JSON Lines file whose records have `id` and `key` (`question` in test files,
    `ground_truth` in answer files); anything else is the user's wrong file."""
    for n, record in json_lines(path):
        if not (isinstance(record, dict) and "id" in record and key in record):
            kind = "possible-answer" if key == "ground_truth" else "test"
            raise UserError(f"{path} line {n}: not a BFCL {kind} record (expected the keys id and {key})")
        yield n, record
