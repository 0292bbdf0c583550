"""The built-in dispatch suite: enough hand-written cases in every category, and expected calls the tools can take."""

import json
from collections import Counter

import pytest

from dispatchtune.data_prep.sample import Rejected, ToolCall
from dispatchtune.data_prep.validate import validate_value
from dispatchtune.eval.bfcl import literal
from dispatchtune.eval.records import tool_index
from dispatchtune.eval.records import Case, Prediction
from dispatchtune.eval.score import score
from dispatchtune.eval.suite import SUITES, load_dispatch_suite

CATEGORIES = ("tool_selection", "arguments", "parallel", "no_tool", "edge", "format", "chain")


@pytest.fixture(scope="module")
def cases():
    return load_dispatch_suite()


def expected_calls(case):
    for k, turn in enumerate(case.turns):
        for call in turn.expected:
            (name, params), = call.items()
            yield k, name, params


def test_size_categories_and_ids(cases):
    assert SUITES["dispatch"] is load_dispatch_suite
    assert len(cases) >= 60
    counts = Counter(c.category for c in cases)
    assert set(counts) == set(CATEGORIES)
    assert all(counts[c] >= 5 for c in CATEGORIES), counts
    assert len({c.id for c in cases}) == len(cases)
    assert all(Case.from_dict(json.loads(c.to_json())) == c for c in cases)


def test_every_case_offers_the_same_tools_and_fixes_today(cases):
    names = [t["function"]["name"] for t in cases[0].tools]
    assert len(names) == len(set(names)) >= 8
    for case in cases:
        assert [t["function"]["name"] for t in case.tools] == names
        assert case.messages[0]["role"] == "system" and "14 March 2025" in case.messages[0]["content"]
        assert case.messages[-1]["role"] == "user" and case.meta["date_string"] == "14 Mar 2025"
        assert all(turn.expected is not None for turn in case.turns)


def check_options(options: dict, schema: dict, field: str) -> None:
    """`{param: [acceptable values]}` against an object schema: required keys never omittable, every key declared,
    every value valid; objects (and arrays of objects) nest in the same form, as BFCL writes them."""
    for required in schema.get("required", []):
        assert required in options and "" not in options[required], (field, required)
    for key, values in options.items():
        assert key in schema["properties"] and values, (field, key)
        for value in values:
            if value != "":
                check_option(value, schema["properties"][key], f"{field}.{key}")


def check_option(value, schema: dict, field: str) -> None:
    if schema.get("type") == "object" and isinstance(value, dict):
        check_options(value, schema, field)
    elif schema.get("type") == "array" and schema["items"].get("type") == "object":
        assert isinstance(value, list), field
        for k, item in enumerate(value):
            check_option(item, schema["items"], f"{field}[{k}]")
    else:
        try:
            validate_value(value, schema, field)
        except Rejected as e:
            pytest.fail(f"{e.field}: {e.message}")


def test_expected_values_satisfy_the_tool_schemas(cases):
    for case in cases:
        schemas = {t["function"]["name"]: t["function"]["parameters"] for t in case.tools}
        for _, name, params in expected_calls(case):
            assert name in schemas, (case.id, name)
            check_options(params, schemas[name], f"{case.id}.{name}")


def test_the_scorer_passes_the_expected_calls_themselves(cases):
    predictions = {}
    for case in cases:
        tools = tool_index(case.tools)
        turns = [[ToolCall(name, {k: literal(v[0], tools[name]["properties"][k]) for k, v in params.items()
                                  if v[0] != ""}) for call in turn.expected for name, params in call.items()]
                 for turn in case.turns]
        predictions[case.id] = Prediction(case.id, [{"calls": [c.to_message()["function"] for c in t]} for t in turns])
    for row in score(cases, predictions):
        assert row["ast_match"] and row["exact_match"] and row["gating"] in (None, True), row


def test_no_tool_and_missing_information_expect_no_call(cases):
    for case in cases:
        if case.category == "no_tool" or case.id.startswith("edge-missing"):
            assert [t.expected for t in case.turns] == [[]], case.id
        elif case.category != "chain":
            assert len(case.turns) == 1 and case.turns[0].expected, case.id
    parallel = [c for c in cases if c.category == "parallel"]
    assert all(len(c.turns[0].expected) >= 2 for c in parallel)


def _occurs(value, text: str) -> bool:
    if isinstance(value, list):
        return any(_occurs(v, text) for v in value)
    if isinstance(value, dict):
        return any(_occurs(v, text) for v in value.values())
    return value != "" and str(value) in text


def test_chains_feed_results_forward(cases):
    chains = [c for c in cases if c.category == "chain"]
    assert len(chains) >= 5
    for case in chains:
        assert case.is_chain and len(case.turns[0].expected) == 1, case.id  # turn 0: only the first call
        seen = ""
        for k, turn in enumerate(case.turns):
            if k + 1 < len(case.turns):  # one result per call, named after it, before the next turn
                assert [r["name"] for r in turn.results] == [next(iter(c)) for c in turn.expected], case.id
                assert all(r["role"] == "tool" and json.loads(r["content"]) for r in turn.results)
            if k:  # every later call takes at least one value the tools returned, not one the user gave
                for call in turn.expected:
                    (name, params), = call.items()
                    assert any(_occurs(values, seen) for values in params.values()), (case.id, k, name)
            seen += "".join(r["content"] for r in turn.results)
        assert not case.turns[-1].results


def test_suite_renders_through_a_real_template(cases, tiny_models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models("qwen3"))
    for case in cases:
        prompt = tokenizer.apply_chat_template(case.messages, tools=case.tools, add_generation_prompt=True,
                                               tokenize=False)
        assert case.messages[-1]["content"] in prompt and '"name": "get_directions"' in prompt
