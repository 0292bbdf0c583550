"""`dispatchtune run` on the tiny recipe, on CPU: every stage's artefacts, a re-run that skips every stage, a
killed training run that resumes, a failing gate that stops before merge, a full fine-tune through every stage, and
recipe mistakes refused before any work.

One pipeline run (the module's fixture) serves every test; the others copy what they need of it, so only their own
stages run. Kept fast by overrides of the recipe: prep drops samples over 512 tokens (the long ToolBench traces),
leaving the short format samples; three training steps; four eval cases of eight new tokens each.
"""

import io
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import huggingface_hub.constants
import pytest

from dispatchtune.cli import main
from test_export_gguf import _tools_missing

ROOT = Path(__file__).resolve().parents[1]
FAST = ["data.max_tokens=512", "training.max_length=512", "training.max_steps=3", "eval.max_cases=4",
        "eval.max_new_tokens=8"]
NO_GGUF = _tools_missing()  # None where llama-cpp-python and llama.cpp's converter are installed
QUANTS = ("f16", "q8_0", "q4_k_m")
STAGES = ("prep", "train", "eval cases", "eval base", "eval adapter", "merge", "export gguf", "eval gguf-f16",
          "compare")


def dispatch(run_dir: Path, *overrides: str) -> tuple[int, str]:
    """`dispatchtune run` on the tiny recipe with FAST: its exit code and everything it printed."""
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        code = main(["run", "--recipe", "recipes/tiny.yaml", "--out", str(run_dir), *FAST, *overrides])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def env(tiny_models, tiny_llama_cpp):
    """tiny:qwen3 resolves to the session's tiny model; no network, wandb offline; the recipe's data.inputs are
    relative to the repository root; llama.cpp's converter knows the tiny tokenizer (tests/llama_cpp_tiny.py)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISPATCHTUNE_TINY_CACHE", str(tiny_models("qwen3").parent))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mp.setenv("WANDB_MODE", "offline")
        mp.chdir(ROOT)
        yield


@pytest.fixture(scope="module")
def run(env, tmp_path_factory) -> tuple[Path, str]:
    """The whole pipeline, once (without GGUF files where llama.cpp's tools are missing)."""
    run_dir = tmp_path_factory.mktemp("pipeline") / "tiny"
    code, output = dispatch(run_dir, *(["export.quants=[]"] if NO_GGUF else []))
    assert code == 0, output
    return run_dir, output


def test_every_stage_writes_its_artefacts(run):
    run_dir, output = run
    assert (run_dir / "data/stats.json").is_file() and (run_dir / "data/heldout.jsonl").is_file()
    assert (run_dir / "adapter/adapter_config.json").is_file() and (run_dir / "run.json").is_file()
    assert (run_dir / "eval/cases.jsonl").read_text().count("\n") == 4  # eval.max_cases
    for name in ("base", "adapter"):
        assert (run_dir / "eval" / name / "report.json").is_file()
    assert '"passed": true' in (run_dir / "merged/verify.json").read_text()
    assert "| category | cases | base | adapter |" in (run_dir / "eval/compare.md").read_text()
    assert "gate: passed (eval.min_score 0.0, eval.must_beat_base false)" in output
    assert f"adapter: {run_dir / 'adapter'}" in output and f"merged:  {run_dir / 'merged'}" in output


def test_gguf_files_are_verified_and_evaluated(run):
    if NO_GGUF:
        pytest.skip(f"no GGUF export here: {NO_GGUF}")
    run_dir, output = run
    gguf = run_dir / "gguf"
    for quant in QUANTS:
        assert (gguf / f"tiny-{quant}.gguf").is_file() and (gguf / f"tiny-{quant}.Modelfile").is_file()
    assert '"passed": true' in (gguf / "verify.json").read_text()
    assert (run_dir / "eval/gguf-f16/report.json").is_file()
    compare = (run_dir / "eval/compare.md").read_text()
    assert "| category | cases | base | adapter | gguf-f16 |" in compare
    assert "## gguf-f16 vs adapter (llama.cpp vs transformers)" in compare
    assert "tiny-f16.gguf, tiny-q8_0.gguf, tiny-q4_k_m.gguf, a Modelfile beside each" in output


def test_a_rerun_skips_every_stage(run):
    run_dir, _ = run
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    code, output = dispatch(run_dir, *(["export.quants=[]"] if NO_GGUF else []))
    assert code == 0, output
    skipped = [line.split(" (")[0].removeprefix("skip: ") for line in output.splitlines() if line.startswith("skip: ")]
    assert skipped == [s for s in STAGES if not (NO_GGUF and s == "eval gguf-f16")]
    assert "\n== " not in output  # no stage ran
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before


def test_a_killed_training_run_resumes_from_its_checkpoint(run, tmp_path):
    """RUN/checkpoints without run.json is what a killed run leaves; the pipeline continues it. (A gate no adapter
    passes stops the run after its evals, to keep the test short.)"""
    run_dir, _ = run
    for part in ("data", "checkpoints"):
        shutil.copytree(run_dir / part, tmp_path / part)
    code, output = dispatch(tmp_path, "eval.min_score=1")
    assert f"resuming from {tmp_path / 'checkpoints/checkpoint-3'}" in output
    assert (tmp_path / "run.json").is_file() and (tmp_path / "adapter/adapter_config.json").is_file()
    assert code == 1 and "gate failed" in output


def test_a_failing_gate_stops_before_merge(run, tmp_path):
    run_dir, _ = run
    shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("merged", "gguf*", "compare.md"))
    code, output = dispatch(tmp_path / "run", "eval.min_score=1")
    assert code == 1
    reason = output.strip().splitlines()[-1]
    assert reason.startswith("dispatchtune run: gate failed: adapter overall AST match")
    assert reason.endswith("(eval.min_score 1.0, eval.must_beat_base false); stopped before merge")
    assert not (tmp_path / "run/merged").exists() and "== merge" not in output


