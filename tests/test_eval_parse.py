"""parse_output: every call format on hand-written outputs, malformed ones with their reasons, and outputs rendered by
the families' own chat templates read back through `tokenizer.parse_response`."""

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from dispatchtune.data_prep.sample import ToolCall
from dispatchtune.eval.parse import parse_output

TEMPLATES = Path(__file__).resolve().parents[1] / "dispatchtune" / "templates"
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.", "parameters": {
        "type": "object", "required": ["city"],
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "zip": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "create_event", "description": "Add an event.", "parameters": {
        "type": "object", "properties": {"title": {"type": "string"}, "attendees": {"type": "array"},
                                         "recurrence": {"type": "object"}}, "required": ["title"]}}},
]
WEATHER = ToolCall("get_weather", {"city": "Paris", "days": 3, "zip": "75001"})
WEATHER_ARGS = '{"city": "Paris", "days": 3, "zip": "75001"}'
WEATHER_HERMES = f'<tool_call>\n{{"name": "get_weather", "arguments": {WEATHER_ARGS}}}\n</tool_call>'
EVENT = ToolCall("create_event", {"title": "Sync", "attendees": [{"email": "a@example.com", "optional": True}],
                                  "recurrence": {"frequency": "weekly", "count": 4}})


def calls(text, tokenizer=None, **kw):
    parsed, reason = parse_output(text, tokenizer, **kw)
    assert reason is None, reason
    return [(c.name, c.arguments) for c in parsed]


def as_tuples(*tool_calls):
    return [(c.name, c.arguments) for c in tool_calls]


# --- our own parsers (no tokenizer, or a template TRL has no parser for) ---

def test_hermes_json_parallel_and_nested():
    text = ('Let me check.\n' + WEATHER_HERMES + '\n<tool_call>\n{"name": "create_event", "arguments": {"title": '
            '"Sync", "attendees": [{"email": "a@example.com", "optional": true}], "recurrence": {"frequency": '
            '"weekly", "count": 4}}}\n</tool_call>')
    assert calls(text) == as_tuples(WEATHER, EVENT)


def test_hermes_python_repr_body_is_read_not_run():
    text = "<tool_call>\n{'name': 'get_weather', 'arguments': {'city': 'Paris', 'days': 3, 'zip': '75001'}}</tool_call>"
    assert calls(text) == as_tuples(WEATHER)
    assert calls("<tool_call>{'name': 'f', 'arguments': {'ok': True, 'v': None, 't': (1, 2)}}</tool_call>") == [
        ("f", {"ok": True, "v": None, "t": [1, 2]})]


def test_reasoning_block_is_skipped():
    text = '<think>\nThe user wants Paris.\n</think>\n\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'
    assert calls(text) == [("f", {})]
    # a thinking template opens the block in the prompt itself
    opened = "<|im_start|>assistant\n<think>\n"
    assert calls('Paris, then.\n</think>\n\n{"name": "f", "arguments": {}}', prefix=opened) == [("f", {})]


def test_plain_json_llama_style_and_lists():
    assert calls(f'{{"name": "get_weather", "parameters": {WEATHER_ARGS}}}') == as_tuples(WEATHER)
    assert calls('[{"name": "f", "arguments": {"a": {"b": [1, 2.5]}}}, {"name": "g"}]') == [
        ("f", {"a": {"b": [1, 2.5]}}), ("g", {})]
    assert calls("[]") == []  # BFCL models answer [] for no call


def test_python_call_syntax():
    assert calls('get_weather(city="Paris", days=3, zip="75001")') == as_tuples(WEATHER)
    assert calls("[f(a=1, b=-2.5, c=[1, 'x'], d={'k': None}), math.hypot(x=3, y=(4, 5))]") == [
        ("f", {"a": 1, "b": -2.5, "c": [1, "x"], "d": {"k": None}}), ("math.hypot", {"x": 3, "y": [4, 5]})]
    assert calls("f()") == [("f", {})]


def test_react():
    text = f"Thought: I need the weather.\nAction: get_weather\nAction Input: {WEATHER_ARGS}"
    assert calls(text) == as_tuples(WEATHER)


@pytest.mark.parametrize("text", [
    "It is sunny in Paris today.",
    "Paris (the capital) is lovely in spring.",  # a parenthesis in prose is no call expression
    "Sure! Which city do you mean?",
])
def test_text_answers_are_no_call(text):
    assert parse_output(text) == ([], None)


@pytest.mark.parametrize("text, reason", [
    ("", "empty output"),
    ("  \n", "empty output"),
    ('<tool_call>\n{"name": "f", "arguments": {}}', "unclosed <tool_call>"),
    ('{"name": "f"}</tool_call>', "stray </tool_call>"),
    ("<tool_call>\n{name: f}\n</tool_call>", "neither JSON nor a Python literal"),
    ('<tool_call>\n{"name": "f", "arguments": [1, 2]}\n</tool_call>', "are a list, not an object"),
    ('<tool_call>\n{"name": "f", "arguments": "{\\"a\\": 1}"}\n</tool_call>', "are a str, not an object"),
    ('<tool_call>\n{"arguments": {}}\n</tool_call>', "without a function name"),
    ('<tool_call>\n{"name": "f", "arguments": {}, "id": 3}\n</tool_call>', "unexpected keys: id"),
    ('{"name": "f", "arguments": {}, "parameters": {}}', "unexpected keys"),
    ('{"name": "f", "arguments": {"a": 1}', "not JSON"),
    ('{"answer": 42}', "without a function name"),
    ("f(1, 2)", "positional"),
    ("f(**opts)", "positional or **"),
    ('f(a=__import__("os").system("rm -rf /"))', "not a literal"),
    ("f(a={1, 2})", "not a literal"),  # a set is no JSON value
    ('get_weather(city="Paris"', "not a call expression"),
    ("[f(a=1), 3]", "not a function call"),
    ("Action: get_weather\n", "without an Action Input"),
    ("Action: get_weather\nAction Input: city=Paris", "not JSON"),
    ("<think>\nhmm", "never closed"),
])
def test_malformed_outputs_say_why(text, reason):
    parsed, why = parse_output(text)
    assert parsed is None and reason in why


