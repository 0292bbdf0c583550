"""Cases from held-out samples (real ones through prep, and hand-made chains) and from BFCL's files."""

import json
from collections import Counter
from pathlib import Path

import pytest

from dispatchtune.data_prep.prep import PrepConfig, prep
from dispatchtune.data_prep.sample import Sample, function_tool, read_jsonl
from dispatchtune.cli import main
from dispatchtune.errors import UserError
from dispatchtune.eval.bfcl import read_bfcl
from dispatchtune.eval.records import Prediction, exact
from dispatchtune.eval.heldout import heldout_cases
from dispatchtune.eval.score import iter_cases, score_case

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> Path:
    """Every sample of data/sample held out (a real prep run), so each shape reaches eval."""
    out = tmp_path_factory.mktemp("prep")
    inputs = sorted(SAMPLE.glob("*.json")) + sorted((SAMPLE / "formats").glob("*"))
    prep(PrepConfig(inputs, out, heldout_frac=0.99, progress=False))
    return out / "heldout.jsonl"


def cases_of(samples):
    skipped = Counter()
    return list(heldout_cases(samples, skipped)), skipped


def test_real_heldout_gives_one_case_per_assistant_turn_with_the_sample_calls(heldout):
    samples = list(read_jsonl(heldout))
    cases, skipped = cases_of(samples)
    by_id = {c.id: c for c in cases}
    assert len(by_id) == len(cases)  # ids are unique
    assert skipped == {"BFCL prompts without their possible answers (use --format bfcl --answers)": 1}
    turn_cases = [c for c in cases if c.category not in ("chain", "relevance", "irrelevance")]
    assistant_turns = sum(m["role"] == "assistant" for s in samples for m in s.messages)
    assert len(turn_cases) == assistant_turns
    for s in samples:
        base = s.meta["id"] or f"{Path(s.meta['source']).name}:{s.meta['index']}"
        turns = [(i, m) for i, m in enumerate(s.messages) if m["role"] == "assistant"]
        for k, (i, m) in enumerate(turns):
            c = by_id[f"{base}#{k}"]
            assert c.messages == s.messages[:i] and c.tools == s.tools
            calls = [c_ for _, c_ in s.calls() if _ == i]
            assert c.turns[0].expected == exact(calls, s.tools)
            assert c.category == ("no_call" if not calls else ("simple" if len(s.tools) == 1 else "multiple")
                                  if len(calls) == 1 else ("parallel" if len(s.tools) == 1 else "parallel_multiple"))
    assert Counter(c.category for c in cases) == {"multiple": 15, "no_call": 9, "relevance": 5, "simple": 4,
                                                  "parallel": 1, "chain": 1}


def test_real_heldout_chain_and_prompt_cases(heldout):
    cases, _ = cases_of(read_jsonl(heldout))
    chains = [c for c in cases if c.category == "chain"]
    # G1_answer_10: the agency id comes back from the list call and is passed to the detail call.
    assert [c.id for c in chains] == ["sample/G1_answer_10_DFS#0-1"]
    chain = chains[0]
    assert chain.meta["links"] == [{"value": "ACT_AGENCE_CALEDONIENNE_DE_TRANSIT", "from_turn": 0, "turn": 1,
                                    "call": "transitaire_for_transitaires", "param": "is_id"}]
    assert [m["role"] for m in chain.messages] == ["system", "user"]
    assert [m["role"] for m in chain.turns[0].results] == ["tool"] and chain.turns[1].results == []
    # G1_answer_59's later searches use the user's words, and its results are empty: no chain.
    assert not any(c.id.startswith("sample/G1_answer_59_DFS#") and c.is_chain for c in cases)
    relevance = [c for c in cases if c.category == "relevance"]
    assert relevance and all(c.turns[0].expected is None and c.turns[0].names for c in relevance)
    assert relevance[0].turns[0].names == ["checkhealth_for_squake", "projects_for_squake"]


