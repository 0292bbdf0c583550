"""The ToolBench readers (toolbench, toolllama, tooleval) on the real ToolBench files and on bad input."""

import collections
import copy
import json
from pathlib import Path

import pytest

from dispatchtune.data_prep.readers import detect, read_file
from dispatchtune.data_prep.readers.toolllama import _legacy
from dispatchtune.data_prep.sample import Rejected
from dispatchtune.data_prep.toolbench_schema import FINISH, function_name, toolbench_name
from dispatchtune.data_prep.validate import validate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TB = DATA / "toolbench"
DIRS = {"answer": "toolbench", "instruction": "toolbench", "toolllama": "toolllama", "tooleval_results": "tooleval"}
FILES = sorted(p for d in DIRS for p in (TB / d).rglob("*.json"))
# Accepted by the reader, refused by validate: the trace calls the tool's name, not one of its functions.
VALIDATE_REJECTS = {"G3_answer/21_ChatGPT_DFS_woFilter_w2.json": "unknown_tool"}

pytestmark = pytest.mark.skipif(not TB.is_dir(), reason="shared/data/toolbench is not present")


@pytest.fixture(scope="module")
def items():
    return {path: list(read_file(path, "auto")) for path in FILES}


def _records_in(path: Path) -> int:
    """Counted without the readers: an answer file is one record, the other files are arrays or objects of them."""
    return 1 if path.parent.parent.name == "answer" else len(json.loads(path.read_text(encoding="utf-8")))


def _one(path, fmt="auto"):
    (item,) = read_file(path, fmt)
    return item


def _sample(items, relative: str):
    (item,) = items[TB / relative]
    return item.sample


def _reasons(items_of):
    return collections.Counter("accepted" if i.sample else i.rejected.reason for i in items_of)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(TB)))
def test_every_file_is_read_whole(items, path):
    top = path.relative_to(TB).parts[0]
    assert detect(path) == DIRS[top]
    got = items[path]
    assert len(got) == _records_in(path)
    for item in got:
        assert (item.sample is None) != (item.rejected is None)
        if item.sample is None:
            continue
        assert item.sample.meta["format"] == DIRS[top]
        assert FINISH not in item.sample.tool_names
        expected = VALIDATE_REJECTS.get(f"{path.parent.name}/{path.name}")
        if expected:
            with pytest.raises(Rejected) as e:
                validate(item.sample)
            assert e.value.reason == expected
        else:
            validate(item.sample)


def test_outcomes_per_folder(items):
    per = {d: _reasons(i for p in FILES if p.relative_to(TB).parts[0] == d for i in items[p]) for d in DIRS}
    assert per["answer"] == {"accepted": 9, "give_up": 4, "invalid_trace": 2}
    # The two demo files: api entries without parameter lists, and an open-domain query without api_list.
    assert per["instruction"] == {"accepted": 10, "bad_shape": 2}
    assert per["toolllama"] == {"accepted": 4, "step_prefix": 12}
    tooleval = per["tooleval_results"]
    assert tooleval["truncated_source"] == 282 and tooleval["give_up"] == 304 and "accepted" not in tooleval
    # The other 14 give a final_answer that is not JSON (ChatGPT's Finish arguments with raw newlines, or cut).
    assert sum(tooleval.values()) - 282 - 304 == 14


