"""BFCL's own aggregation of its single-turn categories, so our figures sit beside the leaderboard's.

As `bfcl_eval.eval_checker.eval_runner_helper.generate_leaderboard_csv` computes them: a category's accuracy is its
passing cases over all its cases; non-live is the plain mean of simple (itself the plain mean of simple_python,
simple_java and simple_javascript), multiple, parallel and parallel_multiple; live is the mean of live_simple,
live_multiple, live_parallel and live_parallel_multiple weighted by their case counts; irrelevance is the plain mean
of irrelevance and live_irrelevance; relevance is live_relevance. A group missing one of its categories is N/A, as in
BFCL's summary columns. Multi-turn and agentic (30% and 40% of BFCL's overall score) are not run here, so there is no
overall figure.
"""

from __future__ import annotations

SIMPLE = ("simple_python", "simple_java", "simple_javascript")
NON_LIVE = ("simple", "multiple", "parallel", "parallel_multiple")
LIVE = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
IRRELEVANCE = ("irrelevance", "live_irrelevance")
RELEVANCE = ("live_relevance",)
CATEGORIES = (*SIMPLE, *NON_LIVE[1:], *LIVE, *IRRELEVANCE, *RELEVANCE)


def bfcl_summary(rows: list[dict]) -> dict | None:
    """The groups and their parts from scored rows (`category`, `ast_match`); None when no row is of a BFCL category."""
    counts: dict[str, list[int]] = {}
    for row in rows:
        if row["category"] in CATEGORIES:
            passed_total = counts.setdefault(row["category"], [0, 0])
            passed_total[0] += bool(row["ast_match"])
            passed_total[1] += 1
    if not counts:
        return None
    acc = {c: {"accuracy": p / n, "cases": n} for c, (p, n) in counts.items()}
    simple = _mean([acc.get(c) for c in SIMPLE])
    parts = {"simple": simple, **{c: acc.get(c) for c in NON_LIVE[1:]}}
    return {
        "categories": acc,
        "non_live": {"accuracy": _value(_mean(list(parts.values()))), "simple": _value(simple),
                     "missing": [c for c in (*SIMPLE, *NON_LIVE[1:]) if c not in acc]},
        "live": {"accuracy": _value(_weighted([acc.get(c) for c in LIVE])),
                 "missing": [c for c in LIVE if c not in acc]},
        "irrelevance": {"accuracy": _value(_mean([acc.get(c) for c in IRRELEVANCE])),
                        "missing": [c for c in IRRELEVANCE if c not in acc]},
        "relevance": {"accuracy": _value(acc.get("live_relevance")), "missing": [c for c in RELEVANCE if c not in acc]},
        "not_run": ["multi_turn", "agentic"],
    }


def summary_lines(summary: dict) -> list[str]:
    """The summary as a few console lines (percentages; N/A where a group misses a category)."""
    acc = summary["categories"]

    def pct(value):
        return "N/A" if value is None else f"{100 * value:.2f}%"

    def part(c):
        return f"{c} {pct(acc[c]['accuracy']) if c in acc else 'N/A'}"

    nl, live = summary["non_live"], summary["live"]
    return [
        "BFCL v4, its own aggregation (multi-turn and agentic not run, so no overall):",
        f"  non-live    {pct(nl['accuracy'])}  (simple {pct(nl['simple'])} = mean of "
        + ", ".join(part(c) for c in SIMPLE) + "; " + ", ".join(part(c) for c in NON_LIVE[1:]) + ")",
        f"  live        {pct(live['accuracy'])}  (weighted by cases: "
        + ", ".join(f"{part(c)} of {acc[c]['cases']}" if c in acc else part(c) for c in LIVE) + ")",
        f"  irrelevance {pct(summary['irrelevance']['accuracy'])}  (mean of "
        + ", ".join(part(c) for c in IRRELEVANCE) + ")",
        f"  relevance   {pct(summary['relevance']['accuracy'])}  ({part('live_relevance')})",
    ]


def _mean(parts: list[dict | None]) -> dict | None:
    if any(p is None for p in parts):
        return None
    return {"accuracy": sum(p["accuracy"] for p in parts) / len(parts), "cases": sum(p["cases"] for p in parts)}


def _weighted(parts: list[dict | None]) -> dict | None:
    if any(p is None for p in parts):
        return None
    cases = sum(p["cases"] for p in parts)
    return {"accuracy": sum(p["accuracy"] * p["cases"] for p in parts) / cases, "cases": cases}


def _value(part: dict | None) -> float | None:
    return None if part is None else round(part["accuracy"], 6)
