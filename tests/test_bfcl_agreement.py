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
import json
import random
import sys
import types
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from dispatchtune.data_prep.readers import bfcl as bfcl_reader
from dispatchtune.data_prep.sample import ToolCall
from dispatchtune.eval.bfcl import check_turn, read_bfcl
from dispatchtune.eval.records import Prediction, tool_index
from dispatchtune.eval.score import score_case

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
    languages = {"java": Language.JAVA, "javascript": Language.JAVASCRIPT}
    return lambda functions, output, answer, category: ast_checker(
        functions, output, answer, languages.get(category.rsplit("_", 1)[-1], Language.PYTHON), category,
        model.replace("/", "_"))


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


# ---- the categories of BFCL's own files: Java, JavaScript, irrelevance ----

SOURCE_CASES_PER_RECORD = 20
AGREEMENT = 0.995


def bfcl_data():
    import bfcl_eval

    data = Path(bfcl_eval.__file__).parent / "data"
    if not (data / "BFCL_v4_simple_java.json").is_file():
        pytest.skip(f"bfcl-eval's data files are not at {data}")
    return data


def bfcl_cases(data, category: str) -> tuple[dict, dict]:
    """The category's cases as `eval cases --format bfcl` makes them, and its records (with their answers) by id."""
    answers = data / "possible_answer" / f"BFCL_v4_{category}.json"
    cases = {c.id: c for c in read_bfcl([data / f"BFCL_v4_{category}.json"], [answers] if answers.is_file() else [])}
    records = {r["id"]: r for r in map(json.loads, (data / f"BFCL_v4_{category}.json").read_text().splitlines())}
    if answers.is_file():
        for line in answers.read_text().splitlines():
            record = json.loads(line)
            records[record["id"]]["ground_truth"] = record["ground_truth"]
    return cases, records


def java_text(rng: random.Random, value, kind: str, item: str | None) -> str:
    """A Python value written as Java source, in one of the ways a model might."""
    if isinstance(value, bool) or kind == "boolean":
        return str(value).lower() if isinstance(value, bool) else str(value)
    if kind == "long":
        return f"{value}{rng.choice(['L', 'l', ''])}"
    if kind == "float":
        return f"{value}{rng.choice(['f', 'F', ''])}"
    if kind in ("Array", "ArrayList") and isinstance(value, list):
        items = [java_item(rng, v, item) for v in value]
        if kind == "Array":
            return f"new {rng.choice(['String', 'int', 'Object'])}[]{rng.choice(['', ' '])}{{{', '.join(items)}}}"
        if not items or rng.random() < 0.3:
            return "new ArrayList<>() {{ " + " ".join(f"add({i});" for i in items) + " }}" if items \
                else "new ArrayList<>()"
        return f"new ArrayList<>(Arrays.asList({', '.join(items)}))"
    if kind == "HashMap" and isinstance(value, dict):
        puts = " ".join(f'put("{k}", {java_item(rng, v[0] if isinstance(v, list) else v, None)});'
                        for k, v in value.items())
        return f"new HashMap<String, String>() {{{{ {puts} }}}}" if puts else "new HashMap<>()"
    return str(value)


def java_item(rng: random.Random, value, item: str | None) -> str:
    if isinstance(value, str):
        return rng.choice([f'"{value}"', value]) if item not in ("String", "char") else f'"{value}"'
    return java_text(rng, value, item or "any", None)


