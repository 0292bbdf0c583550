"""Export-side mistakes and faults: each is one line naming what to fix (exit code 2), nothing half-written stays
behind, a killed export leaves nothing running, and the converter never runs a model directory's own code."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dispatchtune.cli import main
from dispatchtune.export import llama_cpp_tools
from dispatchtune.export.merge import merge
from test_export_merge import make_adapter


@pytest.fixture(scope="module")
def adapter(tiny_models, tmp_path_factory):
    return make_adapter(tiny_models("qwen3"), tmp_path_factory.mktemp("adapter") / "adapter")


def one_line(capsys, command: str) -> str:
    """The one line the command said on stderr (progress bars aside)."""
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not re.search(r"\d+%\|", line)]
    assert len(err) == 1 and err[0].startswith(f"dispatchtune {command}: error: "), err
    return err[0]


def not_a_model(tmp_path, base: Path) -> dict[str, Path]:
    """Directories that look like a model and are not: empty, a config without weights, a corrupt config."""
    empty, config_only, corrupt = tmp_path / "empty", tmp_path / "config-only", tmp_path / "corrupt"
    for folder in (empty, config_only, corrupt):
        folder.mkdir()
    (config_only / "config.json").write_text((base / "config.json").read_text())
    (corrupt / "config.json").write_text('{"model_type": "qwen3", ')
    (corrupt / "model.safetensors").symlink_to(base / "model.safetensors")
    return {"empty": empty, "config only": config_only, "corrupt": corrupt}


def test_output_that_is_a_file_or_below_one(adapter, tiny_models, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(["merge", "--adapter", str(adapter), "--out", str(afile)]) == 2
    assert f"merge output {afile} is a file, not a directory" in one_line(capsys, "merge")
    assert main(["merge", "--adapter", str(adapter), "--out", str(afile / "merged")]) == 2
    assert f"merge output {afile}/merged cannot be created: {afile} is a file" in one_line(capsys, "merge")
    assert main(["export", "gguf", "--model", str(tiny_models("qwen3")), "--out", str(afile / "gguf")]) == 2
    assert f"GGUF output {afile}/gguf cannot be created: {afile} is a file" in one_line(capsys, "export")
    assert afile.read_text() == "mine"


def test_merge_base_missing_or_not_a_model(adapter, tiny_models, tmp_path, capsys):
    assert main(["merge", "--adapter", str(adapter), "--out", str(tmp_path / "m"), "--base", "/no/such/base"]) == 2
    assert "model /no/such/base is neither a local directory nor a Hub id" in one_line(capsys, "merge")
    broken = not_a_model(tmp_path, tiny_models("qwen3"))
    expected = {"empty": "holds no model (no config.json)", "config only": "holds no weights",
                "corrupt": "its config.json cannot be read"}
    for name, folder in broken.items():
        assert main(["merge", "--adapter", str(adapter), "--out", str(tmp_path / "m"), "--base", str(folder)]) == 2
        assert expected[name] in one_line(capsys, "merge"), name
    assert not (tmp_path / "m").exists()


def test_export_model_that_is_not_a_model(tiny_models, tmp_path, capsys):
    broken = not_a_model(tmp_path, tiny_models("qwen3"))
    expected = {"empty": "has no config.json; --model must be a merged model directory",
                "config only": "holds no weights", "corrupt": "config.json cannot be read"}
    for name, folder in broken.items():
        assert main(["export", "gguf", "--model", str(folder), "--out", str(tmp_path / "g")]) == 2
        assert expected[name] in one_line(capsys, "export"), name
    assert not (tmp_path / "g").exists()


def test_stale_staging_folders_go_and_the_output_gets_normal_permissions(adapter, tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that no longer runs: a killed merge's
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # a merge still running
    stale = [tmp_path / f".merged.partial-{gone.pid}-abc123", tmp_path / ".merged.partial-old5678"]
    running = tmp_path / f".merged.partial-{live.pid}-def456"
    for folder in [*stale, running]:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"\0" * 1024)
    try:
        assert merge(adapter, tmp_path / "merged")["passed"]
    finally:
        live.kill()
        live.wait()
    assert not any(folder.exists() for folder in stale) and running.is_dir()
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "merged").stat().st_mode & 0o777 == 0o777 & ~umask  # as mkdir makes it, not mkdtemp's 0700


def test_full_disk_during_merge_is_one_line_and_leaves_nothing(adapter, small_disk, capsys):
    assert main(["merge", "--adapter", str(adapter), "--out", str(small_disk / "merged")]) == 2
    assert f"no space left on the device of {small_disk / 'merged'} while writing there" in one_line(capsys, "merge")
    assert list(small_disk.iterdir()) == []


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by a container's init, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_tool_child_dies_with_its_parent(tmp_path):
    """What the converter and the quantiser run as: kill the export (SIGKILL, as an OOM kill) and its child goes too."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from dispatchtune.export.llama_cpp_tools import _run
        child = "import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
        _run([sys.executable, "-c", child], Path({str(tmp_path / 'tool.log')!r}), "the tool failed")
    """)], env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text()):
        assert parent.poll() is None and time.monotonic() < deadline, "the child never started"
        time.sleep(0.1)
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    try:
        deadline = time.monotonic() + 10
        while running(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(child), "the tool kept running after its parent was killed"
    finally:
        if running(child):
            os.kill(child, signal.SIGKILL)


# llama.cpp's converter loads tokenizers with AutoTokenizer.from_pretrained(dir, trust_remote_code=True) (16 places
# in its model classes): this stand-in converter does exactly that, then writes its output.
FORCING_CONVERTER = """
import sys
from pathlib import Path

from transformers import AutoTokenizer


def main():
    model_dir = Path(sys.argv[1])
    AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    Path(sys.argv[sys.argv.index("--outfile") + 1]).write_bytes(b"GGUF")
"""


def test_the_converter_never_runs_a_model_directorys_own_code(tiny_models, tmp_path, monkeypatch):
    model, marker = tmp_path / "model", tmp_path / "code-ran"
    model.mkdir()
    for f in tiny_models("qwen3").iterdir():
        (model / f.name).symlink_to(f)
    (model / "tokenizer_config.json").unlink()
    config = json.loads((tiny_models("qwen3") / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "auto_map": {
        "AutoTokenizer": [None, "crafted.CraftedTokenizer"]}}))
    (model / "crafted.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
                                      "from transformers import PreTrainedTokenizerFast as CraftedTokenizer\n")
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    # the control: asked to trust remote code, transformers runs the directory's crafted.py
    subprocess.run([sys.executable, "-c", "import sys; from transformers import AutoTokenizer; "
                    "AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)", str(model)], check=True)
    assert marker.read_text() == "ran"
    marker.unlink()

    converter = tmp_path / "llama.cpp"
    converter.mkdir()
    (converter / "convert_hf_to_gguf.py").write_text(FORCING_CONVERTER)
    monkeypatch.setenv("LLAMA_CPP_DIR", str(converter))
    llama_cpp_tools.convert(model, tmp_path / "m.gguf", "f32", tmp_path / "convert.log")
    assert (tmp_path / "m.gguf").read_bytes() == b"GGUF"  # converted, with transformers' own tokenizer class
    assert not marker.exists()  # and the crafted code never ran
