"""Runs side by side (base vs adapter vs GGUF), and the gate that decides whether a run is good enough to ship.

The gated run is the first DIR given: `compare ADAPTER BASE GGUF --must-beat BASE --min-score 0.6` gates ADAPTER.
It passes when its overall AST rate (BFCL's verdict, `ast_match`) is at least --min-score and strictly above the
--must-beat run's; a tie does not beat. The gate compares rates, not intervals: whether a lead is more than noise is
for the reader of the table, which shows the intervals. A --must-beat run not among the DIRs joins the table. Runs
scored on different cases are not comparable: the gate refuses them (exit 2); the table only warns.
Exit codes: 0 passed (or no gate asked), 1 failed (one line saying why), 2 a user's mistake.
"""

from __future__ import annotations

import json
from pathlib import Path

from dispatchtune.errors import UserError

from .report import LABELS, METRICS, cell, plot, rate


def load_run(path: Path) -> tuple[str, dict]:
    """(name, report) of a scored run: its directory (or its report.json)."""
    file = path / "report.json" if path.is_dir() else path
    try:
        report = json.loads(file.read_text(encoding="utf-8"))
    except OSError:
        raise UserError(f"no report at {file}: score the run first (`dispatchtune eval score --out {path}`)") from None
    except json.JSONDecodeError:
        report = None
    if not (isinstance(report, dict) and {"meta", "overall", "categories"} <= report.keys()):
        raise UserError(f"{file} is not a report written by `dispatchtune eval score`")
    return report["meta"].get("name") or (path if path.is_dir() else path.parent).name, report


def load_runs(paths: list[Path]) -> dict[str, dict]:
    runs: dict[str, dict] = {}
    for path in paths:
        name, report = load_run(path)
        if name in runs:
            name = str(path)
        runs[name] = report
    return runs


def markdown(runs: dict[str, dict]) -> str:
    names = list(runs)
    categories = list(dict.fromkeys(c for r in runs.values() for c in r["categories"]))
    lines = ["## AST match by category", "", "| category | cases | " + " | ".join(names) + " |",
             "|---|---:|" + "---:|" * len(names)]
    for c in categories:
        summaries = [r["categories"].get(c) for r in runs.values()]
        cases = next(s["cases"] for s in summaries if s)
        lines.append(f"| {c} | {cases} | " + " | ".join(cell(s, "ast_match") if s else "-" for s in summaries) + " |")
    first = next(iter(runs.values()))["overall"]["cases"]
    lines.append(f"| **overall** | {first} | " + " | ".join(cell(r["overall"], "ast_match") for r in runs.values()) + " |")
    lines += ["", "## Overall, every metric", "", "| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for m in METRICS:
        if any(m in r["overall"]["metrics"] for r in runs.values()):
            lines.append(f"| {LABELS[m]} | " + " | ".join(cell(r["overall"], m) for r in runs.values()) + " |")
    if len({r["meta"].get("cases_sha256") for r in runs.values()}) > 1:
        lines += ["", "**Warning:** these runs were scored on different cases; their rates are not comparable."]
    return "\n".join(lines) + "\n"


def gate(runs: dict[str, dict], candidate: str, min_score: float | None, must_beat: str | None) -> str | None:
    """Why the candidate fails the gate, or None when it passes."""
    score = rate(runs[candidate]["overall"]) or 0.0
    if min_score is not None and score < min_score:
        return f"{candidate} overall AST match {100 * score:.1f}% is under --min-score {100 * min_score:.1f}%"
    if must_beat is not None:
        if runs[candidate]["meta"].get("cases_sha256") != runs[must_beat]["meta"].get("cases_sha256"):
            raise UserError(f"{candidate} and {must_beat} were scored on different cases; score both on one cases file")
        other = rate(runs[must_beat]["overall"]) or 0.0
        if score <= other:
            return f"{candidate} overall AST match {100 * score:.1f}% is not above {must_beat}'s {100 * other:.1f}%"
    return None


def compare(paths: list[Path], out: Path | None = None, min_score: float | None = None,
            must_beat: Path | None = None) -> tuple[str, str | None, str]:
    """(markdown table, why the gate failed or None, the gated run's name). With `out`, writes the table there and
    the chart beside it (`.png`)."""
    if min_score is not None and not 0 <= min_score <= 1:
        raise UserError(f"--min-score is a rate between 0 and 1, got {min_score}")
    resolved = [p.resolve() for p in paths]
    listed = must_beat is not None and must_beat.resolve() in resolved
    runs = load_runs(paths + ([must_beat] if must_beat is not None and not listed else []))
    names = list(runs)
    beat = None if must_beat is None else names[resolved.index(must_beat.resolve())] if listed else names[-1]
    table = markdown(runs)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table, encoding="utf-8")
        categories = list(dict.fromkeys(c for r in runs.values() for c in r["categories"]))
        groups = {c: [(n, r["categories"][c]) for n, r in runs.items() if c in r["categories"]] for c in categories}
        groups["overall"] = [(n, r["overall"]) for n, r in runs.items()]
        plot(groups, lambda _: "ast_match", out.with_suffix(".png"), "AST match per category")
    return table, gate(runs, names[0], min_score, beat), names[0]
