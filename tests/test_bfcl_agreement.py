"""Our AST verdict agrees with BFCL's reference checker case by case, on generated cases of its four AST categories.

The reference is `bfcl_eval.eval_checker.ast_eval.ast_checker` from PyPI's `bfcl-eval`, installed without its
dependencies (`pip install --no-deps bfcl-eval`; its bundled data is never read). Its module imports BFCL's model
registry, which imports every API client BFCL supports (anthropic, openai, cohere, ...); the checker only asks that
registry whether a model rewrites dots in function names. Where those clients are missing, a stand-in registry
answers "no" for every model, and the checker's own code runs unchanged.

Cases are generated from a seed: random Gorilla-typed functions and possible answers, and predictions derived from
the answers with one perturbation each (wrong types, int for float, "10" for 10, extra or missing parameters,
string normalisation, list order, nested dicts, parallel permutations, count mismatches, ...). Our side sees the
functions as the pipeline does: converted to JSON Schema by prep's BFCL reader.
"""

from __future__ import annotations

import copy
import random
import sys
import types
from collections import Counter
from dataclasses import dataclass

import pytest

from dispatchtune.data_prep.readers import bfcl as bfcl_reader
from dispatchtune.data_prep.sample import ToolCall
from dispatchtune.eval.bfcl import check_turn
from dispatchtune.eval.records import tool_index

pytest.importorskip("bfcl_eval", reason="pip install --no-deps bfcl-eval (scripts/setup.sh does)")

CASES_PER_CATEGORY = 1000
CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple")
WORDS = ["Paris", "New York, NY", "April 1, 2024", "san_francisco", "x-ray", "3.5 km", "O'Brien", "USD", "e^x*2",
         "Hello World", "data/file.csv", "", "  padded  ", "Mixed CASE text", "a,b,c", "tokyo"]
KEYS = ["city", "unit", "count", "ratio", "flag", "tags", "point", "options", "items", "name", "mode", "limit"]


def _reference():
    try:
        import bfcl_eval.constants.model_config as model_config
    except ImportError:  # the API clients it imports are not installed: stand in for the registry
        @dataclass
        class _Config:
            underscore_to_dot: bool = False

        model_config = types.ModuleType("bfcl_eval.constants.model_config")
        model_config.MODEL_CONFIG_MAPPING = type("Registry", (dict,), {"__missing__": lambda self, key: _Config()})()
        sys.modules[model_config.__name__] = model_config
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker

    model = next((k for k, c in model_config.MODEL_CONFIG_MAPPING.items() if not c.underscore_to_dot and "_" not in k),
                 "stand-in")
    return lambda functions, output, answer, category: ast_checker(
        functions, output, answer, Language.PYTHON, category, model.replace("/", "_"))


# ---- generation ----

def gen_schema(rng: random.Random, depth: int = 0) -> dict:
    kind = rng.choice(["integer", "float", "string", "boolean", "array", "array", "tuple", "dict", "any"] if depth == 0
                      else ["integer", "float", "string", "boolean"])
    schema = {"type": kind, "description": "d"}
    if kind in ("array", "tuple"):
        schema["items"] = {"type": rng.choice(["string", "integer", "float", "dict", "dict"])}
        if schema["items"]["type"] == "dict":
            schema["items"]["properties"] = {k: gen_schema(rng, 1) for k in rng.sample(KEYS, 2)}
    if kind == "dict":
        schema["properties"] = {k: gen_schema(rng, 1) for k in rng.sample(KEYS, rng.randint(1, 3))}
    return schema


def gen_value(rng: random.Random, schema: dict):
    kind = schema.get("type")
    if kind == "integer":
        return rng.choice([rng.randint(-3, 12), rng.randint(100, 5000)])
    if kind == "float":
        return rng.choice([round(rng.uniform(0, 50), 2), float(rng.randint(0, 9))])
    if kind == "boolean":
        return rng.random() < 0.5
    if kind in ("array", "tuple"):
        return [gen_value(rng, schema["items"]) for _ in range(rng.randint(0, 3))]
    if kind == "dict":
        return {k: gen_value(rng, s) for k, s in schema.get("properties", {}).items()}
    return rng.choice(WORDS)


def gen_options(rng: random.Random, schema: dict, value, optional: bool) -> list:
    """Acceptable values in BFCL's form: per-key option lists inside dicts, variants, `""` for an optional one."""
    kind = schema.get("type")
    if kind == "dict":
        options = [{k: [v] + ([""] if rng.random() < 0.3 else []) for k, v in value.items()}]
    elif kind in ("array", "tuple") and schema["items"]["type"] == "dict":
        options = [[{k: [v] + ([""] if rng.random() < 0.3 else []) for k, v in item.items()} for item in value]]
    else:
        options = [value]
        if rng.random() < 0.4:
            options.append(gen_value(rng, schema))
        if rng.random() < 0.05:  # a "variable" answer: a string where the schema says otherwise
            options = ["$var"]
    if optional and rng.random() < 0.5:
        options.insert(rng.randint(0, len(options)), "")
    return options


