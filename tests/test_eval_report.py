"""Reports (json, md, png), Wilson intervals, compare and its gate, and logging to a training run's wandb."""

import json
import os
from pathlib import Path

import pytest

from dispatchtune.data_prep.sample import function_tool
from dispatchtune.cli import main
from dispatchtune.eval.records import Case, Turn
from dispatchtune.eval.report import wilson
from dispatchtune.eval.api import score_files

TOOL = function_tool("get_weather", "d", {"type": "object", "properties": {"city": {"type": "string"}},
                                          "required": ["city"]})
CITIES = ["Paris", "Oslo", "Lima", "Rome", "Bern", "Kyiv", "Doha", "Baku", "Riga", "Apia"]


def write_cases(path: Path, extra: int = 0) -> Path:
    """Ten simple cases, five no-call cases and a chain; `extra` more simple ones make a different case set."""
    cases = [Case(f"s{i}", "simple", [{"role": "user", "content": c}], [TOOL], [Turn([{"get_weather": {"city": [c]}}])])
             for i, c in enumerate(CITIES + CITIES[:extra])]
    cases += [Case(f"n{i}", "no_call", [{"role": "user", "content": "hi"}], [TOOL], [Turn([])]) for i in range(5)]
    cases.append(Case("ch", "chain", [{"role": "user", "content": "Paris, then the city it names"}], [TOOL],
                      [Turn([{"get_weather": {"city": ["Paris"]}}], [{"role": "tool", "content": "Oslo"}]),
                       Turn([{"get_weather": {"city": ["Oslo"]}}])],
                      {"links": [{"value": "Oslo", "from_turn": 0, "turn": 1, "call": "get_weather", "param": "city"}]}))
    path.write_text("".join(c.to_json() + "\n" for c in cases))
    return path