def test_the_sample_own_calls_pass_every_real_case(heldout, tmp_path):
    """Cases are satisfiable: replaying the held-out calls scores 100% (exact answers survive BFCL's checker)."""
    cases, _ = cases_of(read_jsonl(heldout))
    for c in cases:
        turns = [{"calls": [{"name": n, "arguments": _first(p)} for a in t.expected or [] for n, p in a.items()]}
                 for t in c.turns]
        if c.turns[0].expected is None:
            turns = [{"calls": [{"name": c.turns[0].names[0], "arguments": {}}]}]
        row = score_case(c, Prediction(c.id, turns))
        assert row["ast_match"] and row["tool_selection"], (c.id, row)
        assert False not in (row["exact_match"], row["order"], row["gating"]), (c.id, row)


def _first(params):
    return {k: {kk: vv[0] for kk, vv in v[0].items()} if isinstance(v[0], dict) else v[0] for k, v in params.items()}


def test_cases_cli_writes_cases_that_read_back_and_ids_are_deterministic(heldout, tmp_path, capsys):
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for out in outs:
        assert main(["eval", "cases", "--from", str(heldout), "--out", str(out)]) == 0
    assert outs[0].read_text() == outs[1].read_text()
    assert "eval cases: 35 cases" in capsys.readouterr().out
    assert [c.id for c in iter_cases(outs[0])][:2] == ["sample/G1_answer_10_DFS#0", "sample/G1_answer_10_DFS#1"]


