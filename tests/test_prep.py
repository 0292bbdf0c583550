"""The prep stage end to end: accounting, bad input, duplicates, splits, outputs, token checks."""

import json


from dispatchtune.data_prep.prep import PrepConfig, prep
from dispatchtune.data_prep.sample import Sample, read_jsonl

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def record(city="Tokyo", args=None, name="get_weather", result="21C"):
    args = json.dumps({"city": city}) if args is None else args
    return {"messages": [
        {"role": "user", "content": f"Weather in {city}?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": "c1", "content": result},
        {"role": "assistant", "content": f"It is {result}."}], "tools": [TOOL]}


def run_prep(tmp_path, files, **kw):
    out = tmp_path / "out"
    stats = prep(PrepConfig(files, out, progress=False, **kw))
    return stats, out


def rejected(out):
    return [json.loads(l) for l in (out / "rejected.jsonl").read_text().splitlines()]


def test_bad_input_is_rejected_by_name_and_the_counts_add_up(tmp_path):
    good = [record(c) for c in ("Tokyo", "Paris", "Oslo", "Lima")]
    bad = [
        record(args="{'city': 'Rome'}"),  # Python repr where JSON is expected
        record(name="get_time"),  # a call to an unknown tool
        record(args='{"city": '),  # arguments that do not parse
        {"conversation": []},  # the wrong shape
        record("Big", result="x" * (10 << 20)),  # a 10 MB record
        record("Tokyo"),  # an exact duplicate
    ]
    arr = tmp_path / "data.json"
    arr.write_text(json.dumps(good + bad))
    not_json = tmp_path / "notjson.json"
    not_json.write_text("this is not json")
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps(good)[:-40])
    utf8 = tmp_path / "utf8.jsonl"
    lines = [json.dumps(record(c)).encode() for c in ("Bern", "Rome")]
    utf8.write_bytes(lines[0] + b"\n" + lines[1].replace(b"Rome", b"R\xffme") + b"\n")

    stats, out = run_prep(tmp_path, [arr, not_json, truncated, utf8], format="openai", heldout_frac=0.0)
    assert stats["read"] == stats["accepted"] + stats["rejected"]
    for src in stats["by_source"].values():
        assert src["read"] == src["accepted"] + src["rejected"] == sum(src["by_reason"].values()) + src["accepted"]
    per_file = {k.rsplit("/", 1)[-1]: v for k, v in stats["by_source"].items()}
    assert per_file["data.json"]["read"] == 10 and per_file["data.json"]["accepted"] == 4
    assert per_file["notjson.json"] == {"format": "openai", "read": 1, "accepted": 0, "rejected": 1, "by_reason": {"not_json": 1}}
    assert per_file["truncated.json"]["by_reason"] == {"truncated_json": 1, "duplicate": per_file["truncated.json"]["read"] - 1}
    assert per_file["utf8.jsonl"]["by_reason"] == {"invalid_utf8": 1}

    rows = {(r["source"].rsplit("/", 1)[-1], r["index"]): r for r in rejected(out)}
    assert len(rows) == stats["rejected"]
    assert rows[("data.json", 4)]["reason"] == "python_repr"
    assert rows[("data.json", 4)]["field"].endswith("tool_calls[0].function.arguments")
    assert rows[("data.json", 5)]["reason"] == "unknown_tool" and "get_time" in rows[("data.json", 5)]["message"]
    assert rows[("data.json", 6)]["reason"] == "bad_arguments"
    assert rows[("data.json", 7)]["reason"] == "bad_shape"
    assert rows[("data.json", 8)]["reason"] == "record_too_large" and "MB" in rows[("data.json", 8)]["message"]
    assert rows[("data.json", 9)]["reason"] == "duplicate" and "data.json record 0" in rows[("data.json", 9)]["message"]
    assert rows[("utf8.jsonl", 1)]["reason"] == "invalid_utf8"

    train = list(read_jsonl(out / "train.jsonl"))
    assert len(train) == stats["accepted"] == 5
    assert train[0].messages[2]["name"] == "get_weather"  # the tool result got its call's name
    assert train[0].meta["source"].endswith("data.json") and train[0].meta["index"] == 0