def run(tmp_path: Path, name: str, right: int, cases: Path | None = None, **meta) -> Path:
    """A scored run getting the first `right` simple cases right (and every no-call case)."""
    cases = cases or write_cases(tmp_path / "cases.jsonl")
    preds = tmp_path / f"{name}.predictions.jsonl"
    lines = [{"id": f"s{i}", "calls": [{"name": "get_weather", "arguments": {"city": c if i < right else "Nowhere"}}]}
             for i, c in enumerate(CITIES)]
    lines += [{"id": f"n{i}", "text": "Hello!"} for i in range(5)]
    lines.append({"id": "ch", "turns": [{"calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
                                        {"calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}]})
    preds.write_text("".join(json.dumps(l) + "\n" for l in lines))
    score_files(cases, preds, tmp_path / name, meta={"name": name, **meta})
    return tmp_path / name


def test_wilson_interval_matches_known_values():
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(9, 10) == pytest.approx((0.5958, 0.9821), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_report_files_render_with_counts_rates_and_intervals(tmp_path):
    out = run(tmp_path, "adapter", right=7, model="tiny", adapter="RUN/adapter")
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["model"] == "tiny" and len(report["meta"]["cases_sha256"]) == 64
    assert list(report["categories"]) == ["simple", "no_call", "chain"]
    simple = report["categories"]["simple"]["metrics"]["ast_match"]
    assert (simple["n"], simple["passed"], simple["rate"]) == (10, 7, 0.7)
    assert simple["ci95"] == pytest.approx(wilson(7, 10), abs=1e-6)
    overall = report["overall"]
    assert overall["cases"] == 16 and overall["metrics"]["ast_match"]["passed"] == 13
    assert overall["metrics"]["order"]["n"] == 1 and "arguments" not in report["categories"]["no_call"]["metrics"]
    md = (out / "report.md").read_text()
    assert "| simple | 10 | 100.0% (72.2-100.0) |" in md and "| **overall** | 16 |" in md
    png = (out / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    rows = [json.loads(l) for l in (out / "cases.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"id", "category", "parsed", "tool_selection", "arguments", "exact_match", "ast_match",
                            "order", "gating", "reason"}


def compare(*argv) -> int:
    return main(["eval", "compare", *map(str, argv)])


def test_compare_tables_and_gate_exit_codes(tmp_path, capsys):
    adapter, base, gguf = run(tmp_path, "adapter", 8), run(tmp_path, "base", 4), run(tmp_path, "gguf", 8)
    assert compare(adapter, base, gguf, "--out", tmp_path / "cmp.md") == 0
    table = (tmp_path / "cmp.md").read_text()
    assert "| category | cases | adapter | base | gguf |" in table and "| simple | 10 | 80.0% (49.0-94.3) | 40.0%" in table
    assert (tmp_path / "cmp.png").read_bytes().startswith(b"\x89PNG")
    capsys.readouterr()

    assert compare(adapter, "--must-beat", base, "--min-score", 0.8) == 0  # 14/16 = 87.5%
    assert "gate passed: adapter" in capsys.readouterr().out
    assert compare(base, adapter, "--must-beat", adapter) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["dispatchtune eval compare: gate failed: base overall AST match 62.5% is not above adapter's 87.5%"]
    assert compare(gguf, "--must-beat", adapter) == 1  # a tie does not beat
    assert compare(adapter, "--min-score", 0.9) == 1
    assert "is under --min-score 90.0%" in capsys.readouterr().err


def test_gate_mistakes_are_exit_2(tmp_path, capsys):
    adapter = run(tmp_path, "adapter", 8)
    other = run(tmp_path, "base", 4, cases=write_cases(tmp_path / "other_cases.jsonl", extra=1))
    assert compare(adapter, "--must-beat", other) == 2
    assert "scored on different cases" in capsys.readouterr().err
    assert compare(adapter, "--min-score", 80) == 2
    assert compare(adapter, tmp_path / "missing") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "between 0 and 1" in err[0] and "no report at" in err[1]


def test_scores_are_logged_to_the_training_run_in_wandb(tmp_path, monkeypatch, capsys):
    """The real wandb library, offline: the adapter's run.json names the run, which is resumed by id."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "RUN" / "adapter").mkdir(parents=True)
    (tmp_path / "RUN" / "run.json").write_text(json.dumps({"wandb_run_id": "tr41n1d", "wandb_project": "dispatch"}))
    cases = write_cases(tmp_path / "cases.jsonl")
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "s0", "calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}) + "\n")
    code = main(["eval", "score", "--cases", str(cases), "--predictions", str(preds), "--out", str(tmp_path / "e"),
                 "--adapter", str(tmp_path / "RUN" / "adapter")])
    assert code == 0 and "logged eval/tool_call_score to wandb run tr41n1d" in capsys.readouterr().out
    import wandb

    wandb.teardown()  # offline, the run file is complete once wandb's service stops (at exit, for the CLI)
    runs = list((tmp_path / "wandb").glob("offline-run-*-tr41n1d"))
    assert len(runs) == 1
    data = next(runs[0].glob("*.wandb")).read_bytes()
    assert b"eval/tool_call_score" in data and b"eval/simple" in data and b"eval/chain" in data
    # Without run.json, nothing is logged.
    os.remove(tmp_path / "RUN" / "run.json")
    assert main(["eval", "score", "--cases", str(cases), "--predictions", str(preds), "--out", str(tmp_path / "f"),
                 "--adapter", str(tmp_path / "RUN" / "adapter")]) == 0
    assert "wandb" not in capsys.readouterr().out


def test_score_takes_the_run_metadata_from_generation_json(tmp_path, capsys):
    cases = write_cases(tmp_path / "cases.jsonl")
    gen = tmp_path / "adapter"
    gen.mkdir()
    (gen / "predictions.jsonl").write_text(json.dumps({"id": "s0", "text": "[get_weather(city='Paris')]"}) + "\n")
    (gen / "generation.json").write_text(json.dumps({"model": "tiny-base", "adapter": "RUN/adapter", "gguf": None,
                                                     "tokenizer": str(tmp_path / "no-such-tokenizer")}))
    argv = ["eval", "score", "--cases", str(cases), "--predictions", str(gen / "predictions.jsonl"), "--out", str(gen),
            "--no-wandb"]
    assert main(argv) == 2  # the tokenizer generation used is gone: say how to go on without it
    assert "pass --tokenizer none" in capsys.readouterr().err
    assert main(argv + ["--tokenizer", "none"]) == 0
    meta = json.loads((gen / "report.json").read_text())["meta"]
    assert (meta["name"], meta["model"], meta["adapter"]) == ("adapter", "tiny-base", "RUN/adapter")
    assert meta["tokenizer"] is None
    assert json.loads((gen / "cases.jsonl").read_text().splitlines()[0])["ast_match"]
