"""The demo's data (`dispatchtune synth`) and what the demo builds on it: seeded, held-out values and phrasings that
training never shows, every sample accepted by prep, prep's --heldout-inputs, the corpus-trained tokenizer that
keeps a word's tokens the same after a space and after a quote, and the compact tool template."""

import json

import pytest
from transformers import AutoTokenizer

from dispatchtune.cli import main
from dispatchtune.data_prep import synthetic
from dispatchtune.data_prep.prep import PrepConfig, prep
from dispatchtune.data_prep.sample import Sample
from dispatchtune.errors import UserError
from dispatchtune.eval.heldout import leaves
from dispatchtune.families import resolve_template
from dispatchtune.tiny_models import build_tiny_model, build_tokenizer
from dispatchtune.train.mask import ChatFormat


def values_and_requests(rows):
    values, requests = set(), set()
    for row in rows:
        for m in row["messages"]:
            if m["role"] == "user":
                requests.add(m["content"])
            for call in m.get("tool_calls") or []:
                values.update(leaves(call["function"]["arguments"]))
    return values, requests


def test_generation_is_seeded_and_covers_every_kind():
    rows = synthetic.generate(300, seed=5, heldout=False)
    assert rows == synthetic.generate(300, seed=5, heldout=False)
    assert rows != synthetic.generate(300, seed=6, heldout=False)
    text = json.dumps(rows)
    assert synthetic.NO_TOOL_ANSWER in text and synthetic.CHITCHAT_ANSWER in text
    assert any(len(m.get("tool_calls") or []) == 2 for r in rows for m in r["messages"])  # parallel calls
    assert any(m["role"] == "tool" and '"city"' in m["content"] for r in rows for m in r["messages"])  # chains


def test_heldout_shares_no_value_and_no_request_with_training():
    train_values, train_requests = values_and_requests(synthetic.generate(3000, seed=0, heldout=False))
    held_values, held_requests = values_and_requests(synthetic.generate(300, seed=1, heldout=True))
    assert held_values and held_requests
    assert held_values & train_values == set(synthetic.CURRENCIES) & held_values  # codes, a closed set, are shared
    assert not held_requests & train_requests
    # a held-out name, place, topic or text is a new pair of words that training uses: it tests copying, not spelling
    train_words = {w for v in train_values if isinstance(v, str) for w in v.split()}
    pairs = [v for v in held_values if isinstance(v, str) and " " in v]
    assert pairs and all(set(v.split()) <= train_words for v in pairs)


def test_numeric_parameters_get_numbers_and_parallel_requests_keep_i():
    rows = synthetic.generate(2000, seed=3, heldout=False)
    calls = [c["function"] for r in rows for m in r["messages"] for c in m.get("tool_calls") or []]
    for name, params in synthetic.TOOLS.items():
        for param, spec in params["function"]["parameters"]["properties"].items():
            got = [c["arguments"][param] for c in calls if c["name"] == name]
            assert got and all(isinstance(v, int) == (spec["type"] != "string") for v in got), (name, param)
    users = [m["content"] for r in rows for m in r["messages"] if m["role"] == "user"]
    assert any(" and I'd " in u for u in users) and not any(" and i'd " in u for u in users)


def test_training_calls_the_tools_that_take_numbers_more_often_than_the_heldout_file():
    def share(rows):
        calls = [c["function"]["name"] for r in rows for m in r["messages"] for c in m.get("tool_calls") or []
                 if c["function"]["name"] != "find_contact"]  # chains' first calls: not a choice among tools
        return sum(name in synthetic.NUMBER_TOOLS for name in calls) / len(calls)

    assert synthetic.NUMBER_TOOLS == {"convert_currency", "set_timer", "split_bill", "set_volume"}
    train = share(synthetic.generate(3000, seed=0, heldout=False))
    held = share(synthetic.generate(3000, seed=1, heldout=True))
    assert train > 1.25 * held, (train, held)  # 0.40 against 0.30: the weight picks among the tools offered


def test_heldout_requests_are_new_compositions_of_parts_training_uses():
    for phrasings in [*synthetic.PHRASINGS.values(), *synthetic.CHAINS.values(), synthetic.CHITCHAT]:
        train, held = phrasings[False], phrasings[True]
        assert held and not set(held) & set(train)
        for part, options in enumerate(zip(*held)):  # openings, cores, closings (or greetings, small talk)
            assert set(options) <= {combo[part] for combo in train}


