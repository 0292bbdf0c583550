"""Seeded dispatch data for the demo: everyday tool calls a model trained from scratch on a CPU can learn.

    dispatchtune synth --out DIR [--train 28000] [--heldout 160] [--seed 0] [--session 1]

Writes train.jsonl and heldout.jsonl (OpenAI-messages samples, the canonical format). Twelve tools (weather, local
time, currency conversion, bill splitting, timers, volume, calls, music, taxis, contact lookup, ...), a third of them
taking numbers (and called more often in training, see NUMBER_WEIGHT), and four kinds of request, in the categories
the scorer reports: a single call (one tool offered, or a choice of two to four), parallel calls (the same tool
twice, or two tools), no call (chit-chat, or a request no offered tool performs), and a two-step chain (look up a
contact's city, then call a tool with the city the lookup returned, then answer).

The held-out file is the test of generalisation, so it shares nothing with training but the tools, the currency
codes, and the words and parts values and requests are made of: a request is an opening, a core that names the
intent and a closing ("Could you | look up the weather in {city} | for me?"), every name, place, topic and message
text is a pair of words (coined names such as "Trairol Bidrar", "Mubrus Valley"), and a hash gives each composition
and each pair to one file only; every number comes from a split range. A model that scores on it has learned to
pick the tool by what the request asks and to copy values it has never seen, not memorised answers. The names are
coined so that no tokenizer or model has an advantage from having seen them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import zlib
from pathlib import Path

from dispatchtune.atomic import write_text
from dispatchtune.errors import UserError


def _tool(tool: str, description: str, **params: str) -> dict:
    return {"type": "function", "function": {
        "name": tool, "description": description,
        "parameters": {"type": "object", "properties": {p: {"type": t} for p, t in params.items()},
                       "required": list(params)}}}


TOOLS = {t["function"]["name"]: t for t in (
    _tool("get_weather", "Current weather in a city.", city="string"),
    _tool("get_time", "Local time in a city.", city="string"),
    _tool("book_taxi", "Book a taxi to a place.", destination="string"),
    _tool("convert_currency", "Convert money between currencies.", amount="number",
          source="string", target="string"),
    _tool("set_timer", "Start a timer.", minutes="integer"),
    _tool("call_contact", "Phone a contact.", name="string"),
    _tool("play_music", "Play songs by an artist.", artist="string"),
    _tool("find_contact", "Look up where a contact lives.", name="string"),
    _tool("get_news", "Latest news about a topic.", topic="string"),
    _tool("split_bill", "Split a bill between people.", amount="number", people="integer"),
    _tool("set_volume", "Set the speaker volume.", level="integer"),
    _tool("send_message", "Send a short text to a contact.", name="string",
          text="string"),
)}

# A request is composed of an opening, a core that names the intent, and a closing; the held-out file takes the
# compositions a hash gives it (see `_phrasings`). {x} are the argument slots.
OPENINGS = ["", "please ", "can you ", "could you ", "hey, ", "quickly ", "I'd like you to ", "would you "]
CLOSINGS = ["", " please", " for me", " now", ", thanks", " right away"]
CORES = {
    "get_weather": ["check the weather in {city}", "tell me the weather in {city}", "get the weather for {city}",
                    "look up the weather in {city}", "give me the weather for {city}",
                    "find out the weather in {city}"],
    "get_time": ["check the time in {city}", "tell me the local time in {city}", "get the time for {city}",
                 "look up the time in {city}", "give me the time in {city}", "find out the local time in {city}"],
    "book_taxi": ["book a taxi to {destination}", "get me a taxi to {destination}", "order a cab to {destination}",
                  "send a taxi to take me to {destination}", "call a cab to {destination}",
                  "find me a cab to {destination}"],
    "convert_currency": ["convert {amount} {source} to {target}", "change {amount} {source} into {target}",
                         "turn {amount} {source} into {target}", "convert {amount} {source} into {target}",
                         "exchange {amount} {source} for {target}", "work out {amount} {source} in {target}"],
    "set_timer": ["set a timer for {minutes} minutes", "start a {minutes} minute timer",
                  "put a timer on for {minutes} minutes", "run a timer for {minutes} minutes",
                  "set a {minutes} minute timer", "count down {minutes} minutes with a timer"],
    "call_contact": ["call {name}", "phone {name}", "ring {name}", "give {name} a call", "dial {name}",
                     "place a call to {name}"],
    "play_music": ["play {artist}", "play some {artist}", "put on songs by {artist}", "play music by {artist}",
                   "start playing {artist}", "put on some {artist}"],
    "get_news": ["get the news about {topic}", "find news on {topic}", "show me the latest on {topic}",
                 "look up news about {topic}", "give me the news on {topic}", "check the news about {topic}"],
    "split_bill": ["split {amount} between {people} people", "divide {amount} among {people} people",
                   "share a bill of {amount} between {people} people", "split a {amount} bill {people} ways",
                   "work out {amount} split {people} ways", "split the bill of {amount} for {people} people"],
    "set_volume": ["set the volume to {level}", "turn the volume to {level}", "change the volume to {level}",
                   "put the volume at {level}", "make the volume {level}", "adjust the volume to {level}"],
    "send_message": ["text {name} {text}", "send {name} a message: {text}", "message {name} saying {text}",
                     "tell {name} {text}", "send a text to {name}: {text}", "write to {name}: {text}"],
}
# Chains: find_contact(name) returns the contact's city, which the second call takes.
CHAIN_CORES = {
    "get_weather": ["check the weather where {name} lives", "tell me the weather at {name}'s place",
                    "get the weather in {name}'s city", "look up the weather where {name} is"],
    "get_time": ["check the time where {name} lives", "tell me the local time at {name}'s place",
                 "get the time in {name}'s city", "look up the time where {name} is"],
    "book_taxi": ["book a taxi to {name}'s place", "get me a cab to where {name} lives",
                  "order a taxi to {name}'s city", "send a taxi to where {name} is"],
}
GREETINGS = ["Hi", "Hello", "Hey there", "Good morning", "Good evening", "Thanks", "Thank you"]
SMALL_TALK = ["!", ", how are you?", ", who made you?", ", what can you do?", ", nice to meet you.",
              ", you are great.", ", tell me a joke.", ", goodbye!"]


def _held_out(key: str) -> bool:
    """Whether a phrasing or value belongs to the held-out file: a fifth of them, by a hash (the same every run)."""
    return zlib.crc32(key.encode()) % 5 == 0


def _phrasings(parts: list[list[str]]) -> dict[bool, list[tuple[str, ...]]]:
    """Every composition of `parts` (one of each), split by `_held_out`: {held out: compositions}. Each part recurs
    in training; a held-out composition never does."""
    split = {False: [], True: []}
    for combo in itertools.product(*parts):
        split[_held_out("|".join(combo))].append(combo)
    return split


def _request(combo: tuple[str, ...]) -> str:
    opening, core, closing = combo
    text = f"{opening}{core}{closing}{'?' if opening.endswith('you ') else '.'}"
    return text[0].upper() + text[1:]


PHRASINGS = {tool: _phrasings([OPENINGS, cores, CLOSINGS]) for tool, cores in CORES.items()}
CHAINS = {tool: _phrasings([OPENINGS, cores, CLOSINGS]) for tool, cores in CHAIN_CORES.items()}
CHITCHAT = _phrasings([GREETINGS, SMALL_TALK])
NO_TOOL_ANSWER = "Sorry, I have no tool for that."
CHITCHAT_ANSWER = "Hello! Ask me to call one of my tools."

CURRENCIES = ["USD", "EUR", "JPY", "GBP", "CHF", "CAD", "AUD", "SEK", "NOK", "DKK", "PLN", "INR", "CNY", "HKD", "SGD",
              "NZD", "KRW", "MXN", "BRL", "ZAR", "TRY", "CZK", "HUF", "ILS", "THB", "MYR", "IDR", "PHP", "AED", "SAR",
              "EGP", "NGN", "KES", "CLP", "COP", "PEN", "ARS", "VND", "PKR", "ISK"]
_PLACES = ["Bay", "Falls", "Harbor", "Springs", "Hill", "Point", "Valley", "Creek", "Ridge", "Lake", "Grove", "Park",
           "Field", "Port", "Bridge", "Rock"]
_RANGES = {"amount": (5, 999), "minutes": (2, 90), "people": (2, 20), "level": (0, 100)}  # numeric parameters
NUMBER_TOOLS = {t for t, spec in TOOLS.items() if _RANGES.keys() & spec["function"]["parameters"]["properties"]}
# Training picks the tool a request calls among those offered with weight 3 for a tool that takes numbers (the
# held-out file picks alike): 40% of its calls take numbers, against 30%. A number's digits are arbitrary, so copying
# them in order takes an induction circuit, which a model from scratch forms late, after the names, and only from
# enough numbers seen (docs/benchmarks.md).
NUMBER_WEIGHT = 3
_ADJECTIVES = ["local", "world", "electric", "classic", "space", "street", "ocean", "mountain"]
_SUBJECTS = ["chess", "tennis", "rockets", "robots", "jazz", "bees", "trains", "volcanoes", "cheese", "sailing"]
_ASKS = ["call me", "meet me", "see you", "text me", "wait here", "come over"]
_WHENS = ["at noon", "at eight", "tonight", "tomorrow", "soon", "later", "on Monday", "after lunch"]
_CONDITIONS = ["sunny", "rainy", "cloudy", "windy", "snowy", "foggy"]


def _coined(count: int, rng: random.Random, taken: set[str]) -> list[str]:
    """`count` made-up capitalised words of two syllables, none in `taken` (which they join)."""
    onsets, vowels, codas = "b d f g k l m n p r s t v z br dr kl tr st sh".split(), "a e i o u ai ou".split(), "nrls"
    words = []
    while len(words) < count:
        word = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(2)) + rng.choice(codas)
        if word.capitalize() not in taken:
            taken.add(word.capitalize())
            words.append(word.capitalize())
    return words


def _word_lists() -> dict[str, list[str]]:
    rng, taken = random.Random(1234), set()
    return {kind: _coined(150, rng, taken) for kind in ("first", "last", "town")}


_WORDS = _word_lists()
# Each value is two words, and the held-out file takes the pairs that a hash puts there: every word recurs in
# training, never a held-out pair. There are many words, each rare, because a model from scratch memorises what
# recurs: with 40 names and 8 place words it wrote the names it had seen most for any name asked (AST 19%), and
# learnt to copy only late and for some initial weights; with 150 of each and 16 places, memorising does not pay
# and every initialisation tried copies names (docs/benchmarks.md).
_PAIRS = {
    "name": (_WORDS["first"], _WORDS["last"]),  # people, also artists
    "city": (_WORDS["town"], _PLACES),
    "topic": (_ADJECTIVES, _SUBJECTS),
    "text": (_ASKS, _WHENS),
}


class Generator:
    def __init__(self, seed: int, heldout: bool, session: int = 1):
        self.rng = random.Random(seed)
        self.session = 1 if heldout else session
        self.heldout = heldout

    def value(self, param: str) -> str:
        """A value of this file's part: a pair of words (see _PAIRS) that the hash gives to it, or a currency code
        (a fixed set like an enum's, shared by both files: the held-out conversions differ in their amounts)."""
        if param in ("source", "target"):
            return self.rng.choice(CURRENCIES)
        firsts, seconds = _PAIRS[{"destination": "city", "artist": "name"}.get(param, param)]
        while True:
            value = f"{self.rng.choice(firsts)} {self.rng.choice(seconds)}"
            if _held_out(value) == self.heldout:
                return value

    def phrase(self, phrasings: dict[bool, list[tuple[str, ...]]]) -> str:
        """A request phrasing of this file's part (see `_phrasings`): opening, core and closing made a sentence, or
        chit-chat's greeting and small talk as they are."""
        combo = self.rng.choice(phrasings[self.heldout])
        return _request(combo) if len(combo) == 3 else "".join(combo)

    def args(self, tool: str) -> dict:
        out = {param: self.number(*_RANGES[param]) if param in _RANGES else self.value(param)
               for param in TOOLS[tool]["function"]["parameters"]["properties"]}
        if "target" in out:
            out["target"] = self.rng.choice([c for c in CURRENCIES if c != out["source"]])
        return out

    def number(self, low: int, high: int) -> int:
        """A number of the file's part of the range: held out if it leaves 3 divided by 7."""
        while True:
            n = self.rng.randint(low, high)
            if (n % 7 == 3) == self.heldout:
                return n

    def offer(self, needed: list[str], extra: int, avoid: str | None = None) -> list[dict]:
        """The needed tools and `extra` others (never `avoid`), in random order."""
        others = [t for t in TOOLS if t not in needed and t != avoid]
        names = list(dict.fromkeys(needed)) + self.rng.sample(others, extra)
        self.rng.shuffle(names)
        return [TOOLS[n] for n in names]

    def request(self, tool: str) -> tuple[str, dict]:
        args = self.args(tool)
        return self.phrase(PHRASINGS[tool]).format(**args), args

    def exchange(self, kind: str, offered: list[str], n: str, answered: bool) -> list[dict]:
        """One user request and what follows it, with the tools `offered`: the call turn, and, if `answered`,
        its results and a short answer (a chain is always answered: its second call needs the first's result)."""
        rng = self.rng
        if kind == "no_call":
            missing = [t for t in PHRASINGS if t not in offered]
            if rng.random() < 0.5 or not missing:
                return [_user(self.phrase(CHITCHAT)), _answer(CHITCHAT_ANSWER)]
            return [_user(self.request(rng.choice(missing))[0]), _answer(NO_TOOL_ANSWER)]
        if kind == "chain":
            tool = rng.choice([t for t in CHAINS if t in offered])
            name, city = self.value("name"), self.value("city")
            param = next(iter(TOOLS[tool]["function"]["parameters"]["properties"]))
            result = {"city": city, "condition": rng.choice(_CONDITIONS)} if tool == "get_weather" else {"ok": True}
            return [_user(self.phrase(CHAINS[tool]).format(name=name)),
                    _calls(f"{n}a", [("find_contact", {"name": name})]), _result(f"{n}a", 0, {"city": city}),
                    _calls(f"{n}b", [(tool, {param: city})]), _result(f"{n}b", 0, result), _answer("Done.")]
        candidates = [t for t in offered if t in PHRASINGS]
        weights = [1 if self.heldout or t not in NUMBER_TOOLS else NUMBER_WEIGHT for t in candidates]
        tools = rng.choices(candidates, weights, k=1 if kind == "single" else 2)
        requests = [self.request(t) for t in tools]
        user = requests[0][0]
        if kind == "parallel":
            second = requests[1][0]
            second = second if second.startswith("I'") else second[0].lower() + second[1:]
            user = f"{user.rstrip('.?!')} and {second}"
        messages = [_user(user), _calls(n, [(t, args) for t, (_, args) in zip(tools, requests)])]
        if answered:
            messages += [_result(n, i, {"ok": True}) for i in range(len(tools))] + [_answer("Done.")]
        return messages

    def kind(self, offered: list[str]) -> str:
        kinds = [k for k in KINDS if k != "chain" or "find_contact" in offered and set(CHAINS) & set(offered)]
        return self.rng.choices(kinds, [KINDS[k] for k in kinds])[0]

    def sample(self, n: int) -> dict:
        """One request with the tools it needs and up to two others, or (training with `session` above 1) a session
        of one to `session` requests over two to five offered tools, whose calls that more requests follow get their
        results."""
        rng, sid = self.rng, f"{'heldout' if self.heldout else 'train'}-{n}"
        if self.session == 1:
            kind = rng.choices(list(KINDS), list(KINDS.values()))[0]
            if kind == "chain":
                needed = ["find_contact", rng.choice(list(CHAINS))]
            elif kind == "no_call":
                needed = []
            else:
                needed = [rng.choice(list(PHRASINGS)) for _ in range(1 if kind == "single" else 2)]
            offered = [t["function"]["name"] for t in self.offer(needed, rng.choice((0, 1, 2)) + (not needed))]
            messages = self.exchange(kind, offered, sid, answered=False)
        else:
            offered = [t["function"]["name"] for t in self.offer([], rng.randint(2, 5))]
            count = rng.randint(1, self.session)
            messages = [m for k in range(count)
                        for m in self.exchange(self.kind(offered), offered, f"{sid}_{k}", answered=k < count - 1)]
        return {"id": sid, "messages": messages, "tools": [TOOLS[t] for t in offered]}


KINDS = {"single": 0.45, "parallel": 0.2, "no_call": 0.15, "chain": 0.2}


def _answer(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _calls(n, calls: list[tuple[str, dict]]) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [
        {"id": f"call_{n}_{i}", "type": "function", "function": {"name": name, "arguments": args}}
        for i, (name, args) in enumerate(calls)]}


def _result(n, i: int, content: dict) -> dict:
    return {"role": "tool", "tool_call_id": f"call_{n}_{i}", "content": json.dumps(content)}


def generate(count: int, *, seed: int, heldout: bool, session: int = 1) -> list[dict]:
    """`count` samples (see `Generator.sample`; training sessions of up to `session` requests), seeded."""
    gen = Generator(seed, heldout, session)
    return [gen.sample(n) for n in range(count)]


def write(out: Path, *, train: int, heldout: int, seed: int, session: int = 1) -> dict[str, Path]:
    paths = {}
    for name, count, held in (("train", train, False), ("heldout", heldout, True)):
        rows = generate(count, seed=seed + held, heldout=held, session=session)
        paths[name] = out / f"{name}.jsonl"
        write_text(paths[name], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output directory (train.jsonl, heldout.jsonl)")
    parser.add_argument("--train", type=int, default=28000, help="training samples (default: %(default)s)")
    parser.add_argument("--heldout", type=int, default=160, help="held-out samples (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sample seed (the value split is fixed)")
    parser.add_argument("--session", type=int, default=1, help="a training sample is a session of 1 to this many "
                        "requests (default: %(default)s; held-out samples are single requests)")


def run(args: argparse.Namespace) -> int:
    limits = (("--train", args.train, 0), ("--heldout", args.heldout, 0), ("--session", args.session, 1))
    for flag, value, least in limits:
        if value < least:
            raise UserError(f"{flag} {value}: expected {least} or more")
    paths = write(args.out, train=args.train, heldout=args.heldout, seed=args.seed, session=args.session)
    print(f"wrote {args.train:,} training samples to {paths['train']} and {args.heldout:,} held-out samples to "
          f"{paths['heldout']} (values and phrasings disjoint)")
    return 0
