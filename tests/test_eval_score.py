"""Scoring: each BFCL rule by name, every category, chains, and every way a prediction or a file can be wrong."""

import json

import pytest

from dispatchtune.data_prep.sample import function_tool
from dispatchtune.cli import main
from dispatchtune.eval.records import Case, Prediction, Turn
from dispatchtune.eval.api import score_files
from dispatchtune.eval.score import score_case

WEATHER = function_tool("get_weather", "d", {"type": "object", "properties": {
    "city": {"type": "string"}, "days": {"type": "integer"}, "lat": {"type": "number"}, "metric": {"type": "boolean"},
    "tags": {"type": "array", "items": {"type": "string"}}, "nums": {"type": "array", "items": {"type": "integer"}},
    "filters": {"type": "object", "properties": {"kind": {"type": "string"}, "max": {"type": "integer"}}},
    "stops": {"type": "array", "items": {"type": "object"}},
    "mode": {"type": "string"}}, "required": ["city"]})
TIME = function_tool("get_time", "d", {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]})


def case(*expected, tools=(WEATHER,), category="simple"):
    """A one-turn case expecting these calls (`None`: any call)."""
    turn = Turn(None) if expected == (None,) else Turn(list(expected))
    return Case("c1", category, [{"role": "user", "content": "Weather in Paris?"}], list(tools), [turn])


def weather(**params):
    return {"get_weather": {"city": ["Paris"], **params}}


def call(name="get_weather", **arguments):
    return {"name": name, "arguments": arguments}


def verdict(c: Case, *calls, **prediction) -> dict:
    line = {"id": c.id, **(prediction or {"calls": list(calls)})}
    return score_case(c, Prediction.from_line(line))


def ast(c: Case, *calls) -> bool:
    return verdict(c, *calls)["ast_match"]


# ---- BFCL's rules, one test each ----

def test_rule_name_must_match():
    row = verdict(case(weather()), call("get_time", city="Paris"))
    assert not row["ast_match"] and not row["tool_selection"]
    assert row["reason"] == "called 'get_time', expected 'get_weather'"


def test_rule_required_parameter_must_be_present():
    c = case({"get_weather": {"city": ["Paris", ""]}})
    assert not ast(c, call())
    assert "missing required argument 'city'" in verdict(c, call())["reason"]


def test_rule_parameter_outside_the_schema_is_rejected():
    row = verdict(case(weather()), call(city="Paris", color="red"))
    assert not row["ast_match"] and "unexpected argument 'color' (not in the tool's schema)" in row["reason"]


def test_rule_parameter_outside_the_ground_truth_is_rejected():
    row = verdict(case(weather()), call(city="Paris", days=3))
    assert not row["ast_match"] and "unexpected argument 'days' (not in the expected call)" in row["reason"]


def test_rule_int_is_accepted_for_float_but_exact_match_sees_the_difference():
    row = verdict(case(weather(lat=[5.0])), call(city="Paris", lat=5))
    assert row["ast_match"] and row["arguments"] and not row["exact_match"]


def test_rule_string_or_float_is_not_an_integer():
    c = case(weather(days=[10]))
    assert ast(c, call(city="Paris", days=10))
    row = verdict(c, call(city="Paris", days="10"))
    assert not row["ast_match"] and "argument 'days': expected integer, got string '10'" in row["reason"]
    assert not ast(c, call(city="Paris", days=10.0))


def test_rule_boolean_is_not_an_integer_nor_the_reverse():
    assert not ast(case(weather(days=[1])), call(city="Paris", days=True))
    assert not ast(case(weather(metric=[True])), call(city="Paris", metric=1))
    assert not ast(case(weather(metric=[True])), call(city="Paris", metric="true"))


def test_rule_strings_compare_lower_cased_without_spaces_and_punctuation():
    c = case(weather(mode=["New York, NY"]))
    for same in ("new york ny", "NEW-YORK_NY", "New.York/NY", "new*york^ny", "NewYork,NY"):
        assert ast(c, call(city="Paris", mode=same)), same
    for other in ("New York!", "New Yorks NY", "NY New York"):
        assert not ast(c, call(city="Paris", mode=other)), other
    row = verdict(case(weather()), call(city="paris "))
    assert row["ast_match"] and not row["exact_match"]  # BFCL's verdict forgives; the exact metric does not
    assert "not exactly the expected calls" in row["reason"]


def test_rule_a_wrong_string_names_the_argument_and_the_accepted_values():
    row = verdict(case(weather()), call(city="Lyon"))
    assert row["reason"] == "get_weather: argument 'city': 'Lyon' not in ['Paris']"


