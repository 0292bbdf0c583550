import json
import subprocess
import sys

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