def gen_function(rng: random.Random, index: int) -> tuple[dict, dict]:
    """A Gorilla function and one possible answer for a call to it."""
    name = rng.choice(["get_weather", "math.hypot", "convert_units", "search", "book.flight"]) + f"_{index}"
    params = {k: gen_schema(rng) for k in rng.sample(KEYS, rng.randint(1, 5))}
    required = [k for k in params if rng.random() < 0.5]
    function = {"name": name, "description": "f", "parameters": {"type": "dict", "properties": params, "required": required}}
    answer = {}
    for k, schema in params.items():
        if k in required or rng.random() < 0.7:
            answer[k] = gen_options(rng, schema, gen_value(rng, schema), k not in required)
    return function, {name: answer}


def realise(rng: random.Random, answer: dict) -> dict:
    """A model output that the answer accepts, mostly: an option per parameter, omitted where allowed."""
    (name, params), = answer.items()
    args = {}
    for k, options in params.items():
        picks = [o for o in options if o != ""]
        if not picks or ("" in options and rng.random() < 0.3):
            continue
        args[k] = _concrete(rng.choice(picks))
    return {name: args}


def _concrete(option):
    """An option as a value: BFCL's per-key dict options take their first value."""
    if isinstance(option, dict) and all(isinstance(v, list) for v in option.values()):
        return {k: v[0] for k, v in option.items() if v and v[0] != ""}
    if isinstance(option, list) and option and all(isinstance(o, dict) for o in option):
        return [_concrete(o) for o in option]
    return option


def _restyle(rng: random.Random, text: str) -> str:
    return rng.choice([text.upper(), text.lower(), text.replace(" ", ""), f" {text}, ", text.replace(" ", "-"),
                       text + "!", text.replace("'", '"'), "_" + text + "^", text + " more"])


APPLIES = {  # perturbation -> which argument values it can change
    "type": lambda v, t: True,
    "int_float": lambda v, t: t in ("integer", "float") and isinstance(v, (int, float)) and not isinstance(v, bool),
    "string": lambda v, t: isinstance(v, str),
    "list": lambda v, t: isinstance(v, list) and bool(v),
    "list_items": lambda v, t: isinstance(v, list) and any(not isinstance(x, dict) for x in v),
    "nested": lambda v, t: isinstance(v, list) and any(isinstance(x, dict) and x for x in v),
    "dict": lambda v, t: isinstance(v, dict),
    "null": lambda v, t: True,
}


def perturb(rng: random.Random, output: list[dict], functions: list[dict]) -> tuple[list[dict], str]:
    """One perturbation of a call list (a few draws until one applies); returns it with the perturbation's name."""
    kinds = ["none"] * 4 + [*APPLIES, *APPLIES, "extra", "missing", "name", "count", "permute", "swap", "other_function"]
    for _ in range(6):
        changed = _perturb(rng, copy.deepcopy(output), functions, rng.choice(kinds))
        if changed:
            return changed
    return output, "none"


def _perturb(rng: random.Random, output: list[dict], functions: list[dict], kind: str) -> tuple[list[dict], str] | None:
    call = rng.choice(output)
    name, args = next(iter(call.items()))
    props = next((f["parameters"]["properties"] for f in functions if f["name"] == name), {})
    if kind in APPLIES:
        keys = [k for k, v in args.items() if k in props and APPLIES[kind](v, props[k]["type"])]
        if not keys:
            return None
        key = rng.choice(keys)
        args[key] = _change(rng, kind, args[key])
    elif kind == "extra":
        extra = [k for k in props if k not in args]
        args[rng.choice(extra) if extra and rng.random() < 0.6 else "unknown_param"] = gen_value(rng, {"type": "string"})
    elif kind == "missing" and args:
        del args[rng.choice(list(args))]
    elif kind == "name":
        output[output.index(call)] = {name + "_x": args}
    elif kind == "count":
        output = output + [copy.deepcopy(call)] if rng.random() < 0.5 else output[1:]
    elif kind == "permute" and len(output) > 1:
        rng.shuffle(output)
    elif kind == "swap" and len(output) > 1:
        a, b = rng.sample(range(len(output)), 2)
        (na, aa), (nb, ab) = next(iter(output[a].items())), next(iter(output[b].items()))
        output[a], output[b] = {na: ab}, {nb: aa}
    elif kind == "other_function" and len(functions) > 1:
        output[output.index(call)] = {rng.choice([f["name"] for f in functions if f["name"] != name]): args}
    elif kind != "none":
        return None
    return output, kind