def test_rule_lists_are_order_sensitive_and_normalise_their_strings():
    c = case(weather(tags=[["Sunny Day", "rain"]]))
    assert ast(c, call(city="Paris", tags=["sunny day", "RAIN"]))
    assert not ast(c, call(city="Paris", tags=["rain", "Sunny Day"]))
    assert not ast(c, call(city="Paris", tags=["Sunny Day"]))


def test_rule_list_items_are_type_checked():
    c = case(weather(nums=[[1, 2]]))
    assert ast(c, call(city="Paris", nums=[1, 2]))
    assert not ast(c, call(city="Paris", nums=["1", 2]))


def test_rule_nested_dicts_compare_per_key():
    c = case(weather(filters=[{"kind": ["Rain"], "max": [3, ""]}]))
    assert ast(c, call(city="Paris", filters={"kind": "rain", "max": 3}))
    assert ast(c, call(city="Paris", filters={"kind": "rain"}))  # "" among a key's values: it may be left out
    assert not ast(c, call(city="Paris", filters={"max": 3}))  # a key without "": required
    assert not ast(c, call(city="Paris", filters={"kind": "rain", "max": 3, "extra": 1}))
    assert not ast(c, call(city="Paris", filters={"kind": "rain", "max": 4}))


def test_rule_lists_of_dicts_compare_dict_by_dict_in_order():
    c = case(weather(stops=[[{"at": ["Lyon"]}, {"at": ["Nice"]}]]))
    assert ast(c, call(city="Paris", stops=[{"at": "lyon"}, {"at": "Nice"}]))
    assert not ast(c, call(city="Paris", stops=[{"at": "Nice"}, {"at": "Lyon"}]))


def test_rule_empty_string_marks_an_optional_parameter():
    c = case(weather(days=[3, ""]))
    assert ast(c, call(city="Paris")) and ast(c, call(city="Paris", days=3))
    row = verdict(case(weather(days=[3])), call(city="Paris"))
    assert not row["ast_match"] and "missing argument 'days'" in row["reason"]


def test_rule_variable_answers_compare_by_their_own_type():
    """An answer of another type than the schema's (a string for an integer) is a variable: equality decides."""
    c = case(weather(days=["$n"]))
    assert ast(c, call(city="Paris", days="$n")) and not ast(c, call(city="Paris", days=3))


def test_rule_parallel_calls_match_in_any_order_with_equal_count():
    c = case(weather(), {"get_weather": {"city": ["Oslo"]}}, category="parallel")
    assert ast(c, call(city="Oslo"), call(city="Paris")) and ast(c, call(city="Paris"), call(city="Oslo"))
    row = verdict(c, call(city="Paris"), call(city="Oslo"), call(city="Rome"))
    assert not row["ast_match"] and row["reason"].startswith("expected 2 calls, got 3")
    assert not row["tool_selection"] and row["arguments"]  # every expected call was made; the extra one is not theirs
    assert not ast(c, call(city="Paris"), call(city="Paris"))


def test_rule_parallel_matching_is_greedy_like_bfcl():
    """Each expected call takes the first unmatched call that passes, so a call that fits two answers can be taken
    by the wrong one; BFCL fails this pair, and so do we (agreement over cleverness)."""
    c = case({"get_weather": {"city": ["Paris"], "days": [1, 2]}}, {"get_weather": {"city": ["Paris"], "days": [1]}},
             category="parallel")
    assert not ast(c, call(city="Paris", days=1), call(city="Paris", days=2))
    assert ast(c, call(city="Paris", days=2), call(city="Paris", days=1))


def test_rule_multiple_expects_exactly_one_call():
    c = case(weather(), tools=(WEATHER, TIME), category="multiple")
    assert ast(c, call(city="Paris"))
    assert not ast(c, call(city="Paris"), call("get_time", zone="CET"))
    assert not ast(c)


def test_rule_parallel_multiple_mixes_functions_in_any_order():
    c = case(weather(), {"get_time": {"zone": ["CET"]}}, tools=(WEATHER, TIME), category="parallel_multiple")
    assert ast(c, call("get_time", zone="cet"), call(city="Paris"))
    row = verdict(c, call("get_time", zone="UTC"), call(city="Paris"))
    assert not row["ast_match"] and row["tool_selection"] and not row["arguments"]
    assert row["reason"] == "expected call 2 ('get_time'): get_time: argument 'zone': 'UTC' not in ['CET']"


def test_rule_irrelevance_passes_iff_no_call_even_when_the_output_does_not_decode():
    c = case(tools=(WEATHER,), category="irrelevance")
    assert verdict(c)["ast_match"] and verdict(c)["exact_match"] and verdict(c)["arguments"] is None
    assert not ast(c, call(city="Paris"))
    row = verdict(c, text="<tool_call>{not json</tool_call>")  # BFCL: output that does not decode is no call
    assert row["ast_match"] and not row["parsed"] and "does not decode" in row["reason"]


