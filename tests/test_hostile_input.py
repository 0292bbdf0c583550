"""The README's promises under hostile input, table by table: every malformed record is one rejection naming its
file, record, reason and field while the rest of the file goes through (`read == accepted + rejected`); every
hostile model output is one malformed verdict while the other cases are scored; every mistake in what is passed is
one line on stderr and exit code 2. Each case runs through the CLI, so a traceback fails the test.

The records start from the public format examples (`shared/data/formats/examples.json`) and break one thing each.
The fault test of checkpoint saves (a kill or a full disk during a save, then --resume) is in test_train.py, beside
the training fixtures it needs.
"""

import copy
import errno
import io
import json
import os
from pathlib import Path

import pytest

from dispatchtune import bounded_json
from dispatchtune.cli import main
from dispatchtune.data_prep.literal import NOT_LITERAL, python_literal
from dispatchtune.eval.parse import parse_output

DEEP = 3000  # far past MAX_DEPTH, and past Python's recursion limit
BIG_INT = "7" * 5000  # past Python's own 4,300-digit limit


@pytest.fixture(scope="module")
def examples(shared_data):
    return json.loads((shared_data / "formats/examples.json").read_text(encoding="utf-8"))


def deep(n: int = DEEP) -> str:
    return "[" * n + "]" * n


def _openai(ex, arguments=None, **changes):
    record = copy.deepcopy(ex["openai_messages"])
    if arguments is not None:
        record["messages"][1]["tool_calls"][0]["function"]["arguments"] = arguments
    for key, value in changes.items():
        record[key] = value
    return record


def _openai_schema(ex, **dimensions):
    record = copy.deepcopy(ex["openai_messages"])
    record["tools"][0]["function"]["parameters"]["properties"]["dimensions"].update(dimensions)
    return record


def _xlam(ex, **changes):
    return {**copy.deepcopy(ex["xlam"]), **changes}


def _xlam_type(ex, annotation: str):
    tools = json.loads(ex["xlam"]["tools"])
    tools[0]["parameters"]["type"]["type"] = annotation
    return _xlam(ex, tools=json.dumps(tools))


def _hermes_turn(ex, value: str):
    record = copy.deepcopy(ex["hermes_v1"])
    turn = next(t for t in record["conversations"] if t["from"] == "gpt" and "<tool_call>" in t["value"])
    turn["value"] = value
    return record


def _sharegpt_call(ex, value: str):
    record = copy.deepcopy(ex["llamafactory_sharegpt_tools"])
    next(t for t in record["conversations"] if t["from"] == "function_call")["value"] = value
    return record


OPENAI_ARGS = "messages[1].tool_calls[0].function.arguments"
OPENAI_DIMENSIONS = "tools[0].function.parameters.properties.dimensions"