def _change(rng: random.Random, kind: str, value):
    if kind == "type":
        return rng.choice([str(value), [value], {"v": value}, 1, 1.0, True, "true"])
    if kind == "int_float":
        if isinstance(value, int):
            return float(value)
        return int(value) if value == int(value) else rng.choice([round(value), str(value)])
    if kind == "string":
        return _restyle(rng, value)
    if kind == "list":
        return rng.choice([value[::-1], value[1:], value + value[:1], [value[-1]] + value[1:]])
    if kind == "list_items":
        return [_restyle(rng, x) if isinstance(x, str) else float(x) if type(x) is int else int(x) if type(x) is float
                and x == int(x) else x for x in value]
    if kind == "nested":
        value = copy.deepcopy(value)
        item = rng.choice([x for x in value if isinstance(x, dict) and x])
        return [_change(rng, "dict", x) if x is item else x for x in value]
    if kind == "dict":
        value = dict(value)
        strings = [k for k, v in value.items() if isinstance(v, str)]
        choice = rng.random()
        if strings and choice < 0.4:
            inner = rng.choice(strings)
            value[inner] = _restyle(rng, value[inner])
        elif value and choice < 0.6:
            del value[rng.choice(list(value))]
        elif value and choice < 0.85:
            inner = rng.choice(list(value))
            value[inner] = rng.choice([str(value[inner]), float(value[inner]) if type(value[inner]) is int else None])
        else:
            value["extra_key"] = 1
        return value
    return None  # null


def gen_case(rng: random.Random, category: str) -> tuple[list[dict], list[dict], list[dict], str]:
    n_functions = 1 if category in ("simple", "parallel") else rng.randint(2, 4)
    generated = [gen_function(rng, i) for i in range(n_functions)]
    functions = [f for f, _ in generated]
    if category == "simple" or category == "multiple":
        answers = [rng.choice(generated)[1]]
    elif category == "parallel":
        answers = [gen_function_answer(rng, functions[0]) for _ in range(rng.randint(2, 4))]
    else:
        answers = [gen_function_answer(rng, rng.choice(functions)) for _ in range(rng.randint(2, 4))]
    output, kind = perturb(rng, [realise(rng, a) for a in answers], functions)
    return functions, answers, output, kind


def gen_function_answer(rng: random.Random, function: dict) -> dict:
    """Another possible answer for an existing function (parallel calls differ in their arguments)."""
    props, required = function["parameters"]["properties"], function["parameters"]["required"]
    answer = {}
    for k, schema in props.items():
        if k in required or rng.random() < 0.7:
            answer[k] = gen_options(rng, schema, gen_value(rng, schema), k not in required)
    return {function["name"]: answer}


# ---- the test ----

def ours(functions: list[dict], output: list[dict], answers: list[dict]) -> bool:
    sample = bfcl_reader.convert({"id": "simple_python_0", "question": [[{"role": "user", "content": "q"}]],
                                  "function": functions})
    calls = [ToolCall(name, args) for call in output for name, args in call.items()]
    return check_turn(tool_index(sample.tools), calls, answers) is None


@pytest.mark.parametrize("category", CATEGORIES)
def test_verdicts_agree_with_bfcl_reference(category):
    reference = _reference()
    rng = random.Random(f"bfcl-{category}")
    disagreements, verdicts, kinds = [], Counter(), Counter()
    for n in range(CASES_PER_CATEGORY):
        functions, answers, output, kind = gen_case(rng, category)
        theirs = reference(copy.deepcopy(functions), copy.deepcopy(output), copy.deepcopy(answers), category)["valid"]
        mine = ours(functions, output, answers)
        verdicts[theirs] += 1
        kinds[kind, theirs] += 1
        if mine != theirs:
            disagreements.append((n, kind, mine, theirs, functions, answers, output))
    assert not disagreements, f"{len(disagreements)} disagreements, first: {disagreements[0]}"
    # Not vacuous: both verdicts are common, and most perturbations both pass and fail somewhere.
    assert min(verdicts.values()) > CASES_PER_CATEGORY * 0.15, verdicts
    both = {k for k, v in kinds if v} & {k for k, v in kinds if not v}
    expected = {"type", "int_float", "string", "list", "list_items", "dict", "nested", "missing"}
    assert expected | ({"permute", "swap"} if "parallel" in category else set()) <= both, kinds


def test_hand_made_cases_agree_with_bfcl_reference():
    """The rules one by one, on the record of FORMATS.md, against the reference."""
    reference = _reference()
    function = {"name": "calculate_triangle_area", "description": "d", "parameters": {"type": "dict", "properties": {
        "base": {"type": "integer"}, "height": {"type": "float"}, "unit": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["base", "height"]}}
    answer = [{"calculate_triangle_area": {"base": [10], "height": [5.0], "unit": ["units", ""],
                                           "tags": [["a b", "c"], ""]}}]
    outputs = [
        {"base": 10, "height": 5.0}, {"base": 10, "height": 5}, {"base": "10", "height": 5.0}, {"base": 10.0, "height": 5},
        {"base": 10, "height": 5, "unit": "UNITS"}, {"base": 10, "height": 5, "unit": "u-n.i_t s"},
        {"base": 10, "height": 5, "unit": "unit"}, {"base": 10, "height": 5, "tags": ["AB", "c"]},
        {"base": 10, "height": 5, "tags": ["c", "a b"]}, {"base": 10, "height": 5, "color": "red"}, {"height": 5},
        {"base": True, "height": 5},
    ]
    for args in outputs:
        output = [{"calculate_triangle_area": args}]
        assert ours([function], output, answer) == reference([function], output, answer, "simple")["valid"], args
