"""Reports of one scored run: report.json (counts, rates, Wilson 95% intervals per category and overall, and the
run's metadata), report.md (a table) and report.png (a bar chart with the intervals as whiskers).

Rates come with intervals because held-out sets are small per category: 9 of 10 and 90 of 100 are both 90%, but the
first is 60-98% at 95% confidence. Wilson's interval stays inside [0, 1] and behaves at 0 and n, where the normal
approximation does not. A metric's rate counts only the cases it applies to (`n`); a metric that applies to none is
left out of its category.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from dispatchtune.atomic import write_text
from dispatchtune.runinfo import read_run_info

from .leaderboard import bfcl_summary, summary_lines
from .score import METRICS

Z95 = 1.959964
CATEGORY_ORDER = ("simple", "multiple", "parallel", "parallel_multiple", "no_call", "irrelevance", "relevance", "chain")
LABELS = {"parsed": "parsed", "tool_selection": "tool selection", "arguments": "arguments", "exact_match": "exact",
          "ast_match": "AST", "order": "order", "gating": "gating"}
PLOTTED = ("tool_selection", "arguments", "ast_match")


def wilson(passed: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = passed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(rows: list[dict]) -> dict:
    """`{"cases": n, "metrics": {metric: {"n", "passed", "rate", "ci95"}}}` over some rows."""
    metrics = {}
    for metric in METRICS:
        values = [r[metric] for r in rows if r[metric] is not None]
        if values:
            passed = sum(values)
            lo, hi = wilson(passed, len(values))
            metrics[metric] = {"n": len(values), "passed": passed, "rate": round(passed / len(values), 6),
                               "ci95": [round(lo, 6), round(hi, 6)]}
    return {"cases": len(rows), "metrics": metrics}


def build_report(rows: list[dict], meta: dict, predictions: dict) -> dict:
    by_category: dict[str, list[dict]] = {}
    for row in rows:
        by_category.setdefault(row["category"], []).append(row)
    order = sorted(by_category, key=lambda c: (CATEGORY_ORDER.index(c) if c in CATEGORY_ORDER else len(CATEGORY_ORDER), c))
    report = {"meta": meta, "overall": summarize(rows),
              "categories": {c: summarize(by_category[c]) for c in order}, "predictions": predictions}
    bfcl = bfcl_summary(rows)
    if bfcl:
        report["bfcl"] = bfcl
    return report


def rate(summary: dict, metric: str = "ast_match") -> float | None:
    m = summary["metrics"].get(metric)
    return m["rate"] if m else None


def cell(summary: dict, metric: str) -> str:
    """`83.3% (71.2-90.8)`, or `-` where the metric does not apply."""
    m = summary["metrics"].get(metric)
    if not m:
        return "-"
    lo, hi = m["ci95"]
    return f"{100 * m['rate']:.1f}% ({100 * lo:.1f}-{100 * hi:.1f})"


def markdown(report: dict) -> str:
    meta = report["meta"]
    used = [m for m in METRICS if m in report["overall"]["metrics"]]
    lines = [f"# Eval: {meta.get('name') or 'run'}", ""]
    lines += [f"- {k}: `{meta[k]}`" for k in ("model", "adapter", "gguf", "cases_file", "predictions_file") if meta.get(k)]
    lines += [f"- cases sha256: `{meta['cases_sha256'][:16]}`", "",
              "Rates with Wilson 95% intervals; `-`: does not apply.", "",
              "| category | cases | " + " | ".join(LABELS[m] for m in used) + " |",
              "|---|---:|" + "---:|" * len(used)]
    rows = [*report["categories"].items(), ("**overall**", report["overall"])]
    lines += [f"| {name} | {s['cases']} | " + " | ".join(cell(s, m) for m in used) + " |" for name, s in rows]
    if report.get("bfcl"):
        lines += ["", "```", *summary_lines(report["bfcl"]), "```"]
    p = report["predictions"]
    problems = {k: p[k] for k in ("missing", "unknown_ids", "malformed_lines", "duplicate_ids") if p.get(k)}
    if problems:
        lines += ["", "Predictions: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in problems.items())]
        lines += [f"- {e}" for e in p.get("examples", [])]
    return "\n".join(lines) + "\n"


def plot(groups: dict[str, list[tuple[str, dict]]], metric_of, path: Path, title: str) -> None:
    """Grouped bars: per group (x), one bar per (label, summary), height `metric_of(label)`'s rate, CI whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(label for bars in groups.values() for label, _ in bars))
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) * max(1, len(labels)) ** 0.5 + 2), 4.2))
    for j, label in enumerate(labels):
        xs, heights, errs = [], [], [[], []]
        for x, bars in enumerate(groups.values()):
            m = dict(bars).get(label, {"metrics": {}})["metrics"].get(metric_of(label))
            if m:
                xs.append(x + (j - (len(labels) - 1) / 2) * width)
                heights.append(m["rate"])
                errs[0].append(m["rate"] - m["ci95"][0])
                errs[1].append(m["ci95"][1] - m["rate"])
        ax.bar(xs, heights, width, yerr=errs, capsize=3, label=label)
    ax.set_xticks(range(len(groups)), [g.replace("_", "\n") for g in groups])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate (95% CI)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, report: dict) -> None:
    """report.md and report.png, then report.json last: its presence marks the scoring complete."""
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    groups = {f"{c}\n({s['cases']})": [(LABELS[m], s) for m in PLOTTED]
              for c, s in [*report["categories"].items(), ("overall", report["overall"])]}
    by_label = {LABELS[m]: m for m in PLOTTED}
    plot(groups, by_label.get, out / "report.png", f"{report['meta'].get('name') or 'eval'}: per category")
    write_text(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")


# ---- wandb ----

def wandb_target(adapter: str | None, explicit: str | None) -> dict | None:
    """The training run a report belongs to: `--wandb-run [ENTITY/PROJECT/]ID`, else the `run.json` (with a
    `wandb_run_id`) in the adapter's directory or beside it (RUN/run.json next to RUN/adapter/)."""
    if explicit:
        *path, run_id = explicit.split("/")
        return {"id": run_id, "project": path[-1] if path else None, "entity": path[0] if len(path) > 1 else None}
    if not adapter:
        return None
    for run_dir in (Path(adapter), Path(adapter).parent):
        info = read_run_info(run_dir)
        if info and info.wandb_target():
            return info.wandb_target()
    return None


def wandb_summary(report: dict, prefix: str = "eval") -> dict:
    """`<prefix>/tool_call_score` (overall AST rate), and each category's AST rate."""
    summary = {f"{prefix}/tool_call_score": rate(report["overall"])}
    summary.update({f"{prefix}/{c}": rate(s) for c, s in report["categories"].items() if rate(s) is not None})
    return summary


def log_wandb(report: dict, target: dict, prefix: str = "eval") -> None:
    """Adds the summary to the training run (resumed by id; WANDB_MODE=offline works, synced later)."""
    import wandb

    run = wandb.init(id=target["id"], project=target.get("project"), entity=target.get("entity"), resume="allow",
                     job_type="eval", reinit="create_new")
    try:
        run.summary.update(wandb_summary(report, prefix))
    finally:
        run.finish()