# (case, format, make(examples) -> the hostile record, reason, field (None: the record), words of the message)
RECORDS = [
    ("deep arguments", "openai", lambda ex: _openai(ex, '{"a": ' + deep() + "}"), "bad_arguments", OPENAI_ARGS,
     "nested more than 100"),
    ("arguments 101 deep", "openai", lambda ex: _openai(ex, '{"a": ' + deep(100) + "}"), "bad_arguments",
     OPENAI_ARGS, "nested more than 100"),
    ("5,000-digit integer", "openai", lambda ex: _openai(ex, '{"a": ' + BIG_INT + "}"), "bad_arguments",
     OPENAI_ARGS, "5,000 digits"),
    ("NaN argument", "openai", lambda ex: _openai(ex, '{"a": NaN}'), "bad_arguments", OPENAI_ARGS, "NaN"),
    ("Infinity argument", "openai", lambda ex: _openai(ex, '{"a": -Infinity}'), "bad_arguments", OPENAI_ARGS,
     "Infinity"),
    ("1e999 argument", "openai", lambda ex: _openai(ex, '{"a": 1e999}'), "bad_arguments", OPENAI_ARGS,
     "beyond a double"),
    ("lone surrogate argument", "openai", lambda ex: _openai(ex, '{"a": "\\ud800"}'), "bad_arguments",
     OPENAI_ARGS, "surrogate"),
    ("deep record", "openai", lambda ex: _openai(ex, extra=json.loads(deep(150))),
     "json_limit", None, "nested more than 100"),
    ("nested required: 5", "openai", lambda ex: _openai_schema(ex, type="object", required=5), "bad_tools",
     f"{OPENAI_DIMENSIONS}.required", "required must be a list"),
    ("nested properties as a list", "openai", lambda ex: _openai_schema(ex, type="object", properties=["a"]),
     "bad_tools", f"{OPENAI_DIMENSIONS}.properties", "properties must be an object"),
    ("nested type as a number", "openai", lambda ex: _openai_schema(ex, type=5), "bad_tools",
     f"{OPENAI_DIMENSIONS}.type", "type must be"),
    ("xlam type nested 3,000 deep", "xlam", lambda ex: _xlam_type(ex, "List[" * DEEP + "int" + "]" * DEEP),
     "bad_tools", "tools[0].parameters", "nested more than 100"),
    ("xlam nested required: 5", "xlam",
     lambda ex: _xlam(ex, tools=json.dumps([{
         "name": "live_giveaways_by_type", "description": "d",
         "parameters": {"type": {"type": "dict", "description": "t", "required": 5}}}]),
         answers='[{"name": "live_giveaways_by_type", "arguments": {"type": {}}}]'),
     "bad_tools", "tools[0].function.parameters.properties.type.required", "required must be a list"),
    ("xlam deep answers", "xlam", lambda ex: _xlam(ex, answers=deep()), "bad_arguments", "answers",
     "nested more than 100"),
    ("xlam answers with NaN", "xlam",
     lambda ex: _xlam(ex, answers='[{"name": "live_giveaways_by_type", "arguments": {"type": NaN}}]'),
     "bad_arguments", "answers", "NaN"),
    ("hermes unclosed tags, 441 KB", "hermes", lambda ex: _hermes_turn(ex, "<tool_call>{'name': 'x'" * 20000),
     "truncated_source", "value", "never closed"),
    ("hermes deep literal call", "hermes",
     lambda ex: _hermes_turn(ex, "<tool_call>{'name': 'search_flights', 'arguments': {'a': " + deep() + "}}"
                                 "</tool_call>"), "bad_arguments", "tool_call[0]", "literal"),
    ("hermes call with 1e999", "hermes",
     lambda ex: _hermes_turn(ex, '<tool_call>{"name": "search_flights", "arguments": {"a": 1e999}}</tool_call>'),
     "bad_arguments", "tool_call[0]", "beyond a double"),
    ("sharegpt deep call", "sharegpt", lambda ex: _sharegpt_call(ex, '{"name": "calculate_area", "arguments": '
                                                                     + deep(200) + "}"),
     "bad_arguments", "conversations[1].value", "nested more than 100"),
    ("sharegpt call with a huge integer", "sharegpt",
     lambda ex: _sharegpt_call(ex, '{"name": "calculate_area", "arguments": {"shape": ' + BIG_INT + "}}"),
     "bad_arguments", "conversations[1].value", "digits"),
]


