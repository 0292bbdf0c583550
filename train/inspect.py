"""`dispatchtune inspect`: the first samples as the trainer sees them, with the trained tokens marked.

It goes through the same code as `train` (recipe -> tokenizer -> ChatFormat.encode), so what it shows is exactly what
the loss sees: trained tokens in green on a terminal, [[between double brackets]] otherwise, and the share of trained
tokens per row and overall (a sample is one row, or several where its template needs them: `train.mask`). --json
writes one object per row per line, for tools and tests.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys

from dispatchtune.data_prep.sample import read_jsonl

from .catalog import add_recipe_argument
from .config import load_recipe
from .sft import data_file, load_format

GREEN, RESET = "\033[32m", "\033[0m"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_argument(parser, "the recipe whose model, template and max_length to use")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="recipe overrides, as for train")
    parser.add_argument("--data", help="samples (JSON Lines from prep); default: the recipe's data.train")
    parser.add_argument("--n", type=_count, default=3, help="how many samples, from the top (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="one JSON object per row: input_ids, tokens, trained")


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a count of samples (0 or more), got {text!r}")
    return n


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    path = data_file(args.data or recipe.data.train, "--data")
    _, tokenizer, fmt = load_format(recipe)
    max_length = recipe.training.max_length
    total = trained = 0
    for sample in itertools.islice(read_jsonl(path), args.n):
        rows = fmt.encode(sample)
        for row, (input_ids, mask) in enumerate(rows):
            total, trained = total + len(mask), trained + sum(mask)
            if args.json:
                tokens = [tokenizer.decode([i]) for i in input_ids]
                print(json.dumps({"sample": sample.where(), "row": row, "input_ids": input_ids, "tokens": tokens,
                                  "trained": mask}, ensure_ascii=False))
                continue
            where = sample.where() + (f" row {row + 1}/{len(rows)}" if len(rows) > 1 else "")
            head = f"=== {where}: {len(mask)} tokens, {sum(mask)} trained ({sum(mask) / len(mask):.0%})"
            if max_length and len(mask) > max_length:
                head += f"; over max_length {max_length}: training sees the first {max_length}"
            print(head)
            print(render(tokenizer, input_ids, mask, color=sys.stdout.isatty()))
    if not args.json:
        print(f"=== overall: {total} tokens, {trained} trained ({trained / max(total, 1):.0%}); mask: {fmt.method}")
    return 0


def render(tokenizer, input_ids: list[int], mask: list[int], color: bool) -> str:
    """The decoded text, each run of trained tokens in green (color) or between [[ ]]."""
    start, end = (GREEN, RESET) if color else ("[[", "]]")
    parts, i = [], 0
    for flag, group in itertools.groupby(mask):
        n = len(list(group))
        text = tokenizer.decode(input_ids[i:i + n])
        parts.append(f"{start}{text}{end}" if flag else text)
        i += n
    return "".join(parts)