# --- the families' templates: parse_response where TRL has a parser, ours where it has none ---

PARSER_FAMILIES = ["qwen3", "qwen3.5", "qwen2.5", "llama-3.2"]


def rendered_turn(tokenizer, tool_calls, content=""):
    """The assistant turn as the template writes it, cut the way generation cuts it (before the end-of-turn)."""
    messages = [{"role": "user", "content": "Plan it."}]
    answer = {"role": "assistant", "content": content}
    if tool_calls:
        answer["tool_calls"] = [{"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                for c in tool_calls]
    kw = {"tools": TOOLS, "tokenize": False, "date_string": "14 Mar 2025"}
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, **kw)
    full = tokenizer.apply_chat_template(messages + [answer], **kw)
    assert full.startswith(prompt)
    return prompt, full[len(prompt):].rstrip().removesuffix(tokenizer.eos_token)


@pytest.mark.parametrize("family", PARSER_FAMILIES)
def test_parse_response_reads_the_templates_own_calls(tiny_models, family):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models(family))
    single = [WEATHER]  # Llama's template writes one call per turn
    for tool_calls in ([single] if family == "llama-3.2" else [single, [WEATHER, EVENT]]):
        prompt, text = rendered_turn(tokenizer, tool_calls)
        # tools type Qwen 3.5's XML values (it writes 3 and "75001" alike); prefix "" works as well as the prompt
        for prefix in (prompt, ""):
            assert calls(text, tokenizer, prefix=prefix, tools=TOOLS) == as_tuples(*tool_calls), (family, text)
    prompt, text = rendered_turn(tokenizer, [], content="It is sunny.")
    assert parse_output(text, tokenizer, prefix=prompt) == ([], None)
    assert tokenizer.response_template  # parse_output set TRL's parser on the tokenizer


def test_parse_response_on_qwen3_rendered_text(tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models("qwen3"))
    prompt, text = rendered_turn(tokenizer, [WEATHER, EVENT])
    assert text.startswith("<think>\n\n</think>\n\n<tool_call>\n")  # the template's empty reasoning block
    assert calls(text, tokenizer, prefix=prompt) == as_tuples(WEATHER, EVENT)
    assert calls(text + "<|im_end|>", tokenizer, prefix=prompt) == as_tuples(WEATHER, EVENT)


@pytest.mark.parametrize("text, reason", [
    ('{"name": "get_weather", "arguments": {"city": "Paris"}}', "not in the format of the model's chat template"),
    ('get_weather(city="Paris")', "not in the format of the model's chat template"),
    ('<tool_call>\n{"name": "f", "arguments": {}}', "unclosed <tool_call>"),
    ("<tool_call>\n{'name': 'f', 'arguments': {}}\n</tool_call>", "parser refuses it"),  # Qwen writes JSON only
    ('<tool_call>\n{"name": "f", "arguments": [1]}\n</tool_call>', "not an object"),
    ('<tool_call>\n{"name": "f", "parameters": {}}\n</tool_call>', "unexpected keys: parameters"),
    ('{"answer": 42}', "without a function name"),
])
def test_template_format_is_the_only_one_accepted(tiny_models, text, reason):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models("qwen3"))
    parsed, why = parse_output(text, tokenizer)
    assert parsed is None and reason in why


def test_llama_rejects_hermes_and_needs_clean_json(tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models("llama-3.2"))
    assert calls('{"name": "f", "parameters": {"a": 1}}', tokenizer) == [("f", {"a": 1})]
    assert calls('{"name": "f", "parameters": {"a": 1}}<|eot_id|>', tokenizer) == [("f", {"a": 1})]
    assert parse_output('<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>', tokenizer)[0] is None
    assert parse_output('{"name": "f", "parameters": {"a": 1}} and then some', tokenizer)[0] is None
    assert parse_output("Which city?", tokenizer) == ([], None)


@pytest.mark.parametrize("family", ["smollm2", "gemma3", "opt"])
def test_families_without_a_response_parser_use_ours(tiny_models, family):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models(family))
    assert calls(WEATHER_HERMES, tokenizer) == as_tuples(WEATHER)
    assert calls('get_weather(city="Paris", days=3, zip="75001")', tokenizer) == as_tuples(WEATHER)
    assert getattr(tokenizer, "response_template", None) is None


@pytest.mark.parametrize("template, family", [
    ("chatml_tools.jinja", "smollm2"), ("chatml_tools.jinja", "opt"), ("gemma3_tools.jinja", "gemma3"),
])
def test_training_templates_output_parses(tiny_models, template, family):
    path = TEMPLATES / template
    tokenizer = AutoTokenizer.from_pretrained(tiny_models(family))
    tokenizer.chat_template = path.read_text(encoding="utf-8")
    prompt, text = rendered_turn(tokenizer, [WEATHER, EVENT])
    # OPT's turns end in a plain-text <|im_end|> before eos; generation cuts it, so cut it here too
    text = text.removesuffix("<|im_end|>")
    assert calls(text, tokenizer, prefix=prompt) == as_tuples(WEATHER, EVENT)