def test_rule_relevance_passes_iff_some_call_and_tool_selection_checks_known_names():
    c = case(None, category="relevance")
    assert ast(c, call(city="Nowhere", bogus=1)) and not ast(c)
    c.turns[0].names = ["get_time"]
    row = verdict(c, call(city="Paris"))
    assert row["ast_match"] and not row["tool_selection"] and row["exact_match"] is None
    assert row["reason"] == "called ['get_weather'], not among the expected tools ['get_time']"


def test_rule_untyped_parameters_compare_as_bfcl_any_and_type_lists_do_not_crash():
    """BFCL's `any` (no type in JSON Schema) checks as a string; xLAM's `Optional[int]` (a type list) likewise,
    so a value of the expected values' own type is compared by equality."""
    t = function_tool("f", "d", {"type": "object", "properties": {"a": {}, "b": {"type": ["integer", "null"]}}})
    c = case({"f": {"a": ["x y"], "b": [3]}}, tools=(t,))
    assert ast(c, call("f", a="X-Y", b=3)) and not ast(c, call("f", a="x y", b="3"))
    assert ast(case({"f": {"b": [None]}}, tools=(t,)), call("f", b=None))


# ---- text predictions (parsed by eval.parse) ----

def test_text_predictions_are_parsed_in_any_format_the_parser_knows():
    c = case(weather(days=[3]))
    hermes = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>'
    assert verdict(c, text=hermes)["ast_match"]
    assert verdict(c, text='[get_weather(city="Paris", days=3)]')["ast_match"]
    for garbage in ("", "   ", '{"name": "get_weather", "arguments": ', "<tool_call>oops"):
        row = verdict(c, text=garbage)
        assert not row["parsed"] and not row["ast_match"] and row["reason"].startswith("output does not decode"), garbage
    row = verdict(c, text="It is sunny in Paris.")
    assert row["parsed"] and not row["ast_match"] and row["reason"] == "expected 1 call, got 0 (none)"


def test_arguments_given_as_a_json_string_are_read_and_bad_ones_do_not_decode():
    c = case(weather())
    assert verdict(c, {"name": "get_weather", "arguments": '{"city": "Paris"}'})["ast_match"]
    row = verdict(c, {"name": "get_weather", "arguments": "{'city': 'Paris'}"})
    assert not row["parsed"] and not row["ast_match"]


# ---- chains ----

def chain_case():
    """Turn 0 finds the agency's id; turn 1 uses it; links say so, as eval cases writes them."""
    find = function_tool("find", "d", {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]})
    get = function_tool("get", "d", {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]})
    result = {"role": "tool", "tool_call_id": "call_0", "name": "find", "content": '{"id": "AG-7781"}'}
    return Case("ch", "chain", [{"role": "user", "content": "Details of Gondrand?"}], [find, get],
                [Turn([{"find": {"q": ["Gondrand"]}}], [result]), Turn([{"get": {"id": ["AG-7781"]}}])],
                {"links": [{"value": "AG-7781", "from_turn": 0, "turn": 1, "call": "get", "param": "id"}]})


def chain(*turns):
    return score_case(chain_case(), Prediction.from_line({"id": "ch", "turns": [{"calls": t} for t in turns]}))


def test_chain_passes_when_each_turn_makes_its_calls_with_the_returned_value():
    row = chain([call("find", q="gondrand")], [call("get", id="AG-7781")])
    assert all(row[m] for m in ("parsed", "tool_selection", "arguments", "ast_match", "order", "gating"))
    assert not row["exact_match"] and row["reason"].startswith("turn 0: not exactly")


def test_chain_call_before_its_turn_fails_order_and_a_made_up_value_fails_gating():
    row = chain([call("find", q="Gondrand"), call("get", id="AG-1")], [call("get", id="AG-7781")])
    assert not row["order"] and not row["gating"] and not row["ast_match"]
    row = chain([call("find", q="Gondrand")], [call("get", id="AG-0000")])
    assert row["order"] and not row["gating"] and not row["ast_match"]
    assert row["reason"] == ("turn 1: get: argument 'id': 'AG-0000' not in ['AG-7781']; "
                             "turn 1: get argument 'id' = 'AG-0000' is no value the tools had returned")
    row = chain([call("get", id="AG-7781")], [call("get", id="ag 7781")])  # the value before the tool returned it
    assert not row["order"] and not row["gating"]
    assert row["reason"] == ("turn 0: called 'get', expected 'find'; turn 0: called ['get'] before its turn; "
                             "turn 0: get argument 'id' = 'AG-7781' is no value the tools had returned")


