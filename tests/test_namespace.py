"""One import namespace: the wheel installs `dispatchtune` alone, and the README's commands run dispatchtune's code
from a folder that holds a user's own train.py, eval.py, export.py and data_prep.py (the two-process
`accelerate launch -m dispatchtune.train` from such a folder is in test_train.py)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_wheel_installs_one_top_level_package(tmp_path):
    # Built from a copy of the tracked tree (links kept as links), so no stale build/ folder can add files.
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    source = tmp_path / "source"
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name, follow_symlinks=False)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(source)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("dispatchtune-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"dispatchtune"}
    for stage in ("data_prep/prep.py", "train/sft.py", "templates/chatml_tools.jinja", "eval/score.py",
                  "eval/suite/dispatch.json", "export/gguf.py", "recipes/qwen3-0.6b.yaml"):
        assert f"dispatchtune/{stage}" in names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode()


def test_commands_run_our_code_beside_user_files(user_folder, tmp_path):
    sample = ROOT / "data/sample/formats"
    commands = [
        [str(BIN / "dispatchtune"), "--help"],
        [sys.executable, "-m", "dispatchtune", "eval", "--help"],
        [sys.executable, "-m", "dispatchtune.train", "--help"],
        [sys.executable, "-m", "dispatchtune", "prep", *map(str, sorted(sample.iterdir())), "--out",
         str(tmp_path / "data"), "--heldout-frac", "0"],
    ]
    for cmd in commands:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=user_folder, timeout=120)
        assert out.returncode == 0, (cmd, out.stderr[-2000:])
        assert "the user's own" not in out.stdout + out.stderr
    assert (tmp_path / "data/train.jsonl").is_file()
