import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dispatchtune.cli import main


def test_missing_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["prep", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "input file not found" in err[0] and "nope.json" in err[0]


def test_unknown_format_is_one_line_and_exit_2(tmp_path, capsys):
    f = tmp_path / "d.json"
    f.write_text("[]")
    with pytest.raises(SystemExit) as e:
        main(["prep", str(f), "--out", str(tmp_path / "o"), "--format", "yaml"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice: 'yaml'" in err[0]


def test_undetectable_file_is_one_line_and_exit_2(tmp_path, capsys):
    f = tmp_path / "d.json"
    f.write_text(json.dumps([{"foo": 1}]))
    assert main(["prep", str(f), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --format" in err[0]


def test_console_script_help_lists_every_stage():
    out = subprocess.run([sys.executable, "-m", "dispatchtune", "--help"], capture_output=True, text=True, check=True).stdout
    assert "prep" in out
    out = subprocess.run([sys.executable, "-m", "dispatchtune", "prep", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--split-by" in out and "--heldout-frac" in out


ROOT = Path(__file__).resolve().parents[1]
PROGRESS = re.compile(r"\d+%\|")  # a progress bar (tqdm) is progress, not noise


def newcomer(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dispatchtune", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def said(stderr: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", stderr) if line.strip() and not PROGRESS.search(line)]


def test_a_newcomers_first_commands_print_only_what_dispatchtune_says(tiny_models, tmp_path):
    """No library import noise (bitsandbytes' CPU kernel note), no deprecation warnings, no pin_memory warning on
    CPU: stderr holds dispatchtune's own lines only (and progress bars)."""
    env = {**os.environ, "DISPATCHTUNE_TINY_CACHE": str(tiny_models("qwen3").parent), "HF_HUB_OFFLINE": "1"}
    help_ = newcomer("--help", env=env)
    assert help_.returncode == 0 and help_.stderr == ""
    assert newcomer("recipes", env=env).stderr == ""
    mistake = newcomer("train", "--recipe", "tiny", "lora.r=0", env=env)
    assert mistake.returncode == 2 and said(mistake.stderr) == [
        "dispatchtune train: error: lora.r=0 is not usable: the LoRA rank must be 1 or more"]
    prep = newcomer("prep", *sorted((ROOT / "data/sample/formats").iterdir()), "--out", tmp_path / "data",
                    "--heldout-frac", "0", env=env)
    assert prep.returncode == 0 and said(prep.stderr) == []
    train = newcomer("train", "--recipe", "tiny", f"run.dir={tmp_path}", "training.max_steps=1",
                     "training.max_length=512", env=env)
    assert train.returncode == 0 and said(train.stderr) == [], train.stderr
    assert "trained 1 steps" in train.stdout
