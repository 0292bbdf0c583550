"""`prep` over several worker processes writes the same files, byte for byte, as in one process: on generated
ToolLLaMA-shaped (traces of step records, which a chunk must not cut) and xLAM-shaped corpora, and on the bundled
samples of every format (readers that cannot restart mid-file run in the main process)."""

import importlib.util
import json
from pathlib import Path

import pytest

from dispatchtune.data_prep import parallel
from dispatchtune.data_prep.prep import OUTPUTS, PrepConfig, prep
from dispatchtune.data_prep.readers import boundary

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_corpus", ROOT / "scripts" / "make_corpus.py")
make_corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_corpus)


def outputs(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in OUTPUTS}


@pytest.mark.parametrize("shape, records, split_by", [("toolllama", 600, "query"), ("toolllama", 600, "tool"),
                                                      ("xlam", 500, "tool")])
def test_workers_write_what_one_process_writes(tmp_path, monkeypatch, shape, records, split_by):
    data = tmp_path / f"{shape}.json"
    make_corpus.write_corpus(data, shape, records, seed=3)
    monkeypatch.setattr(parallel, "CHUNK", 7)  # many chunks, so many cuts between traces
    runs = {}
    for workers in (1, 2, 3):
        out = tmp_path / f"out{workers}"
        prep(PrepConfig(inputs=[data], out=out, split_by=split_by, progress=False, workers=workers))
        runs[workers] = outputs(out)
    assert runs[2] == runs[1] and runs[3] == runs[1]
    stats = json.loads(runs[1]["stats.json"])
    assert stats["read"] == records and stats["accepted"] > 0
    if shape == "toolllama":
        assert stats["by_reason"]["step_prefix"] > 0  # traces were folded across the chunks' cuts


def test_every_bundled_format_gives_the_same_files(tmp_path):
    inputs = sorted((ROOT / "data/sample").glob("*.json")) + sorted((ROOT / "data/sample/formats").iterdir())
    for workers in (1, 2):
        prep(PrepConfig(inputs=inputs, out=tmp_path / f"out{workers}", progress=False, workers=workers))
    assert outputs(tmp_path / "out2") == outputs(tmp_path / "out1")


def test_toolllama_chunks_start_only_at_a_new_query():
    at = boundary("toolllama")
    step = lambda n, q: {"id": f"Step {n}: {q}", "conversations": []}  # noqa: E731
    assert at(step(1, "a"), step(1, "b")) and not at(step(1, "a"), step(2, "a"))
    assert boundary("tooleval") is None and boundary("xlam")(None, {})  # a running count; per record
