"""The encoded training set (train/encode.py): the same ids and masks as encoding sample by sample, in parallel; one
encode per input under `accelerate launch` (the other rank loads the main process's cache), reused by a second run,
redone when an input changes; a sample the checks refuse still fails by name from a worker process."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from dispatchtune.data_prep.prep import PrepConfig, prep
from dispatchtune.data_prep.sample import read_jsonl
from dispatchtune.errors import UserError
from dispatchtune.train.encode import encode_sample, encoded
from dispatchtune.train.mask import ChatFormat

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes/tiny.yaml")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """train.jsonl: the bundled samples (ToolBench traces and the short ones of data/sample/formats)."""
    out = tmp_path_factory.mktemp("data")
    inputs = sorted((ROOT / "data/sample").glob("*.json")) + sorted((ROOT / "data/sample/formats").iterdir())
    prep(PrepConfig(inputs=inputs, out=out, heldout_frac=0.0, progress=False))
    return out / "train.jsonl"


@pytest.fixture(scope="module")
def fmt(tiny_models):
    return ChatFormat.from_tokenizer(AutoTokenizer.from_pretrained(tiny_models("qwen3")))


def test_parallel_encode_matches_one_by_one_and_is_cached(data, fmt, tmp_path):
    samples = list(read_jsonl(data))
    want = [row for s in samples for row in encode_sample(fmt, s, 4096)]
    ds, counts = encoded(fmt, data, max_length=4096, name="train", cache_dir=tmp_path, progress=False, num_proc=2)
    assert ds["input_ids"] == [w["input_ids"] for w in want]
    assert ds["assistant_masks"] == [w["assistant_masks"] for w in want]
    assert counts == {"rows": len(want), **{k: sum(w[k] for w in want) for k in
                                            ("samples", "left_out", "tokens", "trained_tokens", "truncated",
                                             "truncated_tokens", "tool_calls")}}
    # Qwen3 trains each assistant turn of a multi-turn sample in a row of its own (train/mask.py)
    assert counts["samples"] == len(samples) < counts["rows"]
    assert counts["tool_calls"] == sum(1 for s in samples for _ in s.calls())
    # Two ToolBench traces outgrow 4096: the last row of one is cut, the last turns of the other have longer prompts
    assert 0 < counts["truncated"] < counts["rows"] and counts["left_out"] > 0
    (cache,) = tmp_path.glob("encoded-train-*")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary names left

    again, _ = encoded(fmt, data, max_length=4096, name="train", cache_dir=tmp_path, progress=False)
    assert again["input_ids"] == ds["input_ids"] and list(tmp_path.glob("encoded-train-*")) == [cache]

    encoded(fmt, data, max_length=3500, name="train", cache_dir=tmp_path, progress=False)  # another input
    (other,) = tmp_path.glob("encoded-train-*")  # the stale cache is gone
    assert other != cache


def test_refused_sample_fails_by_name_from_a_worker(data, fmt, tmp_path):
    with pytest.raises(UserError, match=r"max_length 300 is shorter than the prompt of \S+ record \d+"):
        encoded(fmt, data, max_length=300, name="train", cache_dir=tmp_path, progress=False, num_proc=2)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(data.read_text().splitlines()[0] + "\n\n{oops\n")
    with pytest.raises(UserError, match=r"bad.jsonl line 3: not JSON Lines"):
        encoded(fmt, bad, max_length=None, name="train", cache_dir=tmp_path, progress=False)
    assert not list(tmp_path.glob("*encoded*"))  # nothing cached


# Each process that encodes (rather than loading the cache) adds its rank to builds.log beside the run directory.
LAUNCHED = textwrap.dedent("""
    import sys
    from accelerate import PartialState
    from dispatchtune.train import encode, sft
    from dispatchtune.train.config import load_recipe

    state = PartialState()
    recipe = load_recipe(sys.argv[1], sys.argv[2:])
    build = encode._build
    def logged_build(*args, **kwargs):
        with open(recipe.dir.parent / "builds.log", "a") as f:
            f.write(f"rank {state.process_index}\\n")
        return build(*args, **kwargs)
    encode._build = logged_build
    _, tokenizer, fmt = sft.load_format(recipe)
    train_set, _, counts = sft._datasets(recipe, fmt, state)
    print(f"rank {state.process_index}: {len(train_set)} rows, {counts['tokens']} tokens", flush=True)
""")


def test_two_processes_encode_once_and_a_second_run_reuses_it(data, tiny_models, tmp_path, user_folder):
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    run = tmp_path / "run"
    accelerate = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1",
           "DISPATCHTUNE_TINY_CACHE": str(tiny_models("qwen3").parent), "PYTHONPATH": str(ROOT)}

    def launch(*more: str) -> list[str]:
        cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(script), TINY, f"run.dir={run}",
               f"data.train={data}", *more]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=user_folder, timeout=300, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        lines = sorted(line for line in out.stdout.splitlines() if line.startswith("rank "))
        assert len(lines) == 2 and lines[0][8:] == lines[1][8:], out.stdout  # both ranks see the same set
        return lines

    launch()
    assert (tmp_path / "builds.log").read_text() == "rank 0\n"  # the main process encoded; rank 1 loaded its cache
    (cache,) = (run / "cache").glob("encoded-train-*")
    launch()  # a second run (as --resume): nothing encoded again
    assert (tmp_path / "builds.log").read_text() == "rank 0\n"
    assert list((run / "cache").glob("encoded-train-*")) == [cache]
    counts = json.loads((cache / "counts.json").read_text())
    launch("training.max_length=3500")  # a changed input: encoded again, once
    assert (tmp_path / "builds.log").read_text() == "rank 0\nrank 0\n"
    (new,) = (run / "cache").glob("encoded-train-*")
    assert new != cache and json.loads((new / "counts.json").read_text())["tokens"] < counts["tokens"]
