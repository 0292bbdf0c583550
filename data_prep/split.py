"""Seeded, deterministic held-out splits by query, by tool or by category.

Samples are grouped, groups are ordered by a seeded hash of their key, and groups are held out in that order until
the held-out share reaches the fraction. Whole groups move, so a query (or a tool, or a category) is never on both
sides. For `tool`, groups are the connected components of the "used together in one sample" graph: that is what it
takes for no tool of a held-out sample to appear in training (ToolBench's G1_tool idea). Groups that hold a prompt
(a sample with no assistant turn, e.g. a ToolBench query or a BFCL question) are held out whole: prompts cannot train.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

SPLIT_BY = ("query", "tool", "category")


@dataclass
class SplitInfo:
    """What the split needs to know of one accepted sample."""

    key: str | None
    tools: list[str]
    category: str | None
    prompt: bool


def assign(samples: list[SplitInfo], by: str, frac: float, seed: int) -> list[bool]:
    """Held-out flag per sample."""
    if by not in SPLIT_BY:
        raise ValueError(f"split-by must be one of {SPLIT_BY}, not {by!r}")
    groups = _groups(samples, by)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    heldout = [False] * len(samples)
    forced = {g for g, idx in members.items() if any(samples[i].prompt for i in idx)}
    for g in forced:
        for i in members[g]:
            heldout[i] = True
    trainable = sum(not s.prompt for s in samples)
    target = frac * trainable
    taken = sum(not samples[i].prompt for g in forced for i in members[g])
    for g in sorted(set(members) - forced, key=lambda g: _hash(seed, g)):
        if taken >= target:
            break
        for i in members[g]:
            heldout[i] = True
        taken += len(members[g])
    return heldout


def _groups(samples: list[SplitInfo], by: str) -> list[str]:
    if by == "query":
        return [s.key if s.key is not None else f"#{i}" for i, s in enumerate(samples)]
    if by == "category":
        return [s.category or "" for s in samples]
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for s in samples:
        for t in s.tools[1:]:
            parent[find(t)] = find(s.tools[0])
    # A sample with no tools forms its own group.
    return [find(s.tools[0]) if s.tools else f"#{i}" for i, s in enumerate(samples)]


def _hash(seed: int, key: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