def test_chain_with_too_few_predicted_turns_fails_with_a_reason():
    row = score_case(chain_case(), Prediction.from_line({"id": "ch", "calls": [call("find", q="Gondrand")]}))
    assert not row["ast_match"] and not row["order"] and row["reason"] == "no prediction for turn 1 of this 2-turn chain"


# ---- malformed predictions and files ----

def write(path, lines):
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return path


def test_malformed_predictions_unknown_ids_and_missing_ones_are_failures_with_reasons(tmp_path):
    cases = [Case(f"c{i}", "simple", [{"role": "user", "content": "q"}], [WEATHER], [Turn([weather()])]) for i in range(6)]
    cases.append(Case("no_turns", "simple_python", [{"role": "user", "content": "q"}], [WEATHER], []))
    cases_file = write(tmp_path / "cases.jsonl", [c.to_json() for c in cases])
    preds = write(tmp_path / "p.jsonl", [
        {"id": "c0", "calls": [call(city="Paris")]},
        {"id": "c1", "calls": "get_weather"},  # calls not a list
        {"id": "c2", "answer": "x"},  # neither calls nor text
        {"id": "c3", "turns": {"calls": []}},  # turns not a list
        {"id": "c4", "calls": [{"arguments": {}}]},  # a call without a name: the model's output does not decode
        "this is not json", ["a", "list"], {"calls": []},  # lines that are no prediction at all
        {"id": "c0", "calls": []},  # a repeated id: the first counts
        {"id": "ghost", "calls": []},
        {"id": "no_turns", "calls": []},
    ])
    report = score_files(cases_file, preds, tmp_path / "out")
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "cases.jsonl").read_text().splitlines())}
    assert rows["c0"]["ast_match"]
    assert rows["c1"]["reason"] == "malformed prediction: calls must be a list, got str"
    assert rows["c2"]["reason"] == "malformed prediction: a turn needs calls or text"
    assert rows["c3"]["reason"] == "malformed prediction: turns must be a list, got dict"
    assert not rows["c4"]["parsed"] and "no function name" in rows["c4"]["reason"]
    assert rows["c5"]["reason"] == "no prediction" and not rows["c5"]["ast_match"]
    assert rows["no_turns"]["reason"].startswith("no expected calls")
    for r in rows.values():
        if r["id"] != "c0":
            assert r["ast_match"] is False and r["reason"]
    p = report["predictions"]
    assert (p["lines"], p["malformed_lines"], p["duplicate_ids"], p["unknown_ids"], p["missing"]) == (11, 3, 1, 1, 1)
    assert report["overall"]["metrics"]["ast_match"] == {**report["overall"]["metrics"]["ast_match"], "n": 7, "passed": 1}


@pytest.mark.parametrize("problem", ["missing", "not_jsonl", "empty", "bfcl_file", "bad_case"])
def test_a_wrong_file_is_one_line_and_exit_2(tmp_path, capsys, problem):
    good_case = Case("c0", "simple", [{"role": "user", "content": "q"}], [WEATHER], [Turn([weather()])]).to_json()
    cases = write(tmp_path / "cases.jsonl", [good_case])
    preds = write(tmp_path / "p.jsonl", [{"id": "c0", "calls": []}])
    if problem == "missing":
        preds = tmp_path / "nope.jsonl"
    elif problem == "not_jsonl":
        preds.write_text(json.dumps([{"id": "c0", "calls": []}], indent=2))
    elif problem == "empty":
        preds.write_text("")
    elif problem == "bfcl_file":
        write(cases, [{"id": "simple_python_0", "question": [[{"role": "user", "content": "q"}]], "function": []}])
    else:
        write(cases, [good_case, '{"id": "c1", "turns": [{"expected": [{"f": {"x": 1}}]}]}'])
    code = main(["eval", "score", "--cases", str(cases), "--predictions", str(preds), "--out", str(tmp_path / "o"),
                 "--no-wandb"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("dispatchtune eval: error:"), err
    expected = {"missing": "not found", "not_jsonl": "holds no predictions", "empty": "holds no predictions",
                "bfcl_file": "--format bfcl", "bad_case": "line 2: not a case"}[problem]
    assert expected in err[0]


def test_score_refuses_to_overwrite_its_cases_file(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    cases = write(out / "cases.jsonl", [Case("c0", "simple", [], [WEATHER], [Turn([weather()])]).to_json()])
    preds = write(tmp_path / "p.jsonl", [{"id": "c0", "calls": []}])
    code = main(["eval", "score", "--cases", str(cases), "--predictions", str(preds), "--out", str(out), "--no-wandb"])
    assert code == 2 and "would overwrite the cases file" in capsys.readouterr().err