def js_text(rng: random.Random, value, kind: str) -> str:
    """A Python value written as JavaScript source, in one of the ways a model might."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return rng.choice([value, f"'{value}'", f'"{value}"']) if kind in ("String", "any") else value
    if isinstance(value, list):
        return rng.choice(["[{}]", "new Array({})"]).format(", ".join(js_item(rng, v) for v in value))
    if isinstance(value, dict):
        entries = ", ".join(f"{rng.choice([k, repr(k)])}: {js_item(rng, v[0] if isinstance(v, list) else v)}"
                            for k, v in value.items())
        return "{" + entries + "}"
    return str(value)


def js_item(rng: random.Random, value) -> str:
    if isinstance(value, str):
        return rng.choice([f"'{value}'", f'"{value}"'])
    return js_text(rng, value, "any")


def source_output(rng: random.Random, lang: str, function: dict, answer: dict) -> tuple[list[dict], str]:
    """One model output for a record: the answer's values as source text, then one perturbation."""
    (name, params), = answer.items()
    props = function["parameters"]["properties"]
    args = {}
    for param, options in params.items():
        picks = [o for o in options if o != ""]
        if not picks or ("" in options and rng.random() < 0.3):
            continue
        value = rng.choice(picks)
        spec = props.get(param, {})
        if lang == "java":
            args[param] = java_text(rng, value, spec.get("type"), (spec.get("items") or {}).get("type"))
        else:
            args[param] = js_text(rng, value, spec.get("type"))
    kind = rng.choice(["none"] * 5 + ["raw", "raw", "case", "quote", "unquote", "value", "extra", "missing",
                                      "name", "count", "number"])
    keys = list(args)
    if kind == "raw" and keys:  # the value as JSON instead of source text
        key = rng.choice(keys)
        picks = [o for o in params[key] if o != ""]
        args[key] = rng.choice(picks) if picks else 1
    elif kind == "case" and keys:
        key = rng.choice(keys)
        args[key] = rng.choice([args[key].upper(), args[key].lower(), args[key].replace(" ", "")])
    elif kind == "quote" and keys:
        key = rng.choice(keys)
        args[key] = rng.choice(['"{}"', "'{}'"]).format(args[key])
    elif kind == "unquote" and keys:
        key = rng.choice(keys)
        args[key] = args[key].strip("'\"")
    elif kind == "value" and keys:
        args[rng.choice(keys)] = rng.choice(["0", "other", "[]", "{}", "true", "1.5", "null"])
    elif kind == "number" and keys:
        key = rng.choice(keys)
        args[key] = rng.choice([args[key] + ".0", args[key] + "n", "-" + args[key], args[key].rstrip("Lf")])
    elif kind == "extra":
        args[rng.choice([p for p in props if p not in args] or ["unknown"])] = "x"
    elif kind == "missing" and keys:
        del args[rng.choice(keys)]
    elif kind == "name":
        name += "_x"
    output = [{name: args}]
    if kind == "count":
        output = output * 2 if rng.random() < 0.5 else []
    return output, kind


@pytest.mark.parametrize("category", ["simple_java", "simple_javascript"])
def test_source_text_categories_agree_with_bfcl_reference(category):
    """Every record of BFCL's Java and JavaScript files, many outputs each: the values written as source text (and
    perturbed), judged by BFCL's checker (its own type converters) and by ours."""
    reference, data = _reference(), bfcl_data()
    lang = category.rsplit("_", 1)[-1]
    cases, records = bfcl_cases(data, category)
    rng = random.Random(f"bfcl-{category}")
    total, disagreements, verdicts, kinds = 0, [], Counter(), Counter()
    for case_id, record in records.items():
        case = cases[case_id]
        answer = record["ground_truth"]
        for _ in range(SOURCE_CASES_PER_RECORD):
            output, kind = source_output(rng, lang, record["function"][0], answer[0])
            try:
                theirs = reference(copy.deepcopy(record["function"]), copy.deepcopy(output), copy.deepcopy(answer),
                                   category)["valid"]
            except (ValueError, NotImplementedError, KeyError, TypeError, AttributeError):
                continue  # BFCL's checker itself crashes on this output; nothing to agree with
            calls = [{"name": n, "arguments": a} for call in output for n, a in call.items()]
            mine = score_case(case, Prediction(case_id, [{"calls": calls}]))["ast_match"]
            total += 1
            verdicts[theirs] += 1
            kinds[kind, theirs] += 1
            if mine != theirs:
                disagreements.append((case_id, kind, mine, theirs, output, answer))
    assert total > len(records) * SOURCE_CASES_PER_RECORD * 0.95
    assert 1 - len(disagreements) / total >= AGREEMENT, \
        f"{len(disagreements)} of {total} disagree, first: {disagreements[:3]}"
    assert min(verdicts.values()) > total * 0.15, verdicts  # both verdicts are common
    both = {k for k, v in kinds if v} & {k for k, v in kinds if not v}
    assert {"none", "case", "quote", "raw", "number"} <= both, kinds


