"""The fast repr reader must agree with ast.literal_eval on everything, and refuse what it is unsure of."""

import ast
import json
import random

import pytest

from dispatchtune.data_prep.literal import NOT_LITERAL, python_literal

ODD_TEXT = ["plain", "it's", 'say "hi"', "both ' and \"", "back\\slash", "tab\there", "new\nline", "é€😀", "\x07bell",
            "\x00nul", "\\/", "\u2028", "True", "None", "'", '"', "\\", "ends with \\"]


def _value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.choice(ODD_TEXT) + rng.choice(ODD_TEXT)
    if kind == 1:
        return rng.randint(-10**12, 10**12)
    if kind == 2:
        return rng.choice([0.5, -1e-9, 3.25e30, 1.0])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind in (4, 5):
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(6)))
    if kind in (6, 7):
        return {rng.choice(ODD_TEXT) + str(i): _value(rng, depth + 1) for i in range(rng.randrange(4))}
    return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def test_agrees_with_literal_eval_on_repr_of_random_data():
    rng = random.Random(0)
    for _ in range(3000):
        value = _value(rng)
        text = repr(value)
        assert python_literal(text) == json.loads(json.dumps(ast.literal_eval(text))), text


@pytest.mark.parametrize("text", [
    "{'a': (1, 2)}", "[1, 2,]", "{'a': '\\x41\\101'}", "'\\N{BULLET}'", "'a' 'b'", "'\\/'", "'''x'''", "r'\\d'",
    "{'a': 1e5, 'b': -0.0}", "'\\U0001F600'", "'\\v\\a'", "{1: 'int key'}", "\"it's\"", "'tab\there'",
])
def test_edge_cases_agree_with_literal_eval(text):
    assert python_literal(text) == json.loads(json.dumps(ast.literal_eval(text)))


@pytest.mark.parametrize("text", ["{'a': true}", "[NaN]", "{1, 2}", "b'x'", "1j", "open('f')", "{'a': x}", "[1, 2", "__import__('os')"])
def test_what_is_no_python_literal(text):
    assert python_literal(text) is NOT_LITERAL