def test_answer_trace(items):
    sample = _sample(items, "answer/G1_answer/57_ChatGPT_DFS_woFilter_w2.json")
    raw = json.loads((TB / "answer/G1_answer/57_ChatGPT_DFS_woFilter_w2.json").read_text())["answer_generation"]
    roles = [m["role"] for m in sample.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool",
                     "user", "assistant", "tool", "assistant"]
    system = raw["train_messages"][-1][0]["content"]
    # The AutoGPT prompt, cut to the RapidAPI tools it lists (its ReAct / Finish boilerplate no longer applies).
    assert sample.messages[0]["content"] == system[system.index("You have access of the following tools:"):].strip()
    assert sample.messages[0]["content"].startswith("You have access of the following tools:\n1.seo_api: ")
    assert "valid" not in sample.messages[6]  # the DFS retry prompt stays a user turn, without its marker
    calls = [m for m in sample.messages if m.get("tool_calls")]
    results = [m for m in sample.messages if m["role"] == "tool"]
    assert [c["tool_calls"][0]["id"] for c in calls] == ["call_0", "call_1", "call_2"]
    assert [(r["tool_call_id"], r["name"]) for r in results] == [
        (c["tool_calls"][0]["id"], c["tool_calls"][0]["function"]["name"]) for c in calls]
    assert calls[0]["tool_calls"][0]["function"]["arguments"] == {"query": "latest iPhone 14"}
    assert calls[2]["content"].startswith("Based on the current state")  # the thought of that call
    # The thought turn before Finish is folded: the final answer replaces it, and Finish is no call.
    assert sample.messages[-1] == {"role": "assistant", "content": json.loads(raw["final_answer"])["final_answer"]}
    assert len(sample.tools) == 10 and sample.tools[1]["function"]["parameters"] == {
        "type": "object", "required": ["query"],
        "properties": {"query": {"type": "string", "description": "", "default": "q=coffee+shop"}}}
    assert sample.meta | {"source": None} == {
        "id": "G1_answer/57_ChatGPT_DFS_woFilter_w2", "query_id": "57", "category": "G1", "format": "toolbench",
        "split_key": raw["query"], "tool_names": sample.tool_names, "index": 0, "source": None}


def test_finish_turn_with_its_own_thought(items):
    sample = _sample(items, "answer/G2_answer/102_ChatGPT_DFS_woFilter_w2.json")
    raw = json.loads((TB / "answer/G2_answer/102_ChatGPT_DFS_woFilter_w2.json").read_text())["answer_generation"]
    assert raw["train_messages"][-1][-1]["content"]  # the source's Finish turn has a thought too
    assert sample.messages[-1] == {"role": "assistant", "content": json.loads(raw["final_answer"])["final_answer"]}
    assert sample.messages[-2]["role"] == "tool"


def test_toolllama_keeps_one_trace_that_agrees_with_its_answer_file(items):
    got = items[TB / "toolllama/toolllama_G1_dfs_sample.json"]
    kept = [i for i in got if i.sample]
    assert [i.index for i in kept] == [2, 6, 10, 15]
    for item in got:
        if item.rejected:  # names the record its trace is kept as: the next kept one
            assert f"record {min(k.index for k in kept if k.index > item.index)}" in item.rejected.message
    answers = {i.sample.meta["split_key"]: i.sample for p in FILES if p.parent.name == "G1_answer" for i in items[p]
               if i.sample}
    for item in kept:
        sample, answer = item.sample, answers[item.sample.meta["split_key"]]
        assert [(c.name, c.arguments) for _, c in sample.calls()] == [(c.name, c.arguments) for _, c in answer.calls()]
        assert sample.messages[-1] == answer.messages[-1]
        assert sample.messages[0] == answer.messages[0]  # API list and ReAct format sentence cut from the prompt
        assert sample.tools == answer.tools
        assert [m["role"] for m in sample.messages] == [m["role"] for m in answer.messages]


def test_query_tools_are_the_answer_files_functions(items):
    """Same APIs, same standardised names: G3 query 1 and the answer trace of G3 query 3 use the same eleven APIs."""
    query = next(i.sample for i in items[TB / "instruction/G3_query.json"] if i.sample.meta["query_id"] == "1")
    raw = json.loads((TB / "answer/G3_answer/3_ChatGPT_DFS_woFilter_w2.json").read_text())["answer_generation"]
    functions = {f["name"] for f in raw["function"]} - {FINISH}
    assert set(query.tool_names) == functions and len(functions) == 11
    answer = {t["function"]["name"]: t for t in _sample(items, "answer/G3_answer/3_ChatGPT_DFS_woFilter_w2.json").tools}
    same = [t for t in query.tools if t == answer[t["function"]["name"]]]
    # One differs in the source itself: ToolBench's copy of /v4/sports has lost its optional `all` parameter.
    assert len(same) == 10
    assert query.messages == [{"role": "user", "content": query.meta["split_key"]}]
    assert query.meta["expected_tools"] == [  # its `relevant APIs`, as function names
        "list_of_cocktails_for_the_cocktail_db", "detailed_cocktail_recipe_by_id_for_the_cocktail_db",
        "newssearch_for_web_search"]


