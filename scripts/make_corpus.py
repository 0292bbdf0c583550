"""Seeded corpora of the shapes real users bring, of any size: ToolLLaMA step records and xLAM records.

`toolllama`: ToolBench's `toolllama_G123_dfs_train.json` (a JSON array of `Step N: <query>` records, one per prefix
of a trace). A pool of RapidAPI services (ToolBench's "tools"), each with several APIs named `<api>_for_<service>`
and grouped in categories, is shared by all traces, with a long-tailed popularity: a few services are in many
traces, most in a few. Half the traces use one service (G1), the others two or three of one category (G2/G3), and
some offer a service they never call. The texts (ToolBench's system prompt, service and API descriptions, queries,
API responses, final answers) are taken from the bundled real sample, so records have the real sizes (~4-10 KB).

`xlam`: Salesforce xLAM (`{"id", "query", "tools", "answers"}`, tools and answers as JSON text, xLAM's parameter
notation). One shared pool of APIs (one per ~17 records, as xLAM's ~3,600 for 60k), each record offering 1-5 of them:
the ones it calls and distractors drawn by the same long-tailed popularity; 1-3 calls, some parallel calls of one
API, and ~3% `answers: []` (no tool applies).

    python scripts/make_corpus.py --shape toolllama --records 20000 --seed 0 --out toolllama.json
    python scripts/make_corpus.py --shape xlam --records 60000 --out xlam.json

Tests and benchmarks import `write_corpus` (or the record generators) from this file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "toolllama_G1_dfs_sample.json"
SHAPES = ("toolllama", "xlam")
POPULARITY = 1.0  # Zipf exponent of tool popularity: the k-th most used tool is in ~1/k as many samples as the first
API_LIST = "\nSpecifically, you have access to the following APIs: "
TOOLS_INTRO = "You have access of the following tools:\n"
FINISH = {"name": "Finish", "description": "If you think you get the result which can answer the task, call this "
          "function to give the final answer. Or, if you think you can't handle the task from this status, call this "
          "function to restart. Remember: you should ALWAYS call this function at the end of your try, and the final "
          "answer is the ONLY part that will be showed to user, so final answer should contain enough information.",
          "parameters": {"type": "object", "properties": {
              "return_type": {"type": "string", "enum": ["give_answer", "give_up_and_restart"]},
              "final_answer": {"type": "string", "description": "The final answer you want to give the user. You "
                               "should have this field if \"return_type\"==\"give_answer\""}},
              "required": ["return_type"]}}
WORDS = ("weather forecast city stock price quote news article movie rating flight hotel booking currency rate crypto "
         "coin recipe nutrition song lyrics artist album sports score team player league job listing company profile "
         "email address phone number domain whois image search video translate text language country holiday event "
         "calendar map route distance geocode timezone product review order invoice payment user account").split()
VERBS = ("get", "search", "list", "fetch", "find", "lookup", "retrieve", "check", "calculate", "convert")


@lru_cache(maxsize=1)
def real_texts() -> dict[str, list[str]]:
    """Texts of the bundled ToolLLaMA sample, by kind, so generated records have real sizes and wording."""
    texts: dict[str, list[str]] = {k: [] for k in ("services", "apis", "queries", "responses", "answers")}
    for record in json.loads(SAMPLE.read_text(encoding="utf-8")):
        system, *turns = record["conversations"]
        prompt, _, apis = system["value"].partition(API_LIST)
        texts["prefix"] = [prompt.partition(TOOLS_INTRO)[0] + TOOLS_INTRO]
        texts["services"] += re.findall(r"^\d+\.[^:\n]+: (.+)$", prompt.partition(TOOLS_INTRO)[2], re.M)
        texts["apis"] += re.findall(r"The description of this function is: \"(.*?)\"', '", apis, re.S)
        texts["queries"].append(turns[0]["value"].strip().removesuffix("Begin!").strip())
        texts["responses"] += [t["value"] for t in turns if t["from"] == "function"]
        texts["answers"] += re.findall(r'"final_answer": "((?:[^"\\]|\\.)*)"', turns[-1]["value"])
    return {k: sorted(set(v)) for k, v in texts.items()}


def _popular(rng: random.Random, n: int, k: int) -> list[int]:
    """min(k, n) distinct indices below n, drawn by Zipf popularity (index 0 the most popular)."""
    picked: list[int] = []
    while len(picked) < min(k, n):
        i = rng.choices(range(n), cum_weights=_zipf(n))[0]
        if i not in picked:
            picked.append(i)
    return picked


@lru_cache(maxsize=8)
def _zipf(n: int) -> list[float]:
    return list(itertools.accumulate(1 / (r + 1) ** POPULARITY for r in range(n)))


def _name(rng: random.Random, taken: set[str], parts: int) -> str:
    for extra in itertools.count():
        name = "_".join(rng.sample(WORDS, parts)) + (f"_{extra}" if extra else "")
        if name not in taken:
            taken.add(name)
            return name
    raise AssertionError("unreachable")


def _params(rng: random.Random) -> list[tuple[str, str, bool]]:
    """(name, JSON type, required) of 0-3 parameters."""
    names = rng.sample(WORDS, rng.randint(0, 3))
    return [(n, rng.choice(("string", "string", "integer")), k == 0 or rng.random() < 0.4) for k, n in enumerate(names)]


def _value(rng: random.Random, kind: str):
    return rng.randint(1, 500) if kind == "integer" else rng.choice(WORDS)


# ToolLLaMA ----------------------------------------------------------------------------------------------------------

def _services(rng: random.Random, n: int) -> list[dict]:
    texts, taken = real_texts(), set()
    services = []
    for i in range(n):
        name = _name(rng, taken, 2)
        apis = []
        for _ in range(rng.randint(2, 8)):
            api = f"{rng.choice(VERBS)}_{rng.choice(WORDS)}"
            if any(a["name"].startswith(api + "_for_") for a in apis):
                continue
            params = _params(rng)
            apis.append({
                "name": f"{api}_for_{name}",
                "description": f'This is the subfunction for tool "{name}", you can use this tool.The description of '
                               f'this function is: "{rng.choice(texts["apis"])}"',
                "parameters": {"type": "object",
                               "properties": {p: {"type": t, "description": ""} for p, t, _ in params},
                               "required": [p for p, _, r in params if r],
                               "optional": [p for p, _, r in params if not r]},
                "_params": params,
            })
        services.append({"name": name, "category": i % max(1, n // 12), "description": rng.choice(texts["services"]),
                         "apis": apis})
    return services


def toolllama_records(n_records: int, seed: int = 0, tools: int | None = None) -> Iterator[dict]:
    """Exactly n_records step records of whole traces (the last one shortened to fit), calling a pool of `tools`
    services (default one per 40 records: ToolBench has 3,451 for 187k records)."""
    rng, texts = random.Random(seed), real_texts()
    services = _services(rng, tools or max(8, n_records // 40))
    by_category: dict[int, list[int]] = {}
    for i, s in enumerate(services):
        by_category.setdefault(s["category"], []).append(i)
    written = 0
    for trace in itertools.count():
        if written >= n_records:
            return
        first = _popular(rng, len(services), 1)[0]
        group = [first]
        if rng.random() < 0.5:  # G2/G3: more services of the same category
            mates = [i for i in by_category[services[first]["category"]] if i != first]
            group += rng.sample(mates, min(len(mates), rng.randint(1, 2)))
        chosen = [services[i] for i in group]
        called = chosen if len(chosen) == 1 or rng.random() < 0.7 else chosen[:-1]
        steps = min(rng.choice((1, 1, 2, 2, 2, 3, 3, 4, 5)), n_records - written - 1)
        calls = [rng.choice(called) for _ in range(steps)]
        if steps >= len(called):
            calls[:len(called)] = called
        functions = [{k: v for k, v in a.items() if k != "_params"} for s in chosen for a in s["apis"]]
        system = texts["prefix"][0] + "".join(f"{k}.{s['name']}: {s['description']}\n" for k, s in enumerate(chosen, 1))
        system += API_LIST + repr(functions + [FINISH])
        query = f"{rng.choice(texts['queries'])} (Request {trace}: use {', '.join(s['name'] for s in chosen)}.)"
        conversations = [{"from": "system", "value": system}, {"from": "user", "value": f"\n{query}\nBegin!\n"}]
        for service in calls:
            api = rng.choice(service["apis"])
            args = {p: _value(rng, t) for p, t, required in api["_params"] if required or rng.random() < 0.3}
            conversations.append(_action(api["name"], args))
            yield {"id": f"Step {len(conversations) - 1}: {query}", "conversations": conversations[:]}
            conversations.append({"from": "function", "value": rng.choice(texts["responses"])})
        conversations.append(_action("Finish", {"return_type": "give_answer",
                                                "final_answer": json.loads(f'"{rng.choice(texts["answers"])}"')}))
        yield {"id": f"Step {len(conversations) - 1}: {query}", "conversations": conversations}
        written += steps + 1


def _action(name: str, args: dict) -> dict:
    return {"from": "assistant", "value": f"\nThought: \nAction: {name}\nAction Input: {json.dumps(args, indent=2)}"}


# xLAM ---------------------------------------------------------------------------------------------------------------

_XLAM_TYPES = {"string": "str", "integer": "int"}


def _xlam_pool(rng: random.Random, n: int) -> list[dict]:
    texts, taken = real_texts(), set()
    pool = []
    for _ in range(n):
        params = _params(rng)
        pool.append({
            "name": _name(rng, taken, 3),
            "description": rng.choice(texts["apis"])[:200],
            "parameters": {p: {"description": f"The {p.replace('_', ' ')}.",
                               "type": _XLAM_TYPES[t] + ("" if required else ", optional")}
                           for p, t, required in params},
            "_params": params,
        })
    return pool


def xlam_records(n_records: int, seed: int = 0, tools: int | None = None, offered: tuple[int, int] = (1, 5)
                 ) -> Iterator[dict]:
    """n_records records offering between offered[0] and offered[1] APIs of a pool of `tools` (default one per 17
    records)."""
    rng, texts = random.Random(seed), real_texts()
    pool = _xlam_pool(rng, tools or max(20, n_records // 17))
    for i in range(n_records):
        picks = _popular(rng, len(pool), rng.randint(*offered))
        answers = []
        if rng.random() >= 0.03:
            called = picks[:rng.choice((1, 1, 1, 2, 2, 3))]
            for k in called:
                api = pool[k]
                for _ in range(2 if rng.random() < 0.15 else 1):  # a parallel call of the same API
                    answers.append({"name": api["name"], "arguments": {
                        p: _value(rng, t) for p, t, required in api["_params"] if required or rng.random() < 0.3}})
        rng.shuffle(picks)
        apis = [{k: v for k, v in pool[k].items() if k != "_params"} for k in picks]
        query = f"{rng.choice(texts['queries'])} (case {i})"
        yield {"id": i, "query": query, "tools": json.dumps(apis), "answers": json.dumps(answers)}


def write_corpus(path: Path, shape: str, n_records: int, seed: int = 0, **options) -> int:
    """Writes a JSON array of n_records records of the shape (options: those of its generator); returns the file
    size in bytes."""
    records = {"toolllama": toolllama_records, "xlam": xlam_records}[shape](n_records, seed, **options)
    with open(path, "w", encoding="utf-8") as f:
        f.write("[")
        for k, record in enumerate(records):
            f.write(("," if k else "") + json.dumps(record, ensure_ascii=False))
        f.write("]")
    return Path(path).stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=SHAPES, required=True)
    ap.add_argument("--records", type=int, required=True, help="records to write")
    ap.add_argument("--seed", type=int, default=0, help="same seed, same file")
    ap.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    ap.add_argument("--tools", type=int, help="size of the shared pool of services (toolllama) or APIs (xlam); "
                                              "default: as many per record as the real data has")
    args = ap.parse_args()
    size = write_corpus(args.out, args.shape, args.records, args.seed, tools=args.tools)
    print(f"wrote {args.records:,} {args.shape} records to {args.out} ({size / 1e6:,.1f} MB)")


if __name__ == "__main__":
    main()
