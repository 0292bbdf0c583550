"""GGUF export of real-vocabulary tiny models: llama.cpp's converter recognises the tokenizer by itself, with no
fallback and no flag, and every file is verified (token ids, logits, stop ids) with a Modelfile beside it.

Needs llama-cpp-python, llama.cpp's converter and its vocabularies (scripts/install_export_tools.sh); skips cleanly
without them. Qwen3 stands for Qwen 2.5 too (the same vocabulary and pre-tokenizer); Qwen3.5's stand-in vocabulary
is recognised as `qwen2` (see RealVocab.differs), and OPT does not convert.
"""

import json
import time

import pytest

from dispatchtune.cli import main
from dispatchtune.export.gguf import export_gguf
from dispatchtune.families import FAMILIES
from test_export_gguf import _tools_missing

pytestmark = [pytest.mark.slow, pytest.mark.skipif(_tools_missing() is not None, reason=str(_tools_missing()))]
QUANTS = ["f16", "q4_k_m"]
# config.json eos ids the GGUF carries, as the published checkpoints' converted files do
EOS = {"qwen3": 151645, "llama-3.2": 128009}


def check(report: dict, out, family: str) -> None:
    assert report["passed"], [f["failures"] for f in report["files"]]
    for f in report["files"]:
        print(f"{family} {f['quant']}: {json.dumps(f['logits'])} greedy={f['greedy']}")
        assert f["tokenizer_parity"] and f["passed"]
        assert f["metadata"]["tokenizer.ggml.pre"] == FAMILIES[family].real_vocab.llama_cpp  # recognised by hash
        assert f["metadata"]["tokenizer.ggml.eos_token_id"] == EOS[family]
        modelfile = (out / f["file"]).with_suffix(".Modelfile").read_text()
        assert modelfile.startswith(f"FROM ./{f['file']}\nTEMPLATE \"\"\"")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{family}-{q}.gguf" for q in QUANTS] + [f"{family}-{q}.Modelfile" for q in QUANTS] + ["verify.json"])


@pytest.fixture
def real_llama_cpp(tiny_llama_cpp, monkeypatch):
    """llama.cpp as installed, without the tests' pre-tokenizer mapping for the trained tiny tokenizers."""
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tiny_llama_cpp.real))


def test_qwen3_exports_with_its_own_pretokenizer(real_tiny_models, real_llama_cpp, tmp_path):
    out = tmp_path / "gguf"
    started = time.monotonic()
    report = export_gguf(real_tiny_models("qwen3"), out, QUANTS, name="qwen3")
    print(f"qwen3: export + verify {time.monotonic() - started:.1f} s")
    check(report, out, "qwen3")


def test_llama_exports_from_the_command_line_without_a_flag(real_tiny_models, real_llama_cpp, tmp_path, capsys):
    out = tmp_path / "gguf"
    started = time.monotonic()
    code = main(["export", "gguf", "--model", str(real_tiny_models("llama-3.2")), "--out", str(out),
                 "--quant", ",".join(QUANTS), "--name", "llama-3.2"])
    print(f"llama-3.2: export + verify {time.monotonic() - started:.1f} s")
    assert code == 0, capsys.readouterr()
    check(json.loads((out / "verify.json").read_text()), out, "llama-3.2")
