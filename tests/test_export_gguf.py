"""`dispatchtune export gguf`: llama.cpp's converter and quantiser on merged tiny models, every file verified.

Needs llama-cpp-python and llama.cpp's converter (scripts/install_export_tools.sh); skips cleanly without them.
The tiny tokenizers are trained locally, so llama.cpp cannot recognise their pre-tokenizer by its hash: these tests
convert through tests/llama_cpp_tiny.py's tree (the `tiny_llama_cpp` fixture), and the tokenizer parity check
proves the mapped pre-tokenizer splits identically. The product itself runs the converter unpatched.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dispatchtune.cli import main
from dispatchtune.errors import UserError
from dispatchtune.export import llama_cpp_tools
from dispatchtune.export.gguf import export_gguf
from dispatchtune.export.merge import merge
from test_export_merge import TRAINING_TEMPLATE, make_adapter


def _tools_missing() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (bash scripts/install_export_tools.sh)"
    cached = llama_cpp_tools.CACHE_DIR / f"llama.cpp-{llama_cpp_tools.llama_cpp_version()}" / "convert_hf_to_gguf.py"
    if not (os.environ.get("LLAMA_CPP_DIR") or cached.is_file()):
        return "llama.cpp's converter is not unpacked (bash scripts/install_export_tools.sh)"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_tools_missing() is not None, reason=str(_tools_missing()))]
QUANTS = ["f16", "q8_0", "q4_k_m"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def merged(tiny_models, tiny_llama_cpp, tmp_path_factory):
    """`merged(family) -> Path`: a merged model of the family's tiny model and a LoRA adapter that changes it."""
    root, done = tmp_path_factory.mktemp("gguf_merged"), {}

    def build(family: str) -> Path:
        if family not in done:
            base = tiny_models(family)
            adapter = make_adapter(base, root / family / "adapter", TRAINING_TEMPLATE[family])
            assert merge(adapter, root / family / "merged")["passed"]
            done[family] = root / family / "merged"
        return done[family]

    return build


@pytest.mark.parametrize("family", ["qwen3", "qwen3.5", "llama-3.2", "gemma3"])
def test_export_verifies_every_quant(merged, tmp_path, family):
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    out = tmp_path / "gguf"
    started = time.monotonic()
    report = export_gguf(merged(family), out, QUANTS, name=family)
    print(f"{family}: export + verify {time.monotonic() - started:.1f} s")
    for f in report["files"]:
        print(f"  {f['quant']}: {json.dumps(f['logits'])} greedy={f['greedy']}")

    assert report["passed"], [f["failures"] for f in report["files"]]
    assert json.loads((out / "verify.json").read_text()) == report
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{family}-{q}.gguf" for q in QUANTS] + [f"{family}-{q}.Modelfile" for q in QUANTS] + ["verify.json"])
    tokenizer = AutoTokenizer.from_pretrained(merged(family))
    for f in report["files"]:
        assert f["tokenizer_parity"] and f["passed"]
        assert f["metadata"]["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
        fields = GGUFReader(out / f["file"]).fields
        assert fields["tokenizer.chat_template"].contents() == tokenizer.chat_template
        modelfile = (out / f["file"]).with_suffix(".Modelfile").read_text()
        assert modelfile.startswith(f"FROM ./{f['file']}\nTEMPLATE \"\"\"")
        assert ("PARSER qwen3.5" in modelfile) == (family == "qwen3.5")  # Ollama reads Qwen 3.5's XML calls so
    by_quant = {f["quant"]: f for f in report["files"]}
    assert by_quant["f16"]["greedy"] in ("equal", "near-tie") and by_quant["q8_0"]["greedy"] is None
    assert by_quant["q4_k_m"]["size_mb"] < by_quant["q8_0"]["size_mb"] < by_quant["f16"]["size_mb"]
    assert not list(tmp_path.glob(".gguf.partial-*"))
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # as mkdir makes it, not mkdtemp's 0700


def test_rerun_skips_and_other_quants_need_force(merged, tmp_path, capsys):
    args = ["export", "gguf", "--model", str(merged("qwen3")), "--out", str(tmp_path / "g"), "--quant", "q8_0"]
    assert main(args) == 0
    stamp = (tmp_path / "g" / "verify.json").stat().st_mtime_ns
    assert main(args) == 0 and "(existing)" in capsys.readouterr().out
    assert (tmp_path / "g" / "verify.json").stat().st_mtime_ns == stamp
    assert main([*args[:-1], "f16"]) == 2
    assert "--force" in capsys.readouterr().err


def test_the_product_runs_the_converter_unpatched(merged, tiny_llama_cpp, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tiny_llama_cpp.real))  # llama.cpp as installed, no test support
    with pytest.raises(UserError, match="pre-tokenizer was not recognized.*published models"):
        export_gguf(merged("llama-3.2"), tmp_path / "g", ["f16"], name="m")
    assert list(tmp_path.iterdir()) == []


def test_opt_is_refused_before_any_work(merged, tmp_path, capsys):
    model = merged("opt")
    capsys.readouterr()
    code = main(["export", "gguf", "--model", str(model), "--out", str(tmp_path / "g")])
    out, err = capsys.readouterr()
    assert code == 2 and "cannot convert OPTForCausalLM" in err and len(err.strip().splitlines()) == 1
    assert "converting" not in out and list(tmp_path.iterdir()) == []  # refused before the converter ran


# A stand-in llama.cpp checkout whose converter writes part of its output and then dies (or hangs, to be killed):
# what a crash, an out-of-memory kill or Ctrl-C mid-conversion leaves behind.
FAKE_CONVERTER = """
import os, sys, time
from pathlib import Path

class ModelBase:
    @staticmethod
    def register(*names):
        return lambda cls: cls

@ModelBase.register("Qwen3ForCausalLM")
class Qwen3Model:
    pass

def main():
    out = Path(sys.argv[sys.argv.index("--outfile") + 1])
    out.write_bytes(b"GGUF" + b"\\0" * 4096)
    if os.environ.get("FAKE_CONVERTER_HANG"):
        time.sleep(600)
    sys.exit("converter crashed half-way")
"""


@pytest.fixture
def fake_llama_cpp(tmp_path, monkeypatch):
    folder = tmp_path / "llama.cpp"
    folder.mkdir()
    (folder / "convert_hf_to_gguf.py").write_text(FAKE_CONVERTER)
    monkeypatch.setenv("LLAMA_CPP_DIR", str(folder))
    return folder


def test_failed_conversion_leaves_no_file_behind(merged, tmp_path, fake_llama_cpp):
    with pytest.raises(UserError, match="converter crashed half-way"):
        export_gguf(merged("qwen3"), tmp_path / "out" / "gguf", ["f16", "q4_k_m"], name="m")
    assert list((tmp_path / "out").iterdir()) == []  # neither the final directory nor the staging one


def test_killed_export_leaves_nothing_at_the_final_path(merged, tmp_path, fake_llama_cpp):
    out = tmp_path / "out" / "gguf"
    env = {**os.environ, "FAKE_CONVERTER_HANG": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dispatchtune", "export", "gguf", "--model", str(merged("qwen3")), "--out", str(out),
         "--quant", "f16"], cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "out").glob(".gguf.partial-*/*.gguf")):
            assert proc.poll() is None and time.monotonic() < deadline, "the conversion never started"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the export and its converter child, as an OOM kill or a lost node
        proc.wait()
    assert not out.exists()