def test_cases_cli_wrong_input_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("[1, 2]\n")
    for argv in (["--from", str(tmp_path / "nope.jsonl")], ["--from", str(bad)]):
        assert main(["eval", "cases", *argv, "--out", str(tmp_path / "c.jsonl")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "error:" in err[0]
    assert not list(tmp_path.glob("*c.jsonl*"))  # neither the output nor its temporary


# ---- hand-made samples ----

def tool(name, **props):
    return function_tool(name, "d", {"type": "object", "properties": {k: {"type": t} for k, t in props.items()},
                                     "required": list(props)})


def assistant(*calls, content=None):
    return {"role": "assistant", "content": content, "tool_calls": [
        {"id": f"call_{name}", "type": "function", "function": {"name": name, "arguments": args}} for name, args in calls]}


def result(name, content):
    return {"role": "tool", "tool_call_id": f"call_{name}", "name": name, "content": content}


TOOLS = [tool("search", q="string"), tool("details", ref="string"), tool("weather", lat="number", lon="number"),
         tool("book", ref="string", seats="integer")]


def sample(*messages, id="s", tools=TOOLS, **meta):
    return Sample(list(messages), tools, {"id": id, **meta})


def test_chain_links_a_value_first_returned_by_a_tool():
    s = sample({"role": "user", "content": "Find the Gondrand agency and its details."},
               assistant(("search", {"q": "Gondrand"})),
               result("search", '{"response": "[{\\"ref\\": \\"AG-7781\\", \\"name\\": \\"Gondrand\\"}]"}'),
               assistant(("details", {"ref": "AG-7781"})),
               result("details", '{"phone": "555"}'),
               {"role": "assistant", "content": "Their phone is 555."})
    cases, _ = cases_of([s])
    assert [c.id for c in cases] == ["s#0", "s#1", "s#2", "s#0-1"]
    chain = cases[-1]
    assert chain.category == "chain" and chain.messages == s.messages[:1]
    assert chain.turns[0].expected == [{"search": {"q": ["Gondrand"]}}] and chain.turns[0].results == [s.messages[2]]
    assert chain.turns[1].expected == [{"details": {"ref": ["AG-7781"]}}] and chain.turns[1].results == []
    assert chain.meta["links"] == [{"value": "AG-7781", "from_turn": 0, "turn": 1, "call": "details", "param": "ref"}]


def test_no_chain_when_the_value_was_in_the_user_text_or_is_too_short_or_calls_are_not_consecutive():
    in_user_text = sample({"role": "user", "content": "Details of AG-7781 please"},
                          assistant(("search", {"q": "x"})), result("search", '{"ref": "AG-7781"}'),
                          assistant(("details", {"ref": "AG-7781"})), result("details", "ok"))
    short = sample({"role": "user", "content": "hi"},
                   assistant(("search", {"q": "x"})), result("search", '{"ref": "A7"}'),
                   assistant(("details", {"ref": "A7"})), result("details", "ok"))
    user_between = sample({"role": "user", "content": "hi"},
                          assistant(("search", {"q": "x"})), result("search", '{"ref": "AG-7781"}'),
                          {"role": "assistant", "content": "Found it. Details?"}, {"role": "user", "content": "yes"},
                          assistant(("details", {"ref": "AG-7781"})), result("details", "ok"))
    for s in (in_user_text, short, user_between):
        assert not [c for c in cases_of([s])[0] if c.is_chain], s.messages


def test_chain_spans_only_the_linked_turns_and_links_numbers_and_escaped_text():
    s = sample({"role": "user", "content": "Weather where the Café Zoé is, then book it."},
               assistant(("search", {"q": "news"})), result("search", "[]"),
               assistant(("search", {"q": "Café Zoé"})),
               result("search", '{"name": "Caf\\u00e9 Zo\\u00e9 Paris", "lat": 48.8566, "lon": 2.3522}'),
               assistant(("weather", {"lat": 48.8566, "lon": 2.3522}), ("details", {"ref": "Café Zoé Paris"})),
               result("weather", "sunny"), result("details", "{}"),
               assistant(("book", {"ref": "x1", "seats": 2})), result("book", "done"))
    chain = [c for c in cases_of([s])[0] if c.is_chain]
    assert [c.id for c in chain] == ["s#1-2"]  # turn 0 and turn 3 use nothing returned: left out
    links = chain[0].meta["links"]
    assert [(l["value"], l["from_turn"], l["turn"], l["param"]) for l in links] == [
        ("48.8566", 0, 1, "lat"), ("2.3522", 0, 1, "lon"), ("Café Zoé Paris", 0, 1, "ref")]
    assert chain[0].messages == s.messages[:3]
    assert len(chain[0].turns) == 2 and chain[0].turns[0].results == [s.messages[4]]


def test_categories_ids_and_prompt_samples():
    one = [tool("search", q="string")]
    parallel = sample({"role": "user", "content": "a and b"}, assistant(("search", {"q": "a"}), ("search", {"q": "b"})),
                      result("search", "1"), result("search", "2"), id=None, tools=one, source="/x/data.json", index=4)
    mixed = sample({"role": "user", "content": "q"}, assistant(("search", {"q": "a"}), ("book", {"ref": "r", "seats": 1})),
                   result("search", "1"), result("book", "2"), id="dup")
    again = sample({"role": "user", "content": "q2"}, {"role": "assistant", "content": "hello"}, id="dup")
    irrelevant = sample({"role": "user", "content": "Tell me a joke"}, id="x1", category="irrelevance")
    query = sample({"role": "user", "content": "Book it"}, id="q1", expected_tools=["book"], format="toolbench")
    bfcl_prompt = sample({"role": "user", "content": "area?"}, id="simple_python_0", format="bfcl", category="simple_python")
    cases, skipped = cases_of([parallel, mixed, again, irrelevant, query, bfcl_prompt])
    got = {c.id: (c.category, c.turns[0].expected, c.turns[0].names) for c in cases}
    assert got == {
        "data.json:4#0": ("parallel", [{"search": {"q": ["a"]}}, {"search": {"q": ["b"]}}], None),
        "dup#0": ("parallel_multiple", [{"search": {"q": ["a"]}}, {"book": {"ref": ["r"], "seats": [1]}}], None),
        "dup~2#0": ("no_call", [], None),
        "x1#0": ("irrelevance", [], None),
        "q1#0": ("relevance", None, ["book"]),
    }
    assert sum(skipped.values()) == 1


def test_object_arguments_are_written_in_bfcl_per_key_form_and_pass_the_checker():
    t = function_tool("find", "d", {"type": "object", "properties": {
        "filters": {"type": "object"}, "stops": {"type": "array", "items": {"type": "object"}}, "raw": {}}})
    args = {"filters": {"kind": "rain", "max": 3}, "stops": [{"at": "Lyon"}], "raw": {"a": 1}}
    s = sample({"role": "user", "content": "q"}, assistant(("find", args)), result("find", "ok"), tools=[t])
    c = cases_of([s])[0][0]
    assert c.turns[0].expected == [{"find": {"filters": [{"kind": ["rain"], "max": [3]}], "stops": [[{"at": ["Lyon"]}]],
                                             "raw": [{"a": 1}]}}]
    row = score_case(c, Prediction(c.id, [{"calls": [{"name": "find", "arguments": args}]}]))
    assert row["ast_match"] and row["exact_match"]


# ---- BFCL files ----

def bfcl_files(tmp_path, examples):
    """A test file of four categories and the possible answer of the simple one (from FORMATS' example record)."""
    test = examples["bfcl_test"]
    records = [test, *({**test, "id": i} for i in ("irrelevance_3", "live_relevance_1-1-0", "simple_python_9"))]
    tests = tmp_path / "BFCL_v4_mixed.json"
    tests.write_text("".join(json.dumps(r) + "\n" for r in records))
    answers = tmp_path / "possible_answer.json"
    answers.write_text(json.dumps(examples["bfcl_possible_answer"]) + "\n")
    return tests, answers


@pytest.fixture
def examples(shared_data):
    return json.loads((shared_data / "formats" / "examples.json").read_text())


def test_bfcl_files_become_cases_and_their_reference_output_passes(tmp_path, examples):
    tests, answers = bfcl_files(tmp_path, examples)
    cases = {c.id: c for c in read_bfcl([tests], [answers])}
    simple = cases["simple_python_0"]
    assert simple.category == "simple_python"
    assert simple.turns[0].expected == examples["bfcl_possible_answer"]["ground_truth"]
    assert simple.tools[0]["function"]["parameters"]["type"] == "object"  # Gorilla types mapped, as prep maps them
    assert cases["irrelevance_3"].turns[0].expected == [] and cases["live_relevance_1-1-0"].turns[0].expected is None
    assert cases["simple_python_9"].turns == []  # no answer: scoring fails it by name
    output = [{"name": n, "arguments": a} for call in examples["bfcl_decoded_model_output"] for n, a in call.items()]
    assert score_case(simple, Prediction("simple_python_0", [{"calls": output}]))["ast_match"]


def test_bfcl_score_cli_reads_test_and_answer_files_directly(tmp_path, examples, capsys):
    tests, answers = bfcl_files(tmp_path, examples)
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "simple_python_0", "text": "[calculate_triangle_area(base=10, height=5)]"}) + "\n"
                     + json.dumps({"id": "irrelevance_3", "text": "I cannot help with that."}) + "\n")
    assert main(["eval", "score", "--format", "bfcl", "--cases", str(tests), "--answers", str(answers),
                 "--predictions", str(preds), "--out", str(tmp_path / "o"), "--no-wandb"]) == 0
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "o" / "cases.jsonl").read_text().splitlines())}
    assert rows["simple_python_0"]["ast_match"] and rows["irrelevance_3"]["ast_match"]
    assert rows["live_relevance_1-1-0"]["reason"] == "no prediction"
    assert main(["eval", "cases", "--format", "bfcl", "--from", str(tests), "--answers", str(answers),
                 "--out", str(tmp_path / "c.jsonl")]) == 0
    assert len(list(iter_cases(tmp_path / "c.jsonl"))) == 4


