"""Benchmark hostile input: 4 MB records through `prep` and 4 MB model outputs through `eval score`'s parser.

Each hostile input is built to hit one of the shapes that were once quadratic or recursive (unclosed tags, marker
lines without their pair, deep nesting, huge numbers, Python literals). Every one must be handled, as a rejection or
a malformed verdict, in well under a second. Times are the best of three, next to a floor measured in the same run:
`orjson.loads` of a benign record of the same size.

    python scripts/bench_hostile.py
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

import orjson

from dispatchtune.data_prep.prep import PrepConfig, prep
from dispatchtune.eval.parse import parse_output

SIZE = 4 << 20


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def fill(unit: str, size: int = SIZE) -> str:
    return unit * (size // len(unit))


def hostile_records() -> dict[str, tuple[str, str, bytes]]:
    """name -> (format, file name, file bytes) holding one 4 MB hostile record."""
    def hermes(turn: str) -> bytes:
        return json.dumps({"conversations": [
            {"from": "system", "value": "<tools>[{'name': 'f', 'parameters': {}}]</tools>"},
            {"from": "human", "value": "hi"}, {"from": "gpt", "value": turn}]}).encode()

    def openai(arguments: str) -> bytes:
        return json.dumps({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": arguments}}]}],
            "tools": [{"name": "f", "parameters": {}}]}).encode()

    step = {"id": "Step 2: q", "conversations": [
        {"from": "system", "value": "p\nSpecifically, you have access to the following APIs: [{'name': 'f'}]"},
        {"from": "user", "value": "q"}, {"from": "assistant", "value": "Thought: x" + fill("\nAction: f")}]}
    half = SIZE // 2
    return {
        "hermes unclosed <tool_call> tags": ("hermes", "r.jsonl", hermes(fill("<tool_call>{'name': 'f'"))),
        "hermes repr call of 4 MB": ("hermes", "r.jsonl",
                                     hermes("<tool_call>{'name': 'f', 'arguments': {'a': [" + fill("'x', ")
                                            + "]}}</tool_call>")),
        "toolllama Action lines without Action Input": ("toolllama", "r.json", json.dumps([step]).encode()),
        "record nested 2M deep (JSON Lines)": ("openai", "r.jsonl", b"[" * half + b"]" * half),
        "record nested 2M deep (in an array)": ("openai", "r.json",
                                                b'[{"a": 1}, ' + b"[" * half + b"]" * half + b', {"b": 2}]'),
        "arguments: a 4M-digit integer": ("openai", "r.jsonl", openai('{"a": ' + fill("7") + "}")),
        "arguments nested 2M deep": ("openai", "r.jsonl", openai("[" * half + "]" * half)),
    }


def hostile_outputs() -> dict[str, str]:
    return {
        "unclosed <tool_call> tags": fill("<tool_call>{\"name\": \"f\""),
        "JSON nested 2M deep": '{"name": "f", "arguments": ' + "[" * (SIZE // 2) + "]" * (SIZE // 2) + "}",
        "JSON with a 4M-digit integer": '{"name": "f", "arguments": {"a": ' + fill("7") + "}}",
        "ReAct: Action lines without input": "Thought: x" + fill("\nAction: f"),
        "ReAct: input nested 2M deep": "Action: f\nAction Input: " + "[" * (SIZE // 2),
        "Hermes repr body of 4 MB": "<tool_call>{'name': 'f', 'arguments': {'a': [" + fill("'x', ")
                                    + "]}}</tool_call>",
        "Hermes repr body with escapes, 1 MiB": "<tool_call>{'name': 'f', 'arguments': {'a': ["
                                                + fill("'\\t', ", (1 << 20) - 60) + "]}}</tool_call>",
        "Python call of 4 MB": "f(a=[" + fill("1, ") + "])",
    }


def main() -> None:
    benign = json.dumps({"messages": [{"role": "user", "content": fill("benign text ")}]})
    floor = best(lambda: orjson.loads(benign))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (fmt, file_name, data) in hostile_records().items():
            path = Path(tmp) / file_name
            path.write_bytes(data)
            stats = {}

            def run():
                stats.update(prep(PrepConfig([path], Path(tmp) / "out", fmt, heldout_frac=0, progress=False,
                                             max_record_mb=8)))

            seconds = best(run)
            assert stats["read"] == stats["accepted"] + stats["rejected"] and stats["rejected"] >= 1, stats
            rows.append(("prep", name, seconds, ", ".join(stats["by_reason"])))
    for name, text in hostile_outputs().items():
        result = {}
        seconds = best(lambda: result.update(out=parse_output(text)))
        calls, why = result["out"]
        assert calls is None, name
        rows.append(("eval score", name, seconds, why[:60]))
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}; "
          f"floor: orjson.loads of a benign {SIZE >> 20} MiB record: {floor * 1000:.1f} ms")
    for stage, name, seconds, verdict in rows:
        print(f"{stage:10} {name:45} {seconds * 1000:8.1f} ms  {seconds / floor:6.1f}x floor  ({verdict})")
    worst = max(rows, key=lambda r: r[2])
    print(f"worst: {worst[0]} {worst[1]}: {worst[2] * 1000:.0f} ms = {worst[2] / floor:.0f}x the floor")


if __name__ == "__main__":
    main()