def _prep(tmp_path: Path, fmt: str, lines: list[str] | bytes, capsys, name="in.jsonl", *extra: str):
    path = tmp_path / name
    path.write_bytes(lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode("utf-8"))
    out = tmp_path / "out"
    code = main(["prep", str(path), "--out", str(out), "--no-progress", "--heldout-frac", "0",
                 *(["--format", fmt] if fmt else []), *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    stats = json.loads((out / "stats.json").read_text())
    assert stats["read"] == stats["accepted"] + stats["rejected"]
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert not list(out.glob(".*.tmp"))
    return stats, rejected, path


@pytest.mark.parametrize("case,fmt,make,reason,field,words", RECORDS, ids=[r[0] for r in RECORDS])
def test_hostile_record_is_one_rejection_naming_file_record_and_field(examples, tmp_path, capsys, case, fmt, make,
                                                                      reason, field, words):
    good = {"openai": "openai_messages", "xlam": "xlam", "hermes": "hermes_v1",
            "sharegpt": "llamafactory_sharegpt_tools"}[fmt]
    # speed on such input is measured by scripts/bench_hostile.py (docs/benchmarks.md), not here
    stats, rejected, path = _prep(tmp_path, fmt, [json.dumps(make(examples)), json.dumps(examples[good])], capsys)
    assert (stats["read"], stats["accepted"], stats["rejected"]) == (2, 1, 1), rejected
    (r,) = rejected
    assert r["source"] == str(path) and r["index"] == 0 and r["reason"] == reason, r
    assert (r["field"] is None) if field is None else (field in (r["field"] or "")), r
    assert words in r["message"], r


def test_counts_add_up_whatever_the_file_layout(examples, tmp_path, capsys):
    """Records that were once lost without being counted: a corrupt first line with --format, a byte order mark,
    JSON Lines of arrays, a first record over 8 MiB, a deep record in the middle of an array."""
    good = examples["openai_messages"]
    other = copy.deepcopy(good)
    other["messages"][0]["content"] = "Area of a 2 by 7 rectangle?"
    lines = [json.dumps(good), json.dumps(other)]

    stats, rejected, _ = _prep(tmp_path, "openai", ['{"messages": [oops', *lines], capsys)
    assert (stats["read"], stats["accepted"]) == (3, 2) and rejected[0]["reason"] == "not_json"

    stats, _, _ = _prep(tmp_path, None, b"\xef\xbb\xbf" + "\n".join(lines).encode(), capsys)
    assert (stats["read"], stats["accepted"]) == (2, 2)

    stats, rejected, _ = _prep(tmp_path, "openai", [json.dumps([good]), json.dumps([other]), json.dumps(good)],
                               capsys)
    assert (stats["read"], stats["accepted"]) == (3, 1) and {r["reason"] for r in rejected} == {"bad_shape"}

    huge = copy.deepcopy(good)
    huge["messages"][3]["content"] = "x" * (9 << 20)
    stats, rejected, _ = _prep(tmp_path, None, [json.dumps(huge), *lines], capsys)
    assert (stats["read"], stats["accepted"]) == (3, 2) and rejected[0]["reason"] == "record_too_large"

    array = "[" + ", ".join([lines[0], '{"messages": ' + deep() + "}", lines[1]]) + "]"
    stats, rejected, _ = _prep(tmp_path, "openai", array.encode(), capsys, "in.json")
    assert (stats["read"], stats["accepted"]) == (3, 2)
    assert rejected[0]["index"] == 1 and rejected[0]["reason"] == "json_limit"


def test_toolllama_react_text_with_many_action_lines(shared_data, tmp_path, capsys):
    records = json.loads((shared_data / "toolbench/toolllama/toolllama_G1_dfs_sample.json").read_text())
    record = max(records, key=lambda r: len(r["conversations"]))
    turn = next(t for t in record["conversations"] if t["from"] == "assistant")
    turn["value"] = "Thought: hmm" + "\nAction: x" * 100_000  # no Action Input: once quadratic
    stats, rejected, _ = _prep(tmp_path, "toolllama", json.dumps([record]).encode(), capsys, "in.json")
    assert stats["read"] == 1 and rejected[0]["reason"] == "bad_shape" and "value" in rejected[0]["field"]


# (case, model output, words of the reason it does not decode)
OUTPUTS = [
    ("deep JSON", '{"name": "get_weather", "arguments": ' + deep() + "}", "nested more than 100"),
    ("JSON 150 deep", '{"name": "get_weather", "arguments": {"a": ' + deep(150) + "}}", "nested more than 100"),
    ("5,000-digit integer", '{"name": "get_weather", "arguments": {"a": ' + BIG_INT + "}}", "digits"),
    ("NaN", '{"name": "get_weather", "arguments": {"a": NaN}}', "NaN"),
    ("1e999", '[{"name": "get_weather", "arguments": {"a": 1e999}}]', "beyond a double"),
    ("lone surrogate", '{"name": "get_weather", "arguments": {"city": "\\udc00"}}', "surrogate"),
    ("deep Hermes", '<tool_call>{"name": "get_weather", "arguments": ' + deep() + "}</tool_call>",
     "nested more than 100"),
    ("Hermes with a huge integer", '<tool_call>{"name": "get_weather", "arguments": {"a": ' + BIG_INT
     + "}}</tool_call>", "digits"),
    ("deep Hermes literal", "<tool_call>{'name': 'get_weather', 'arguments': " + deep() + "}</tool_call>",
     "neither JSON nor a Python literal"),
    ("deep ReAct", "Thought: x\nAction: get_weather\nAction Input: " + deep(), "nested more than 100"),
    ("ReAct with NaN", "Action: get_weather\nAction Input: {\"a\": NaN}", "NaN"),
    ("deep Python call", "get_weather(city=" + deep(150) + ")", "not a"),
    ("Python call with 1e999", "get_weather(city=1e999)", "not a literal"),
    ("4 MB of unclosed tags", "<tool_call>" + "x" * (4 << 20), "unclosed"),
    ("4 MB Python call", "get_weather(city=" + "'x', " * (800_000) + ")", "over the"),
]


@pytest.mark.parametrize("case,text,words", OUTPUTS, ids=[o[0] for o in OUTPUTS])
def test_hostile_model_output_is_malformed_not_a_crash(case, text, words):
    calls, why = parse_output(text)
    assert calls is None and words in why, why


def test_hostile_outputs_are_scored_with_the_others(tmp_path, capsys):
    """`eval score` over predictions with every hostile output above, a `calls` prediction whose arguments string
    is deep, and lines that are themselves too deep: each is its own verdict, and the report is written."""
    cases = tmp_path / "cases.jsonl"
    assert main(["eval", "cases", "--suite", "dispatch", "--out", str(cases)]) == 0
    ids = [json.loads(line)["id"] for line in cases.read_text().splitlines()]
    predictions = [{"id": i, "text": text} for i, (_, text, _) in zip(ids, OUTPUTS)]
    predictions.append({"id": ids[len(OUTPUTS)], "calls": [{"name": "get_weather", "arguments": deep()}]})
    lines = [json.dumps(p) for p in predictions]
    lines.append('{"id": "' + ids[len(OUTPUTS) + 1] + '", "text": ' + deep(200)[:-1] + '"x"]}')
    lines.append('{"id": "x", "calls": ' + deep(2000) + "}")
    (tmp_path / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    code = main(["eval", "score", "--cases", str(cases), "--predictions", str(tmp_path / "predictions.jsonl"),
                 "--out", str(tmp_path / "scored"), "--tokenizer", "none", "--no-wandb"])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err, err
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "scored/cases.jsonl").read_text().splitlines())}
    for i, (_, _, words) in zip(ids, OUTPUTS):
        assert rows[i]["parsed"] is False and words in rows[i]["reason"], rows[i]
    assert "nested more than 100" in rows[ids[len(OUTPUTS)]]["reason"]
    report = json.loads((tmp_path / "scored/report.json").read_text())
    assert report["predictions"]["malformed_lines"] == 2