def test_bfcl_without_any_matching_answer_is_a_user_error(tmp_path, examples):
    tests, answers = bfcl_files(tmp_path, examples)
    with pytest.raises(UserError, match="need possible answers, but no --answers given"):
        list(read_bfcl([tests], []))
    with pytest.raises(UserError, match="not a BFCL possible-answer record"):
        list(read_bfcl([tests], [tests]))


def test_bfcl_java_cases_show_source_text_parameters_and_keep_the_types(tmp_path, examples):
    """As BFCL prompts them: every parameter a string, its Java type in the description; scoring converts the text."""
    java = tmp_path / "BFCL_v4_simple_java.json"
    java.write_text(json.dumps({**examples["bfcl_test"], "id": "simple_java_0"}) + "\n")
    answer = tmp_path / "answer.json"
    answer.write_text(json.dumps({**examples["bfcl_possible_answer"], "id": "simple_java_0"}) + "\n")
    case, = read_bfcl([java], [answer])
    function = case.tools[0]["function"]
    assert function["description"].endswith("Note that the provided function is in Java 8 SDK syntax.")
    assert {p["type"] for p in function["parameters"]["properties"].values()} == {"string"}
    assert case.meta["language"] == "java" and case.meta["types"][function["name"]]["properties"]
    base = "This is Java integer type parameter in string representation."
    assert function["parameters"]["properties"]["base"]["description"].endswith(base)
    name = function["name"]
    for args, passes in (({"base": "10", "height": "5"}, True), ({"base": "10", "height": "5", "unit": "units"}, True),
                         ({"base": 10, "height": "5"}, False), ({"base": "10.0", "height": "5"}, False)):
        row = score_case(case, Prediction(case.id, [{"calls": [{"name": name, "arguments": args}]}]))
        assert row["ast_match"] is passes, (args, row["reason"])
    assert "not a string of source text" in score_case(case, Prediction(case.id, [{"calls": [
        {"name": name, "arguments": {"base": 10, "height": "5"}}]}]))["reason"]


