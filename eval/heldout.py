"""Eval cases from held-out samples (prep's heldout.jsonl) and from BFCL's files.

One case per assistant turn of a held-out sample: the messages before that turn, the sample's tools, and as expected
calls exactly the calls the turn made (`[]` for a final answer: category `no_call`). The category says what the turn
asks of the model, in BFCL's terms, from the number of calls and of tools offered:
`simple` (one call, one tool), `multiple` (one call, a choice of tools), `parallel` (several calls, one tool),
`parallel_multiple` (several calls, several tools), `no_call`.

Chains. Per-turn cases feed the model the sample's own earlier turns, so they cannot tell whether it would have used
what a tool returned. A sample whose consecutive call turns (only tool results between them) pass a value from one
turn's results into a later turn's call also gives one `chain` case per such run: it starts at the turn whose results
first hold a linking value and ends at the last turn that uses one; each turn carries the sample's tool results, fed
back before the next. A linking value is an argument leaf (a string, or a number as JSON text) of at least
`MIN_LINK` characters that occurs in the run's text first inside a tool result (not in the system or user text, not
in an earlier call), matched as text with JSON escapes undone (`chain_links`). `meta["links"]` records each one
(`value`, `from_turn`, `turn`, `call`, `param`, turns counted within the chain) for the reader; scoring finds them
the same way on any chain case, hand-written ones included.

Prompt samples (no assistant turn) give one case with what is known: `irrelevance` (xLAM's empty answers, BFCL's
irrelevance categories) expects no call; a ToolBench query expects a call (`expected=None`, BFCL's relevance) with its
relevant APIs as `names`, which tool selection checks; a BFCL prompt of another category needs its possible answer
(`--format bfcl --answers`) and is skipped here, counted.

Ids are `<sample id>#<turn>` (assistant turns counted from 0) and `<sample id>#<first>-<last>` for chains; a sample
without an id is named `<source file name>:<record index>`, and a repeated id gets `~2`, `~3`, ... in file order.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from dispatchtune.data_prep.sample import Sample, ToolCall

from .bfcl import IRRELEVANCE, RELEVANCE
from .records import Case, Turn, exact

MIN_LINK = 3
SKIPPED_BFCL = "BFCL prompts without their possible answers (use --format bfcl --answers)"
_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def heldout_cases(samples: Iterable[Sample], skipped: Counter) -> Iterator[Case]:
    """Every case of every sample, in file order; samples that give none are counted in `skipped` by reason."""
    ids: Counter = Counter()
    for n, sample in enumerate(samples):
        base = _base_id(sample, n)
        ids[base] += 1
        if ids[base] > 1:
            base = f"{base}~{ids[base]}"
        cases = list(sample_cases(sample, base))
        if not cases:
            skipped[SKIPPED_BFCL] += 1
        yield from cases


def sample_cases(sample: Sample, base: str) -> Iterator[Case]:
    turns = [(i, [ToolCall.from_message(c) for c in m.get("tool_calls") or []])
             for i, m in enumerate(sample.messages) if m.get("role") == "assistant"]
    if not turns:
        case = _prompt_case(sample, base)
        if case:
            yield case
        return
    for k, (i, calls) in enumerate(turns):
        yield Case(f"{base}#{k}", category(calls, sample.tools), sample.messages[:i], sample.tools,
                   [Turn(exact(calls, sample.tools))], {"sample": base, "turn": k})
    for run in _call_runs(sample.messages, turns):
        chain = _chain(sample, base, run)
        if chain:
            yield chain


def category(calls: list[ToolCall], tools: list[dict]) -> str:
    if not calls:
        return "no_call"
    if len(calls) == 1:
        return "simple" if len(tools) == 1 else "multiple"
    return "parallel" if len(tools) == 1 else "parallel_multiple"


def searchable(text: str) -> str:
    """Text with JSON escapes undone (`\\"`, `\\u00e9`), so a value finds itself inside a JSON-encoded result."""
    return _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text.replace('\\"', '"'))


def message_text(message: dict) -> str:
    """What a message shows the model: its content and its calls' arguments, searchable."""
    parts = [message.get("content") or ""]
    parts += [json.dumps(c["function"]["arguments"], ensure_ascii=False) for c in message.get("tool_calls") or []]
    return searchable("\n".join(parts))