def test_a_full_finetune_evaluates_merges_and_exports_the_trained_model(run, tmp_path):
    """model.finetune=full: RUN/adapter holds the trained model, which the adapter eval runs in place of the base;
    the base eval is the base's; merge copies it, verified, and the GGUF comes from that copy."""
    run_dir = tmp_path / "full"
    shutil.copytree(run[0] / "data", run_dir / "data")  # the same prepared data
    code, output = dispatch(run_dir, "model.finetune=full", f"export.quants={'[]' if NO_GGUF else '[f16]'}")
    assert code == 0, output
    assert (run_dir / "adapter/model.safetensors").is_file() and not (run_dir / "adapter/adapter_config.json").exists()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["model"]["finetune"] == "full"
    base, tuned = (json.loads((run_dir / "eval" / name / "generation.json").read_text()) for name in ("base", "adapter"))
    assert base["model"] == info["model"]["resolved"] and base["adapter"] is None
    assert tuned["model"] == tuned["adapter"] == str(run_dir / "adapter")
    verify = json.loads((run_dir / "merged/verify.json").read_text())
    assert verify["passed"] and verify["finetune"] == "full" and verify["metrics"]["top1"] == 1.0
    assert f"model:   {run_dir / 'adapter'}" in output and "verified against the trained model" in output
    if not NO_GGUF:
        assert '"passed": true' in (run_dir / "gguf/verify.json").read_text()
        assert (run_dir / "eval/gguf-f16/report.json").is_file()


@pytest.mark.parametrize("override, message", [
    ("eval.min_score=1.5", "eval.min_score is a rate between 0 and 1, got 1.5"),
    ("eval.suite=bfcl", "eval.suite 'bfcl' is not a built-in suite; choose one of dispatch or null"),
    ("eval.max_cases=0", "eval.max_cases must be positive"),
    ("export.quants=[f16,q3]", "export.quants ['f16', 'q3']: choose from f32, f16"),
    ("data.inputs=[data/nothing/*.json]", "data.inputs: data/nothing/*.json matches no file"),
    ("data.train=elsewhere.jsonl", "set either data.inputs or data.train/data.heldout, not both"),
    ("data.inputs=null", "set data.inputs (the files or globs to prep), or data.train ("),
])
def test_recipe_mistakes_are_refused_before_any_work(env, tmp_path, capsys, override, message):
    code = main(["run", "--recipe", "recipes/tiny.yaml", "--out", str(tmp_path / "run"), override])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (after any import chatter of the libraries)
    assert err.startswith("dispatchtune run: error: ") and message in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("family, overrides", [
    ("llama-3.2", ["model.template_kwargs={date_string: 26 Jul 2024}"]),
    # Gemma 3 trains with gemma3_tools (its own template refuses tool turns); without data.max_tokens the long
    # ToolBench traces stay, and need their full length.
    ("gemma3", ["model.chat_template=gemma3_tools", "data.max_tokens=null", "training.max_length=8192"]),
])
def test_each_convertible_family_ends_with_verified_gguf_files(env, tiny_models, tmp_path, family, overrides):
    if NO_GGUF:
        pytest.skip(f"no GGUF export here: {NO_GGUF}")
    tiny_models(family)  # built into the cache that `tiny:` reads
    code, output = dispatch(tmp_path / family, f"model.name_or_path=tiny:{family}", *overrides)
    assert code == 0, output
    gguf = tmp_path / family / "gguf"
    assert '"passed": true' in (tmp_path / family / "merged/verify.json").read_text()
    assert '"passed": true' in (gguf / "verify.json").read_text()
    for quant in QUANTS:
        assert (gguf / f"{family}-{quant}.gguf").is_file() and (gguf / f"{family}-{quant}.Modelfile").is_file()
