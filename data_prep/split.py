"""Seeded, deterministic held-out splits by query, by tool or by category, that land on the asked fraction or say why.

Every sample has the units the split is about: its query; the tools it *calls* (a prompt: the tools it expects,
where the source says); its category. A sample is held out when any of its units is held out, so no training sample
has a held-out unit. With one query or one category per sample, that keeps each query or category on one side.
With tools it means no training sample calls a held-out tool; a held-out sample may also call tools that train (a
ToolBench G2 trace calling a new tool beside a known one is still a test of the new one). Tools a sample only offers
(xLAM's distractors, a ToolBench trace's unused APIs) are not its units: joining samples by offered tools ties every
sample to every other through the shared pool. `prep --heldout-tools-in-train` says what becomes of training samples
that offer a held-out tool.

A ToolBench tool is a RapidAPI service with several APIs (each a function `<api>_for_<tool>`); ToolBench's unseen-tool
test sets (G1_tool) hold out services, so the unit of a ToolBench function is its service (read from the description
ToolBench gives every function), and that of any other function its name.

Prompts (samples without an assistant turn) are always held out, and so are their units. Other units are taken in a
seeded order, skipping any whose samples would overshoot, until the held-out share of trainable samples reaches the
fraction. The share must land within TOLERANCE of it (relative, or MIN_SLACK samples on small sets); where it cannot,
`assign` raises a UserError that says why (one tool called by most samples, too few samples with a category, prompts
that pull in too much) rather than write a split that breaks its promise or leaves a side empty.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field

from dispatchtune.errors import UserError

from .sample import Sample
from .toolbench_schema import service_of

SPLIT_BY = ("query", "tool", "category")
TOLERANCE = 0.2  # the held-out share lands within ±20% of --heldout-frac (0.1 -> 8% to 12%) ...
MIN_SLACK = 2  # ... or within 2 samples of the target, whichever is wider (small sets move in whole samples)
PLURAL = {"query": "queries", "tool": "tools", "category": "categories"}
_HAS = {"query": "have a query", "tool": "call a tool", "category": "have a category"}


@dataclass
class SplitInfo:
    """What the split needs to know of one accepted sample. `calls`: the tool units it calls (a prompt: expects);
    `offers`: those it only offers."""

    key: str | None
    calls: tuple[str, ...]
    category: str | None
    prompt: bool
    offers: tuple[str, ...] = ()


@dataclass
class Split:
    """The held-out flag per sample, the units held out, and the numbers stats.json reports."""

    heldout: list[bool]
    units: set[str]
    stats: dict = field(default_factory=dict)


def tool_units(tools: list[dict]) -> dict[str, str]:
    """Function name -> the unit `--split-by tool` holds out: its ToolBench service, else the function itself.
    `tools` are a validated sample's (`function_tool`s)."""
    return {fn["name"]: service_of(fn["description"]) or fn["name"] for fn in (t["function"] for t in tools)}


def split_info(sample: Sample, by: str) -> SplitInfo:
    """The sample's units. It runs once per accepted sample, after validation, so it reads call names directly;
    the tools are looked at only where the split is by tool."""
    if by != "tool":
        return SplitInfo(sample.meta.get("split_key"), (), sample.meta.get("category"), not sample.has_assistant)
    units = tool_units(sample.tools)
    names, prompt = [], True
    for m in sample.messages:
        if m["role"] == "assistant":
            prompt = False
            names += [c["function"]["name"] for c in m.get("tool_calls") or ()]
    if prompt:
        names = sample.meta.get("expected_tools") or []
    calls = tuple(dict.fromkeys(sys.intern(units.get(n, n)) for n in names))
    offers = tuple(sys.intern(u) for u in dict.fromkeys(units.values()) if u not in calls)
    return SplitInfo(sample.meta.get("split_key"), calls, sample.meta.get("category"), prompt, offers)


def window(frac: float, trainable: int) -> tuple[float, float, float]:
    """Target, lowest and highest count of held-out trainable samples that honour `frac`."""
    target = frac * trainable
    slack = max(TOLERANCE * target, MIN_SLACK)
    return target, max(0.0, target - slack), min(float(trainable), target + slack)


def assign(samples: list[SplitInfo], by: str, frac: float, seed: int) -> Split:
    if by not in SPLIT_BY:
        raise ValueError(f"split-by must be one of {SPLIT_BY}, not {by!r}")
    units_of = [_units(s, i, by) for i, s in enumerate(samples)]
    members: dict[str, list[int]] = {}
    for i, units in enumerate(units_of):
        for u in units:
            members.setdefault(u, []).append(i)
    heldout = [s.prompt for s in samples]
    trainable = len(samples) - sum(heldout)
    target, low, high = window(frac, trainable)
    taken = 0

    def take(unit: str) -> None:
        nonlocal taken
        for i in members[unit]:
            if not heldout[i]:
                heldout[i] = True
                taken += 1

    held = {u for s, units in zip(samples, units_of) if s.prompt for u in units}
    for u in held:
        take(u)
    forced = taken
    for u in sorted(members.keys() - held, key=lambda u: _hash(seed, u)):
        if taken >= target:
            break
        adds = sum(not heldout[i] for i in members[u])
        if taken + adds <= high:
            take(u)
            held.add(u)

    split = Split(heldout, held, {
        "trainable": trainable, "target": round(target, 1), "window": [round(low, 1), round(high, 1)],
        "heldout_share": round(taken / trainable, 4) if trainable else None,
        "heldout_units": len(held), "heldout_by_prompts": forced,
        "trainable_without_unit": sum(not s.prompt and not u for s, u in zip(samples, units_of)),
    })
    if trainable and (not low <= taken <= high or frac > 0 and not any(heldout)):
        raise UserError(_why(by, frac, split, members, taken, forced))
    return split


def _units(s: SplitInfo, i: int, by: str) -> tuple[str, ...]:
    if by == "query":
        return (s.key if s.key is not None else f"#{i}",)
    if by == "category":
        return (s.category,) if s.category else ()
    return s.calls


def _why(by: str, frac: float, split: Split, members: dict, taken: int, forced: int) -> str:
    st, units = split.stats, PLURAL[by]
    n, (low, high) = st["trainable"], st["window"]
    head = (f"--split-by {by} cannot hold out {frac:g} of the {n} trainable samples (between {low:g} and {high:g} "
            f"of them): it would hold out {taken} ({taken / n:.1%})")
    if taken > high:
        return (f"{head}, because the prompts (samples without an answer, always held out) take their {units} "
                f"along, and with them {forced} trainable samples; prep the prompts apart, or raise --heldout-frac")
    unitless = st["trainable_without_unit"]
    if n - unitless < low or n == unitless:
        return f"{head}, because only {n - unitless} of them {_HAS[by]}, so the rest can only train"
    adds = {u: sum(not split.heldout[i] for i in members[u]) for u in members if u not in split.units}
    if not adds:
        return f"{head}, because every one of its {units} is held out already"
    big = max(adds, key=lambda u: (adds[u], u))
    return (f"{head}, because each of the {len(adds)} {units} left would add more than the {high - taken:g} samples "
            f"still allowed: the smallest adds {min(adds.values())}, the largest, {big!r}, {adds[big]} "
            f"({adds[big] / n:.0%}); try another --split-by or --heldout-frac")


def _hash(seed: int, key: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
