"""The foundation under the stages: outputs renamed into place only once complete, and the run.json record."""

import json
import os
import subprocess
import sys

import pytest

from dispatchtune.atomic import commit, remove_stale, staging, staging_path, write_text
from dispatchtune.errors import UserError
from dispatchtune.runinfo import RunInfo, is_full_model, read_run_info, write_run_info


def test_write_text_leaves_only_the_target(tmp_path):
    target = tmp_path / "sub" / "report.json"
    write_text(target, "one")
    write_text(target, "two")
    assert target.read_text() == "two" and os.listdir(target.parent) == ["report.json"]


def test_a_failed_or_uncommitted_output_leaves_nothing(tmp_path):
    target = tmp_path / "merged"
    with pytest.raises(RuntimeError):
        with staging(target, directory=True) as tmp:
            assert tmp.name == f".merged.partial-{os.getpid()}" and tmp.is_dir()
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed")
    with staging(target) as tmp:
        tmp.write_text("not good enough")  # not committed
    assert list(tmp_path.iterdir()) == []


def test_a_directory_replaces_one_in_place_unless_told_not_to(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old").write_text("old")
    with staging(target, directory=True) as tmp:
        (tmp / "new").write_text("new")
        with pytest.raises(FileExistsError):
            commit(tmp, target, replace=False)
        assert os.listdir(target) == ["old"]
        commit(tmp, target)
    assert os.listdir(target) == ["new"] and os.listdir(tmp_path) == ["out"]


def test_stale_leftovers_go_and_those_of_running_processes_stay(tmp_path):
    target = tmp_path / "adapter"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftovers = {
        "dead": staging_path(target, int(dead.stdout)),
        "dead_old": staging_path(target, f"{int(dead.stdout)}-old"),
        "mine": staging_path(target),
        "running": staging_path(target, os.getppid()),
    }
    for path in leftovers.values():
        path.mkdir()
        (path / "file").write_text("x")
    (tmp_path / ".adapter-other.partial-1").mkdir()  # another target's
    removed = remove_stale(target)
    assert sorted(removed) == sorted([leftovers["dead"], leftovers["dead_old"], leftovers["mine"]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([leftovers["running"].name, ".adapter-other.partial-1"])


def test_run_info_round_trip_and_partial_files(tmp_path):
    assert read_run_info(tmp_path) is None
    info = RunInfo(recipe={"model": {"template_kwargs": {"enable_thinking": False}}},
                   model={"name_or_path": "tiny:qwen3", "qlora": False}, wandb_run_id="abc", wandb_project="p")
    write_run_info(tmp_path, info)
    assert read_run_info(tmp_path) == info and os.listdir(tmp_path) == ["run.json"]
    assert info.template_kwargs == {"enable_thinking": False} and info.qlora is False
    assert info.base_model == "tiny:qwen3" and info.wandb_target() == {"id": "abc", "project": "p", "entity": None}

    (tmp_path / "run.json").write_text(json.dumps({"model": {"qlora": True}}))  # written by hand: the rest missing
    partial = read_run_info(tmp_path)
    assert partial.qlora is True and partial.template_kwargs == {} and partial.wandb_target() is None
    assert partial.finetune == "lora"  # a run.json from before model.finetune: a LoRA run
    (tmp_path / "run.json").write_text(json.dumps({"model": {"finetune": "full"}}))
    assert read_run_info(tmp_path).finetune == "full"


def test_a_full_finetunes_adapter_dir_is_told_from_a_lora_adapter(tmp_path):
    """RUN/adapter holds a LoRA adapter (adapter_config.json, perhaps beside a config.json) or a whole model."""
    assert not is_full_model(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert is_full_model(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{}")
    assert not is_full_model(tmp_path)


@pytest.mark.parametrize("text, problem", [
    ("{not json", "is not JSON"),
    ("[1, 2]", "a JSON object expected"),
    (json.dumps({"metrics": [1]}), "metrics must be an object"),
    (json.dumps({"wandb_run_id": 7}), "wandb_run_id must be a string"),
    (json.dumps({"recipe": {"model": {"template_kwargs": [1]}}}), "template_kwargs must be an object"),
    (json.dumps({"model": {"qlora": "yes"}}), "model.qlora must be"),
    (json.dumps({"model": {"finetune": "partial"}}), "model.finetune must be lora, full or null"),
    (json.dumps({"surprise": 1}), "unknown key 'surprise'"),
])
def test_a_bad_run_json_is_a_user_error_naming_the_file(tmp_path, text, problem):
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(UserError, match=problem) as e:
        read_run_info(tmp_path)
    assert str(tmp_path / "run.json") in str(e.value)