def test_relevance_categories_agree_with_bfcl_reference():
    """Every record of irrelevance, live_irrelevance (those holding earlier assistant turns too) and live_relevance,
    with outputs that call, call nothing or do not decode: BFCL's relevance verdict (`is_empty_output` on what
    decodes) and ours agree, and no record is left out."""
    from bfcl_eval.utils import is_empty_output

    data = bfcl_data()
    rng = random.Random("bfcl-relevance")
    for category in ("irrelevance", "live_irrelevance", "live_relevance"):
        cases, records = bfcl_cases(data, category)
        assert set(cases) == set(records)  # every record is a case
        for case_id, record in records.items():
            functions = record["function"] or [{"name": "anything"}]
            for output in ([], [{functions[0]["name"]: {}}], None, [{rng.choice(functions)["name"]: {"x": 1}}] * 2):
                decoded_empty = output is None or is_empty_output(output)  # None: the output does not decode
                theirs = decoded_empty if "irrelevance" in category else not decoded_empty
                turn = {"text": "I cannot help with that, sorry."} if output is None else \
                    {"calls": [{"name": n, "arguments": a} for call in output for n, a in call.items()]}
                assert score_case(cases[case_id], Prediction(case_id, [turn]))["ast_match"] == theirs, \
                    (case_id, output)
    history = [c for c in bfcl_cases(data, "live_irrelevance")[0].values()
                                    if any(m["role"] == "assistant" for m in c.messages)]
    assert len(history) >= 8 and all(m["role"] in ("system", "user", "assistant") for c in history
                                     for m in c.messages)


def test_summary_aggregates_as_bfcl_does():
    """Our BFCL summary against BFCL's own accuracy functions, composed as its leaderboard table composes them."""
    _reference()  # installs the stand-in registry where BFCL's clients are missing
    from bfcl_eval.eval_checker.eval_runner_helper import calculate_unweighted_accuracy as unweighted
    from bfcl_eval.eval_checker.eval_runner_helper import calculate_weighted_accuracy as weighted

    from dispatchtune.eval.leaderboard import CATEGORIES, bfcl_summary

    rng = random.Random("bfcl-summary")
    rows, score = [], {}
    for category in CATEGORIES:
        n, passed = rng.randint(5, 60), 0
        for _ in range(n):
            ok = rng.random() < rng.random()
            passed += ok
            rows.append({"category": category, "ast_match": ok})
        rows.append({"category": "chain", "ast_match": True})  # not BFCL's: left out
        score[category] = {"accuracy": passed / n, "total_count": n, "display_accuracy": passed / n}
    ours = bfcl_summary(rows)
    simple = unweighted([score[c] for c in ("simple_python", "simple_java", "simple_javascript")])
    non_live = unweighted([simple, score["multiple"], score["parallel"], score["parallel_multiple"]],
                          display_na_if_category_missing=False)
    live = weighted([score[c] for c in ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")],
                    display_na_if_category_missing=False)
    irrelevance = unweighted([score["irrelevance"], score["live_irrelevance"]])
    assert ours["non_live"]["accuracy"] == pytest.approx(non_live["accuracy"], abs=1e-6)
    assert ours["non_live"]["simple"] == pytest.approx(simple["accuracy"], abs=1e-6)
    assert ours["live"]["accuracy"] == pytest.approx(live["accuracy"], abs=1e-6)
    assert ours["irrelevance"]["accuracy"] == pytest.approx(irrelevance["accuracy"], abs=1e-6)
    assert ours["relevance"]["accuracy"] == pytest.approx(score["live_relevance"]["accuracy"], abs=1e-6)
    partial = bfcl_summary([r for r in rows if r["category"] != "simple_java"])
    assert partial["non_live"]["accuracy"] is None and partial["non_live"]["missing"] == ["simple_java"]
    assert partial["live"]["accuracy"] == ours["live"]["accuracy"]
    assert bfcl_summary([{"category": "chain", "ast_match": True}]) is None