def test_prep_accepts_every_sample_and_holds_out_the_heldout_file(tmp_path):
    assert main(["synth", "--out", str(tmp_path / "synthetic"), "--train", "120", "--heldout", "30"]) == 0
    stats = prep(PrepConfig([tmp_path / "synthetic/train.jsonl"], tmp_path / "data", heldout_frac=0, progress=False,
                            heldout_inputs=[tmp_path / "synthetic/heldout.jsonl"]))
    assert stats["accepted"] == stats["read"] == 150, stats
    assert stats["split"]["train"] == 120 and stats["split"]["heldout"] == 30
    held = [json.loads(line)["messages"] for line in (tmp_path / "data/heldout.jsonl").read_text().splitlines()]
    assert {m[0]["content"] for m in held} <= values_and_requests(
        synthetic.generate(30, seed=1, heldout=True))[1]


def test_corpus_tokenizer_writes_a_name_alike_in_the_request_and_in_the_call(tmp_path):
    rows = synthetic.generate(300, seed=0, heldout=False)
    for family in ("smollm2", "qwen3"):
        tok = build_tokenizer(family, [json.dumps(r) for r in rows], vocab_size=1200)
        ids = lambda text: tok(text, add_special_tokens=False).input_ids  # noqa: E731
        for name in ("Toudi", "Brastaimou", "Velkora"):  # coined: not necessarily in the corpus
            bare = ids(name)
            for text in (f"Weather in {name} please", f'{{"city": "{name}"}}'):
                found = ids(text)
                assert any(found[k : k + len(bare)] == bare for k in range(len(found))), (family, text)
        assert [tok.decode([i]) for i in ids("885 CHF")][:3] == ["8", "8", "5"], family  # numbers digit by digit
    # without a corpus the family's ordinary merges stay: a space joins the word after it
    plain = build_tokenizer("smollm2")
    assert plain.convert_ids_to_tokens(plain("a user", add_special_tokens=False).input_ids)[-1].startswith("Ġ")


def test_tiny_model_from_a_corpus_with_its_own_shape(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in synthetic.generate(100, seed=0, heldout=False)))
    out = build_tiny_model("smollm2", tmp_path / "m", corpus=data, layers=3, heads=2)
    config = json.loads((out / "config.json").read_text())
    assert (config["num_hidden_layers"], config["num_attention_heads"], config["head_dim"]) == (3, 2, 128)
    assert build_tiny_model("smollm2", tmp_path / "m", corpus=data, layers=3, heads=2) == out  # reused as built
    assert AutoTokenizer.from_pretrained(out)("Toudi").input_ids


def test_tokenizer_learns_the_corpus_in_its_chat_template(tmp_path):
    """With the template the model will train with, the template's own words are tokens too: shorter rows."""
    rows = synthetic.generate(400, seed=0, heldout=False)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    template = resolve_template("chatml_compact")
    lengths = {}
    for name, kwargs in (("plain", {}), ("rendered", {"chat_template": "chatml_compact"})):
        tok = AutoTokenizer.from_pretrained(build_tiny_model("smollm2", tmp_path / name, corpus=data, **kwargs))
        lengths[name] = sum(len(tok.apply_chat_template(r["messages"], tools=r["tools"], chat_template=template,
                                                        tokenize=True, return_dict=True)["input_ids"]) for r in rows)
    assert tok.tokenize("system\nTools:")[:3] == ["system", "Ċ", "Tools"]
    assert not [t for t in tok.get_vocab() if "<|" in t[1:]]  # no merge joins text to a special token
    assert lengths["rendered"] < 0.95 * lengths["plain"], lengths
    with pytest.raises(UserError, match="give --corpus too"):
        build_tiny_model("smollm2", tmp_path / "x", chat_template="chatml_compact")


def test_compact_template_lists_signatures_and_trains_each_session_in_one_row():
    tok = build_tokenizer("smollm2")
    fmt = ChatFormat.from_tokenizer(tok, resolve_template("chatml_compact"))
    row = next(r for r in synthetic.generate(50, seed=2, heldout=False, session=6)
               if sum(m["role"] == "assistant" for m in r["messages"]) > 2)
    sample = Sample(row["messages"], row["tools"])
    text = tok.apply_chat_template(sample.messages, tools=sample.tools, chat_template=fmt.inference_template,
                                   tokenize=False)
    names = [t["function"]["name"] for t in row["tools"]]
    assert text.splitlines()[1].startswith("Tools: " + names[0] + "(")
    assert "{" not in text.split("<|im_end|>")[0]  # no JSON schema in the prompt
    rows = fmt.encode(sample)
    assert len(rows) == 1 and sum(rows[0][1]) > 0


def test_counts_below_their_least_are_one_line(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--session", "0"]) == 2
    assert main(["synth", "--out", str(tmp_path), "--train", "-5"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("--train -5: expected 0 or more")
    assert not list(tmp_path.iterdir())