def test_a_bfcl_record_that_cannot_be_a_case_is_reported_and_the_rest_are_cases(tmp_path, examples):
    tests, answers = bfcl_files(tmp_path, examples)
    broken = {"id": "irrelevance_7", "question": [[{"role": "tool", "content": "x"}]], "function": []}
    history = {"id": "live_irrelevance_5-1-0", "function": [], "question": [[{"role": "user", "content": "hi"},
               {"role": "assistant", "content": "hello"}, {"role": "user", "content": "x"}]]}
    with open(tests, "a") as f:
        f.write(json.dumps(broken) + "\n" + json.dumps(history) + "\n")
    skipped = Counter()
    cases = {c.id: c for c in read_bfcl([tests], [answers], skipped)}
    assert "irrelevance_7" not in cases and "simple_python_0" in cases
    (reason, n), = skipped.items()
    assert n == 1 and reason.startswith(f"BFCL record irrelevance_7 ({tests.name} line 5)") and "'tool'" in reason
    assert [m["role"] for m in cases["live_irrelevance_5-1-0"].messages] == ["user", "assistant", "user"]


def test_cases_cli_writes_a_built_in_suite(tmp_path, capsys):
    out = tmp_path / "suite.jsonl"
    assert main(["eval", "cases", "--suite", "dispatch", "--out", str(out)]) == 0
    cases = list(iter_cases(out))
    assert len(cases) >= 60 and any(c.is_chain for c in cases)
    assert main(["eval", "cases", "--suite", "dispatch", "--answers", str(out), "--out", str(out)]) == 2
    assert "--answers goes with --format bfcl" in capsys.readouterr().err


def test_bfcl_score_prints_bfcls_own_summary(tmp_path, examples, capsys):
    tests, answers = bfcl_files(tmp_path, examples)
    preds = tmp_path / "p.jsonl"
    lines = [{"id": "simple_python_0", "text": "[calculate_triangle_area(base=10, height=5)]"},
             {"id": "irrelevance_3", "text": "I cannot help with that."}]
    preds.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["eval", "score", "--format", "bfcl", "--cases", str(tests), "--answers", str(answers),
                 "--predictions", str(preds), "--out", str(tmp_path / "o"), "--no-wandb"]) == 0
    out = capsys.readouterr().out
    assert "BFCL v4, its own aggregation" in out and "simple_python 50.00%" in out  # simple_python_9 has no answer
    assert "non-live    N/A" in out and "relevance   0.00%" in out
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["bfcl"]["categories"]["irrelevance"] == {"accuracy": 1.0, "cases": 1}
    assert "BFCL v4" in (tmp_path / "o" / "report.md").read_text()