def test_outputs_load_with_datasets_despite_different_schemas(tmp_path):
    other = {"type": "function", "function": {"name": "convert", "description": "", "parameters": {
        "type": "object", "properties": {"amount": {"type": "number"}, "to": {"type": "string"}}, "required": ["amount"]}}}
    rec = record("Kyiv")
    rec["tools"] = [other, TOOL]
    rec["messages"][1]["tool_calls"].append({"id": "c2", "type": "function", "function": {"name": "convert", "arguments": {"amount": 3}}})
    rec["messages"].insert(3, {"role": "tool", "tool_call_id": "c2", "content": "9"})
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [record("Tokyo"), rec]) + "\n")
    stats, out = run_prep(tmp_path, [f], heldout_frac=0.0)
    assert stats["accepted"] == 2
    from datasets import load_dataset

    ds = load_dataset("json", data_files=str(out / "train.jsonl"), split="train")
    back = [Sample.from_record(r) for r in ds]
    assert back == list(read_jsonl(out / "train.jsonl"))
    assert back[1].messages[1]["tool_calls"][1]["function"]["arguments"] == {"amount": 3}
    assert "tool_calls" not in back[0].messages[0]  # datasets' null-filled struct fields are dropped again


def test_split_is_deterministic_and_heldout_queries_do_not_train(tmp_path):
    f = tmp_path / "d.json"
    f.write_text(json.dumps([record(f"City{i}") for i in range(50)]))
    stats, out = run_prep(tmp_path, [f], heldout_frac=0.2, seed=3)
    first = (out / "heldout.jsonl").read_text()
    stats2, _ = run_prep(tmp_path, [f], heldout_frac=0.2, seed=3)
    assert (out / "heldout.jsonl").read_text() == first
    assert stats["split"]["heldout"] == 10 and stats["split"]["train"] == 40
    train_q = {s.meta["split_key"] for s in read_jsonl(out / "train.jsonl")}
    held_q = {s.meta["split_key"] for s in read_jsonl(out / "heldout.jsonl")}
    assert held_q and not train_q & held_q
    assert not list(out.glob(".*tmp"))


def test_token_check_rejects_long_samples_and_reports_lengths(tmp_path, tiny_models):
    f = tmp_path / "d.json"
    f.write_text(json.dumps([record("Tokyo"), record("Paris", result="word " * 400)]))
    stats, out = run_prep(tmp_path, [f], tokenizer=str(tiny_models("qwen3")), max_tokens=300, heldout_frac=0.0)
    assert stats["by_reason"] == {"too_long": 1}
    assert stats["tokens"]["count"] == 1 and 0 < stats["tokens"]["max"] <= 300
    assert "over --max-tokens 300" in rejected(out)[0]["message"]


def test_token_check_measures_with_a_given_chat_format(tmp_path, tiny_models):
    """`dispatchtune run` hands prep the training format: the recipe's template and kwargs, not the tokenizer's own."""
    from transformers import AutoTokenizer

    from dispatchtune.families import resolve_template
    from dispatchtune.train.mask import ChatFormat

    tok = AutoTokenizer.from_pretrained(tiny_models("llama-3.2"))
    fmt = ChatFormat.from_tokenizer(tok, chat_template=resolve_template("chatml_tools"),
                                    template_kwargs={"date_string": "26 Jul 2024"})
    f = tmp_path / "d.json"
    f.write_text(json.dumps([record("Tokyo")]))
    stats, _ = run_prep(tmp_path, [f], chat_format=fmt, max_tokens=10_000, heldout_frac=0.0)
    sample = next(read_jsonl(tmp_path / "out/train.jsonl"))
    want = tok.apply_chat_template(sample.messages, tools=sample.tools, chat_template=fmt.inference_template,
                                   tokenize=True, return_dict=False, date_string="26 Jul 2024")
    own = tok.apply_chat_template(sample.messages, tools=sample.tools, tokenize=True, return_dict=False)
    assert stats["tokens"]["count"] == 1 and stats["tokens"]["max"] == len(want) != len(own)