def leaves(value: Any) -> Iterator[str]:
    """The scalar values inside an argument, as text: strings as they are, numbers as JSON (booleans, null: none)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield json.dumps(value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from leaves(v)


def _prompt_case(sample: Sample, base: str) -> Case | None:
    meta = sample.meta
    cat = meta.get("category")
    if cat in IRRELEVANCE:
        turn, cat = Turn([]), "irrelevance"
    elif meta.get("format") == "bfcl" and cat not in RELEVANCE:
        return None
    else:
        turn, cat = Turn(None, names=meta.get("expected_tools")), "relevance"
    return Case(f"{base}#0", cat, sample.messages, sample.tools, [turn], {"sample": base, "turn": 0})


def _call_runs(messages: list[dict], turns: list[tuple[int, list]]) -> list[list[tuple[int, int, list, list]]]:
    """Runs of two or more consecutive call turns (only tool results between them): per turn, its number, its message
    index, its calls and the result messages after it."""
    runs, run = [], []
    for k, (i, calls) in enumerate(turns):
        j = i + 1
        while j < len(messages) and messages[j].get("role") == "tool":
            j += 1
        step = (k, i, calls, messages[i + 1 : j])
        if calls and run and run[-1][1] + 1 + len(run[-1][3]) == i:
            run.append(step)
        else:
            runs.append(run)
            run = [step] if calls else []
    runs.append(run)
    return [r for r in runs if len(r) > 1]


def _chain(sample: Sample, base: str, run: list[tuple[int, int, list, list]]) -> Case | None:
    """The chain case of one run of call turns, or None when no later call uses a value from an earlier result."""
    turns = [Turn(exact(calls, sample.tools), results) for _, _, calls, results in run]
    links = chain_links(sample.messages[: run[0][1]], turns)
    if not links:
        return None
    first, last = min(link["from_turn"] for link in links), max(link["turn"] for link in links)
    for link in links:
        link["from_turn"] -= first
        link["turn"] -= first
    turns = turns[first : last + 1]
    turns[-1].results = []  # nothing follows the last turn
    return Case(f"{base}#{run[first][0]}-{run[last][0]}", "chain", sample.messages[: run[first][1]], sample.tools,
                turns, {"sample": base, "turn": run[first][0], "links": links})


def chain_links(messages: list[dict], turns: list[Turn]) -> list[dict]:
    """The values the turns' expected calls (at their first values) take from earlier turns' tool results: each
    `{"value", "from_turn", "turn", "call", "param"}`, in turn order. Scoring reads them off any chain case this way,
    held-out or hand-written, to tell a value the model copied from one it made up."""
    text = "".join(message_text(m) + "\n" for m in messages)
    spans: list[tuple[int, int]] = []  # where each turn's results sit in `text`
    links = []
    for pos, turn in enumerate(turns):
        for answer in turn.expected or []:
            (name, params), = answer.items()
            for param, options in params.items():
                for leaf in leaves(options[0] if options else None):
                    source = _first_in_results(text, spans, leaf)
                    if source is not None:
                        links.append({"value": leaf, "from_turn": source, "turn": pos, "call": name, "param": param})
        text += searchable(json.dumps(turn.expected or [], ensure_ascii=False)) + "\n"
        start = len(text)
        text += "".join(message_text(m) + "\n" for m in turn.results)
        spans.append((start, len(text)))
    return links


def _first_in_results(text: str, spans: list[tuple[int, int]], leaf: str) -> int | None:
    """The turn whose results hold the first occurrence of `leaf` in the run's text so far, if one does."""
    if len(leaf.strip()) < MIN_LINK:
        return None
    at = text.find(leaf)
    for pos, (start, end) in enumerate(spans):
        if start <= at and at + len(leaf) <= end:
            return pos
    return None


def _base_id(sample: Sample, n: int) -> str:
    meta = sample.meta
    if meta.get("id") is not None:
        return str(meta["id"])
    if meta.get("source") is not None:
        return f"{Path(meta['source']).name}:{meta.get('index')}"
    return f"heldout:{n}"
