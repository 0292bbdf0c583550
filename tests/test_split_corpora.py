"""Splits on generated corpora of the real shapes (scripts/make_corpus.py): every mode lands within its tolerance or
exits 2 saying why, no held-out tool is called in training, and stats.json says so."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dispatchtune.data_prep.prep import PrepConfig, prep
from dispatchtune.data_prep.sample import read_jsonl
from dispatchtune.data_prep.split import MIN_SLACK, TOLERANCE
from dispatchtune.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_corpus", ROOT / "scripts" / "make_corpus.py")
make_corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_corpus)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """A ToolLLaMA-shaped file (~550 traces) and an xLAM-shaped one (1,500 records), written once."""
    root = tmp_path_factory.mktemp("corpora")
    files = {"toolllama": root / "toolllama_G123_dfs_train.json", "xlam": root / "xlam.json"}
    make_corpus.write_corpus(files["toolllama"], "toolllama", 2000, seed=1)
    make_corpus.write_corpus(files["xlam"], "xlam", 1500, seed=2)
    return files


def unit(name: str, shape: str) -> str:
    """The tool a function belongs to, found here from ToolBench's `<api>_for_<service>` names (the split reads it
    from the descriptions): a ToolBench service, or an xLAM API itself."""
    return name.rsplit("_for_", 1)[1] if shape == "toolllama" else name


def called(sample, shape) -> set[str]:
    return {unit(c.name, shape) for _, c in sample.calls()}


def within_tolerance(stats) -> bool:
    s = stats["split"]
    n, frac = s["trainable"], s["heldout_frac"]
    held = s["heldout"] - s["prompts"]
    return abs(held - frac * n) <= max(TOLERANCE * frac * n, MIN_SLACK) and held > 0


@pytest.mark.parametrize("shape", ["toolllama", "xlam"])
@pytest.mark.parametrize("frac,seed", [(0.05, 0), (0.1, 1), (0.2, 2), (0.3, 3)])
def test_tool_split_on_real_shapes_lands_on_the_fraction_and_keeps_heldout_tools_out_of_training(
        tmp_path, corpora, shape, frac, seed):
    stats = prep(PrepConfig([corpora[shape]], tmp_path, split_by="tool", heldout_frac=frac, seed=seed,
                            progress=False))
    s = stats["split"]
    assert within_tolerance(stats), s
    assert 0.8 * frac <= s["heldout_share"] <= 1.2 * frac  # the corpora are large enough for the relative bound
    train, heldout = list(read_jsonl(tmp_path / "train.jsonl")), list(read_jsonl(tmp_path / "heldout.jsonl"))
    assert len(train) == s["train"] and len(heldout) == s["heldout"]
    held_tools = set(s["heldout_tools"])
    assert held_tools and s["train_calling_heldout_tools"] == 0
    assert not held_tools & {t for x in train for t in called(x, shape)}
    answered = [x for x in heldout if x.has_assistant]
    assert all(called(x, shape) & held_tools for x in answered)  # each held-out answer calls a held-out tool
    # The default strips held-out tools that training samples only offered; the stats count those samples.
    assert not held_tools & {unit(n, shape) for x in train for n in x.tool_names}
    assert all(x.meta["tool_names"] == x.tool_names for x in train)  # meta follows the stripped tool lists
    assert s["train_offering_heldout_tools"]["policy"] == "strip"
    if shape == "xlam":  # distractors from one shared pool: many training samples offer a held-out API
        assert s["train_offering_heldout_tools"]["samples"] > 0.05 * s["train"]


def test_offered_heldout_tools_are_kept_or_dropped_as_asked_and_counted(tmp_path, corpora):
    runs = {}
    for policy in ("keep", "drop", "strip"):
        out = tmp_path / policy
        runs[policy] = prep(PrepConfig([corpora["xlam"]], out, split_by="tool", heldout_frac=0.1,
                                       heldout_tools_in_train=policy, progress=False))
        held = set(runs[policy]["split"]["heldout_tools"])
        offering = sum(bool(held & set(x.tool_names)) for x in read_jsonl(out / "train.jsonl"))
        runs[policy]["offering_in_file"] = offering
    n = runs["keep"]["split"]["train_offering_heldout_tools"]["samples"]
    assert n > 0 and runs["keep"]["offering_in_file"] == n
    assert runs["strip"]["offering_in_file"] == runs["drop"]["offering_in_file"] == 0
    drop = runs["drop"]
    assert drop["by_reason"]["offers_heldout_tool"] == n
    assert drop["split"]["train"] == runs["keep"]["split"]["train"] - n
    assert drop["read"] == drop["accepted"] + drop["rejected"] == runs["keep"]["read"]
    reasons = [json.loads(l)["reason"] for l in (tmp_path / "drop" / "rejected.jsonl").read_text().splitlines()]
    assert reasons.count("offers_heldout_tool") == n


def test_the_issue_case_300_xlam_records_4_tools_offered_from_60(tmp_path):
    f = tmp_path / "xlam.json"
    make_corpus.write_corpus(f, "xlam", 300, seed=0, tools=60, offered=(4, 4))
    stats = prep(PrepConfig([f], tmp_path / "out", split_by="tool", heldout_frac=0.1, progress=False))
    assert within_tolerance(stats) and stats["split"]["train"] > 200, stats["split"]


@pytest.mark.parametrize("shape", ["toolllama", "xlam"])
def test_query_split_on_real_shapes_lands_on_the_fraction(tmp_path, corpora, shape):
    stats = prep(PrepConfig([corpora[shape]], tmp_path, split_by="query", heldout_frac=0.1, progress=False))
    assert within_tolerance(stats), stats["split"]
    keys = lambda name: {x.meta["split_key"] for x in read_jsonl(tmp_path / name)}  # noqa: E731
    assert not keys("train.jsonl") & keys("heldout.jsonl")


def test_category_split_holds_out_whole_toolbench_groups_within_tolerance(tmp_path):
    """ToolLLaMA-shaped files named by ToolBench group: the group is the category (G3 ~ 18% of the traces)."""
    files = []
    for group, records, seed in (("G1", 1100, 1), ("G2", 700, 2), ("G3", 400, 3)):
        files.append(tmp_path / f"toolllama_{group}_train.json")
        make_corpus.write_corpus(files[-1], "toolllama", records, seed=seed, tools=30)
    stats = prep(PrepConfig(files, tmp_path / "out", split_by="category", heldout_frac=0.18, progress=False))
    assert within_tolerance(stats), stats["split"]
    cats = lambda name: {x.meta["category"] for x in read_jsonl(tmp_path / "out" / name)}  # noqa: E731
    assert cats("heldout.jsonl") == {"G3"} and cats("train.jsonl") == {"G1", "G2"}
    with pytest.raises(UserError, match=r"each of the 3 categories left would add more than .*'G1'"):
        prep(PrepConfig(files, tmp_path / "out2", split_by="category", heldout_frac=0.05, progress=False))


def test_category_split_of_data_without_categories_exits_saying_why(tmp_path, corpora):
    with pytest.raises(UserError, match="only 0 of them have a category, so the rest can only train"):
        prep(PrepConfig([corpora["xlam"]], tmp_path, split_by="category", heldout_frac=0.1, progress=False))
    assert not list(tmp_path.iterdir())  # nothing written, not even temporary files


def test_a_tool_called_by_most_samples_exits_2_naming_it(tmp_path):
    """Few services for many traces: every service would overshoot a 5% hold-out; the CLI says so in one line."""
    f = tmp_path / "toolllama.json"
    make_corpus.write_corpus(f, "toolllama", 400, seed=0, tools=4)
    p = subprocess.run([sys.executable, "-m", "dispatchtune", "prep", str(f), "--out", str(tmp_path / "out"),
                        "--split-by", "tool", "--heldout-frac", "0.05", "--no-progress"],
                       capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    line = p.stderr.strip().splitlines()[-1]
    assert re.search(r"--split-by tool cannot hold out 0.05 of the \d+ trainable samples .* each of the \d+ tools left "
                     r"would add more than .* the largest, '\w+', \d+ \(\d+%\)", line), line
    assert not (tmp_path / "out" / "stats.json").exists() and not (tmp_path / "out" / "train.jsonl").exists()


def test_prompts_whose_tools_pull_in_too_much_exit_saying_so(tmp_path):
    """A ToolBench query file whose prompts expect the tools the traces call: they must all be held out."""
    f = tmp_path / "toolllama.json"
    make_corpus.write_corpus(f, "toolllama", 300, seed=0, tools=3)
    functions = sorted({m for r in json.loads(f.read_text())
                        for m in re.findall(r"'name': '(\w+_for_(\w+))'", r["conversations"][0]["value"])})
    queries = tmp_path / "G1_query.json"
    queries.write_text(json.dumps([{"query": "Use every API.", "query_id": 1, "api_list": [
        {"category_name": "Data", "tool_name": service, "api_name": fn.rsplit("_for_", 1)[0], "api_description": "",
         "required_parameters": [], "optional_parameters": [], "method": "GET"} for fn, service in functions],
        "relevant APIs": [[service, fn.rsplit("_for_", 1)[0]] for fn, service in functions]}]))
    with pytest.raises(UserError, match="the prompts .* take their tools along, and with them \\d+ trainable samples"):
        prep(PrepConfig([f, queries], tmp_path / "out", split_by="tool", heldout_frac=0.1, progress=False))