def test_toolbench_name():
    assert function_name("IEX Regulation SHO Threshold Securities List", "Investors Exchange (IEX) Trading") == \
        "sho_threshold_securities_list_for_investors_exchange_iex_trading"  # the last 64 characters
    assert function_name("/v4/sports/{sport}/odds", "Live Sports Odds") == "v4_sports_sport_odds_for_live_sports_odds"
    assert function_name("Retorna dados do Endereço através do CEP", "CEP Brazil") == \
        "retorna_dados_do_endere_o_atrav_s_do_cep_for_cep_brazil"
    names = ("id", "From", "1 Day", "page--Size ")
    assert [toolbench_name(n) for n in names] == ["is_id", "is_from", "get_1_day", "page_size"]


def test_react_turn_with_multiline_thought_and_input():
    value = '\nThought: Two steps.\nFirst this one.\nAction: search_for_x\nAction Input: {\n  "q": "a b",\n  "n": 2\n}'
    assert _legacy({"from": "assistant", "value": value}, "conversations[2]") == {
        "role": "assistant", "content": "Two steps.\nFirst this one.",
        "function_call": {"name": "search_for_x", "arguments": {"q": "a b", "n": 2}}}
    assert _legacy({"from": "assistant", "value": "\nThought: \nAction: f\nAction Input: {}"}, "c")["content"] is None


def _write(tmp_path, name, value):
    path = tmp_path / name
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def _toolllama():
    return json.loads((TB / "toolllama/toolllama_G1_dfs_sample.json").read_text(encoding="utf-8"))


def test_toolllama_malformed_action_input(tmp_path):
    records = _toolllama()[:3]
    bad = "\nThought: \nAction: transitaire_for_transitaires\nAction Input: {'id': 1}"
    records[2]["conversations"][4]["value"] = bad
    got = list(read_file(_write(tmp_path, "toolllama_bad.json", records)))
    assert [i.rejected.reason for i in got] == ["step_prefix", "step_prefix", "python_repr"]
    assert got[2].rejected.field == "conversations[4].value[Action Input]"
    records[2]["conversations"][4]["value"] = "Action: transitaire_for_transitaires"
    assert _one(_write(tmp_path, "toolllama_bad.json", records[2:])).rejected.field == "conversations[4].value"


def test_toolllama_groups_by_query_and_length_not_by_full_prefix(tmp_path):
    """DFS moves its retry prompt between steps, so a later step need not extend the earlier one."""
    records = _toolllama()[7:11]
    del records[3]["conversations"][6]  # the retry prompt, present in the step before
    got = list(read_file(_write(tmp_path, "toolllama_dfs.json", records)))
    assert [i.sample is not None for i in got] == [False, False, False, True]
    validate(got[3].sample)


def test_toolllama_bad_records_break_groups(tmp_path):
    records = _toolllama()[:3]
    records.insert(1, {"id": "Step 4", "conversations": []})
    got = list(read_file(_write(tmp_path, "toolllama_mixed.json", records)))
    # Record 0 is left alone, a trace that stops before Finish; record 1 is no step record; 2 and 3 are one trace.
    assert [(i.index, "ok" if i.sample else i.rejected.reason) for i in got] == [
        (0, "give_up"), (1, "bad_shape"), (2, "step_prefix"), (3, "ok")]
    assert got[1].rejected.field == "id"