def test_template_parser_output_past_the_limits_is_malformed(tiny_models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models("qwen3"))
    for body, words in [('{"name": "f", "arguments": ' + deep() + "}", "refuses"),
                        ('{"name": "f", "arguments": {"a": ' + deep(150) + "}}", "limits"),
                        ('{"name": "f", "arguments": {"a": NaN}}', "")]:
        calls, why = parse_output(f"<tool_call>\n{body}\n</tool_call>", tokenizer)
        assert calls is None and words in why, why


@pytest.mark.parametrize("text,limit", [
    (deep(), "nested"), ("[" + BIG_INT + "]", "digits"), ('{"a": NaN}', "NaN"), ("[Infinity]", "Infinity"),
    ("[-1e999]", "beyond"), ('["\\ud800"]', "surrogate"), ('{"\\udfff": 1}', "surrogate"), (deep(101), "nested"),
])
def test_bounded_json_refuses_what_it_promises(text, limit):
    for loads in (bounded_json.loads, bounded_json.loads_fast):
        with pytest.raises(json.JSONDecodeError):
            loads(text)
    with pytest.raises(bounded_json.JSONLimitError, match=limit):
        bounded_json.loads(text)
    assert python_literal(text) is NOT_LITERAL


def test_bounded_json_keeps_values_exact():
    text = '{"a": [1, 2.5, -0.0, "😀\\ud83d\\ude00", 123456789012345678901234567890], "b": ' + deep(99) + "}"
    assert bounded_json.loads(text) == json.loads(text)
    with pytest.raises(bounded_json.JSONLimitError) as e:
        bounded_json.raw_decode('[{"s": "]]"}, ' + deep(DEEP) + "] tail", 0)
    assert e.value.end == len('[{"s": "]]"}, ' + deep(DEEP) + "]")  # where the refused value ends: reading goes on


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_mistakes_are_one_line_and_exit_2(examples, tmp_path, capsys):
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps(examples["openai_messages"]) + "\n")
    afile = tmp_path / "a_file"
    afile.write_text("x")

    assert main(["prep", str(data), "--out", str(afile)]) == 2
    assert "--out" in _error_line(capsys)
    assert main(["prep", str(data), "--out", str(afile / "sub")]) == 2
    assert "cannot make" in _error_line(capsys)

    with pytest.raises(SystemExit) as e:
        main(["inspect", "--recipe", "recipes/tiny.yaml", "--n", "-3"])
    assert e.value.code == 2 and "--n" in _error_line(capsys)

    cases = tmp_path / "cases.jsonl"
    assert main(["eval", "cases", "--suite", "dispatch", "--out", str(tmp_path)]) == 2
    assert "is a directory" in _error_line(capsys)
    assert main(["eval", "cases", "--suite", "dispatch", "--out", str(cases)]) == 0
    capsys.readouterr()
    assert main(["eval", "score", "--cases", str(cases), "--predictions", str(cases), "--out", str(afile),
                 "--tokenizer", "none", "--no-wandb"]) == 2
    assert "--out" in _error_line(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes regardless of permissions")
def test_unreadable_input_and_unwritable_out_are_one_line(examples, tmp_path, capsys):
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps(examples["openai_messages"]) + "\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    data.chmod(0)
    assert main(["prep", str(data), "--out", str(tmp_path / "out")]) == 2
    assert "cannot read" in _error_line(capsys)
    data.chmod(0o644)
    locked.chmod(0o500)
    assert main(["prep", str(data), "--out", str(locked / "out")]) == 2
    assert "cannot make" in _error_line(capsys)


def test_full_disk_during_prep_is_one_line_and_leaves_no_temporary_file(examples, tmp_path, capsys, monkeypatch):
    """The disk fills while prep writes its outputs: every write past the first kilobyte fails with ENOSPC."""
    from dispatchtune.data_prep import prep as prep_module

    class Full(io.FileIO):
        def write(self, data):
            if self.tell() + len(data) > 1024:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)
            return super().write(data)

    def filling_open(path, mode="r", **kwargs):
        if "w" not in mode:
            return open(path, mode, **kwargs)
        return io.TextIOWrapper(io.BufferedWriter(Full(path, "w")), encoding=kwargs.get("encoding"))

    monkeypatch.setattr(prep_module, "open", filling_open, raising=False)
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join(json.dumps(examples["openai_messages"] | {"id": i}) for i in range(50)) + "\n")
    out = tmp_path / "out"
    assert main(["prep", str(data), "--out", str(out), "--no-progress"]) == 2
    line = _error_line(capsys)
    assert "No space left on device" in line and str(out) in line
    assert not [p.name for p in out.iterdir()]  # no temporary file left, and no output that looks complete