def test_answer_file_with_arguments_that_are_not_json(tmp_path):
    raw = json.loads((TB / "answer/G1_answer/57_ChatGPT_DFS_woFilter_w2.json").read_text(encoding="utf-8"))
    raw["answer_generation"]["train_messages"][-1][2]["function_call"]["arguments"] = '{"query": latest iPhone}'
    item = _one(_write(tmp_path, "57_ChatGPT_DFS_woFilter_w2.json", raw))
    assert item.rejected.reason == "bad_arguments"
    assert item.rejected.field == "answer_generation.train_messages[-1][2].function_call.arguments"


def test_query_record_missing_api_fields(tmp_path):
    good = json.loads((TB / "instruction/G1_query.json").read_text(encoding="utf-8"))[0]
    no_name, no_params = copy.deepcopy(good), copy.deepcopy(good)
    del no_name["api_list"][1]["api_name"]
    del no_params["api_list"][0]["optional_parameters"]
    got = list(read_file(_write(tmp_path, "G1_query.json", [good, no_name, no_params])))
    assert got[0].sample is not None and got[0].sample.meta["category"] == "G1"
    assert [(i.rejected.reason, i.rejected.field) for i in got[1:]] == [
        ("bad_shape", "api_list[1].api_name"), ("bad_shape", "api_list[0].optional_parameters")]


def _path(*steps):
    """ToolEval's nested answer_details from (role, message) pairs."""
    node = None
    for role, message in reversed(steps):
        node = {"role": role, "message": message, "next": [node] if node else []}
    return [node]


def test_tooleval_converts_whole_steps_and_refuses_cut_ones(tmp_path):
    tools = [{"name": "vin_for_x", "description": "d", "parameters": {
        "type": "object", "properties": {"vin": {"type": "string", "example_value": "W1"}}, "required": ["vin"],
        "optional": []}}, {"name": FINISH, "parameters": {"type": "object", "properties": {}}}]
    final = json.dumps({"return_type": "give_answer", "final_answer": "It is a BMW."})
    response = json.dumps({"make": "BMW", "model": "X3 20D A", "year": 2011, "engine": "N47T"})
    call = {"name": "vin_for_x", "arguments": '{"vin": "W1"}', "response": response}
    finish = str({"name": FINISH, "arguments": final, "response": ""})[:100]  # cut, but final_answer is whole

    def entry(call_message):
        steps = _path(("system", ""), ("user", "Decode W1, plea"), ("tool", call_message), ("tool", finish))
        return {"query": "Decode W1, please.", "available_tools": tools,
                "answer": {"method": "CoT", "total_steps": 2, "final_answer": final, "answer_details": steps}}

    path = _write(tmp_path, "G1_tool.json", {"7": entry(call), "8": entry(str(call)), "9": entry(str(call)[:100])})
    whole, from_repr, truncated = read_file(path)
    for item in (whole, from_repr):
        validate(item.sample)
        assert item.sample.messages == [
            {"role": "user", "content": "Decode W1, please."},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": "vin_for_x", "arguments": {"vin": "W1"}}}]},
            {"role": "tool", "tool_call_id": "call_0", "name": "vin_for_x", "content": response},
            {"role": "assistant", "content": "It is a BMW."}]
        assert item.sample.tool_names == ["vin_for_x"] and item.sample.meta["category"] == "G1_tool"
    assert (whole.record_id, whole.index, from_repr.record_id, from_repr.index) == ("7", 0, "8", 1)
    assert truncated.rejected.reason == "truncated_source"
    assert truncated.rejected.field == "answer.answer_details[0].next[0].next[0].message"


def test_sniffs_leave_other_formats_alone():
    from dispatchtune.data_prep.readers import tooleval, toolbench, toolllama

    examples = json.loads((DATA / "formats" / "examples.json").read_text(encoding="utf-8"))
    for record in [*examples.values(), examples]:
        assert not any(m.sniff(record) for m in (toolbench, toolllama, tooleval))
