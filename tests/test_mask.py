"""The loss mask, per family: exactly the assistant turns train, as generation writes them, and packing keeps it so."""

import importlib.util
import json
import re
from functools import cache

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.data_utils import pack_dataset
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from dispatchtune.data_prep.sample import Sample, function_tool
from dispatchtune.errors import UserError
from dispatchtune.families import FAMILIES, TEMPLATES_DIR, resolve_template
from dispatchtune.train.mask import ChatFormat

# The template each family trains with (None: the tokenizer's own) and the variables its renders need.
TEMPLATE = {"smollm2": "chatml_tools", "opt": "chatml_tools", "gemma3": "gemma3_tools"}
KWARGS = {"llama-3.2": {"date_string": "26 Jul 2024"}}
TRL_FAMILIES = ("qwen3", "qwen3.5", "qwen2.5")
# Every family with its trained tiny tokenizer, and those with a real vocabulary with the real tokenizer too: real
# token boundaries around the markup, real ids (tests/test_real_vocab.py checks the tokenizers themselves).
VOCABS = [pytest.param(f, "trained", id=f) for f in FAMILIES] + [
    pytest.param(f, "real", id=f"{f}-real") for f, spec in FAMILIES.items() if spec.real_vocab]

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [
    function_tool("get_weather", "Current weather in a city.", CITY),
    function_tool("get_local_time", "Local time in a city.", CITY),
]
SYSTEM = "You are a dispatch assistant."
QUESTION = "What's the weather and the time in Paris?"
RESULTS = ['{"temp_c": 18}', '{"time": "14:05"}']
ANSWER = "It is 18 °C and 14:05 in Paris."


def call(k: int, name: str) -> dict:
    return {"id": f"call_{k}", "type": "function", "function": {"name": name, "arguments": {"city": "Paris"}}}


def result(k: int, name: str) -> dict:
    return {"role": "tool", "tool_call_id": f"call_{k}", "name": name, "content": RESULTS[k]}


def sample(name: str, messages: list[dict]) -> Sample:
    return Sample(messages, TOOLS, {"source": f"{name}.jsonl", "index": 3, "id": f"{name}-3"})


OPENING = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
PARALLEL = sample("parallel", OPENING + [
    {"role": "assistant", "content": None, "tool_calls": [call(0, "get_weather"), call(1, "get_local_time")]},
    result(0, "get_weather"), result(1, "get_local_time"),
    {"role": "assistant", "content": ANSWER},
])
# call -> result -> call -> result -> answer; the second call comes with a thought, as in ToolBench.
CHAIN = sample("chain", OPENING + [
    {"role": "assistant", "content": None, "tool_calls": [call(0, "get_weather")]},
    result(0, "get_weather"),
    {"role": "assistant", "content": "Now the local time.", "tool_calls": [call(1, "get_local_time")]},
    result(1, "get_local_time"),
    {"role": "assistant", "content": ANSWER},
])

# ToolBench's depth-first traces retry after a failed call with a user message right after the tool result.
RETRY = sample("retry", OPENING + [
    {"role": "assistant", "content": None, "tool_calls": [call(0, "get_weather")]},
    result(0, "get_weather"),
    {"role": "user", "content": "This is not the first time you try this task. Try something else."},
    {"role": "assistant", "content": None, "tool_calls": [call(1, "get_local_time")]},
    result(1, "get_local_time"),
    {"role": "assistant", "content": ANSWER},
])


def hermes(fn: dict) -> str:
    return f"<tool_call>\n{json.dumps({'name': fn['name'], 'arguments': fn['arguments']})}\n</tool_call>"


def qwen3_5_xml(fn: dict) -> str:
    params = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in fn["arguments"].items())
    return f"<tool_call>\n<function={fn['name']}>\n{params}</function>\n</tool_call>"


def llama_json(fn: dict) -> str:
    return json.dumps({"name": fn["name"], "parameters": fn["arguments"]})


# How each family writes an assistant turn, as generation produces it after the prompt: (text before the content,
# separator between content and calls or None where a call turn drops its content, call writer, turn end).
STYLE = {
    "qwen3": ("<think>\n\n</think>\n\n", "\n", hermes, "<|im_end|>\n"),
    "qwen3.5": ("", "\n\n", qwen3_5_xml, "<|im_end|>\n"),  # the prompt already holds the empty think block
    "qwen2.5": ("", "\n", hermes, "<|im_end|>\n"),
    "llama-3.2": ("", None, llama_json, "<|eot_id|>"),
    "smollm2": ("", "\n", hermes, "<|im_end|>\n"),
    "gemma3": ("", "\n", hermes, "<end_of_turn>\n"),
    "opt": ("", "\n", hermes, "<|im_end|></s>\n"),  # ChatML tags are plain text for OPT; </s> is the stop token
}


def expected_turns(family: str, s: Sample) -> list[str]:
    before, separator, write, end = STYLE[family]
    turns = []
    for m in s.messages:
        if m["role"] == "assistant":
            calls = "\n".join(write(c["function"]) for c in m.get("tool_calls", []))
            content = "" if calls and separator is None else m["content"] or ""
            turns.append(before + content + (separator if content and calls else "") + calls + end)
    return turns


@pytest.fixture(scope="session")
def chat_format(tiny_models, real_tiny_models):
    """`chat_format(family, vocab="trained") -> (tokenizer, ChatFormat)` with the template the family trains with,
    built once."""

    @cache
    def build(family, vocab="trained"):
        tokenizer = AutoTokenizer.from_pretrained((real_tiny_models if vocab == "real" else tiny_models)(family))
        template = resolve_template(TEMPLATE.get(family))
        return tokenizer, ChatFormat.from_tokenizer(tokenizer, template, KWARGS.get(family))

    return build


def spans(mask: list[int]) -> list[tuple[int, int]]:
    """[start, stop) of each run of 1s."""
    edges = [k for k in range(len(mask) + 1) if (mask[k - 1] if k else 0) != (mask[k] if k < len(mask) else 0)]
    return list(zip(edges[::2], edges[1::2]))


def test_resolve_template(tmp_path):
    assert resolve_template(None) is None
    assert resolve_template("chatml_tools") == (TEMPLATES_DIR / "chatml_tools.jinja").read_text(encoding="utf-8")
    mine = tmp_path / "mine.jinja"
    mine.write_text("{{ messages }}", encoding="utf-8")
    assert resolve_template(str(mine)) == "{{ messages }}"
    with pytest.raises(UserError, match="chatml_tools, gemma3_tools"):
        resolve_template("chatml")
    with pytest.raises(UserError, match="not found"):
        resolve_template(str(tmp_path / "missing.jinja"))


@pytest.mark.parametrize("family, vocab", VOCABS)
def test_chat_format_per_family(chat_format, family, vocab):
    tokenizer, fmt = chat_format(family, vocab)
    assert fmt.end_of_turn == FAMILIES[family].end_of_turn
    assert fmt.inference_template == (resolve_template(TEMPLATE.get(family)) or tokenizer.chat_template)
    if family in TRL_FAMILIES:  # TRL's copy, with {% generation %} markers
        assert fmt.method == "trl-training-template" and "generation" in fmt.training_template
        assert fmt.training_template != fmt.inference_template
    else:
        assert fmt.method == "template-diff" and fmt.training_template == fmt.inference_template
    real = FAMILIES[family].template
    assert tokenizer.chat_template == (real.text() if real else None)  # the tokenizer is left alone


# Rows a sample trains as, where not one: TRL's Qwen3/3.5 copies keep an empty think block in every earlier turn, where
# the originals drop it from turns before the last user message (Qwen3: from every turn but the one being generated).
ROWS = {("qwen3", PARALLEL.meta["id"]): 2, ("qwen3", CHAIN.meta["id"]): 3, ("qwen3", RETRY.meta["id"]): 3,
        ("qwen3.5", RETRY.meta["id"]): 2}


def render(tokenizer, fmt, family, messages, **kwargs) -> str:
    """`messages` rendered with the inference template, as generation renders them."""
    return tokenizer.apply_chat_template(messages, tools=TOOLS, chat_template=fmt.inference_template, tokenize=False,
                                         **KWARGS.get(family, {}), **kwargs)


@pytest.mark.parametrize("family, vocab", VOCABS)
@pytest.mark.parametrize("s", [PARALLEL, CHAIN, RETRY], ids=["parallel", "chain", "retry"])
def test_mask_trains_exactly_the_assistant_turns(chat_format, family, vocab, s):
    tokenizer, fmt = chat_format(family, vocab)
    if family == "llama-3.2" and s is PARALLEL:  # its template refuses more than one call per turn
        with pytest.raises(UserError, match=re.escape(s.where()) + ".*single tool-calls"):
            fmt.encode(s)
        return
    rows = fmt.encode(s)
    assert len(rows) == ROWS.get((family, s.meta["id"]), 1)
    turns = [i for i, m in enumerate(s.messages) if m["role"] == "assistant"]
    if len(rows) == 1:  # the whole sample as the training template renders it
        assert rows[0][0] == tokenizer.apply_chat_template(
            s.messages, tools=s.tools, chat_template=fmt.training_template, **KWARGS.get(family, {})
        )["input_ids"]
    runs = [(ids, a, b) for ids, mask in rows for a, b in spans(mask)]
    done = 0  # turns in the rows so far
    for ids, mask in rows:
        assert len(mask) == len(ids) and set(mask) == {0, 1}
        done += len(spans(mask))
        if len(rows) > 1:  # each row is the inference rendering up to its last trained turn
            assert tokenizer.decode(ids) == render(tokenizer, fmt, family, s.messages[: turns[done - 1] + 1])

    trained = [tokenizer.decode(ids[a:b]) for ids, a, b in runs]
    assert trained == expected_turns(family, s)  # one span per assistant turn, markup and stop token included
    end_of_turn = tokenizer.convert_tokens_to_ids(FAMILIES[family].end_of_turn)
    for i, (ids, a, b) in zip(turns, runs):
        assert end_of_turn in ids[a:b]
        # What precedes a trained turn is what the model sees at inference: the prompt, generation cue included.
        prompt = render(tokenizer, fmt, family, s.messages[:i], add_generation_prompt=True)
        assert tokenizer.decode(ids[:a]) == prompt and ids[:a] == tokenizer(prompt, add_special_tokens=False).input_ids
    for text in (SYSTEM, QUESTION, *RESULTS, "<tool_response>"):
        assert not any(text in t for t in trained)
    assert fmt.encode(s) == rows  # deterministic


@pytest.mark.parametrize("family", TRL_FAMILIES)
def test_a_single_turn_sample_is_one_row(chat_format, family):
    tokenizer, fmt = chat_format(family)
    s = Sample(CHAIN.messages[:3], TOOLS, CHAIN.meta)
    ((ids, mask),) = fmt.encode(s)
    assert ids == tokenizer.apply_chat_template(s.messages, tools=TOOLS,
                                                chat_template=fmt.training_template)["input_ids"]
    assert [tokenizer.decode(ids[a:b]) for a, b in spans(mask)] == expected_turns(family, s)


def test_qwen3_with_thinking_off_trains_each_turn_after_its_inference_prompt(tiny_models):
    """As Qwen3 recipes train: the generation prompt ends with the empty think block, which generation then never
    writes into earlier turns, so each turn of a chain trains in its own row, after exactly its inference prompt."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_models("qwen3"))
    fmt = ChatFormat.from_tokenizer(tokenizer, template_kwargs={"enable_thinking": False})
    rows = fmt.encode(CHAIN)
    turns = [i for i, m in enumerate(CHAIN.messages) if m["role"] == "assistant"]
    assert len(rows) == len(turns)
    for i, (ids, mask) in zip(turns, rows):
        ((a, b),) = spans(mask)
        assert tokenizer.decode(ids[:a]) == tokenizer.apply_chat_template(
            CHAIN.messages[:i], tools=TOOLS, add_generation_prompt=True, tokenize=False, enable_thinking=False)
        assert tokenizer.decode(ids[a:b]) == expected_turns("qwen2.5", CHAIN)[turns.index(i)]  # no think block
        assert b == len(ids) and tokenizer.decode(ids).count("<think>") == 1  # the prompt's, none in earlier turns


@pytest.mark.parametrize("family, vocab", VOCABS)
def test_a_prompt_alone_trains_nothing(chat_format, family, vocab):
    _, fmt = chat_format(family, vocab)
    prompt = sample("prompt", OPENING)
    with pytest.raises(UserError, match=re.escape(prompt.where()) + ": no assistant turn"):
        fmt.encode(prompt)


def test_opt_needs_a_template(tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models("opt"))
    with pytest.raises(UserError, match="no chat template.*chatml_tools"):
        ChatFormat.from_tokenizer(tokenizer)


# Renders the last message differently from the same message with more after it, as Qwen3 does with <think>.
NOT_PREFIX_PRESERVING = (
    r"{%- for m in messages %}{{ '<|im_start|>' + m.role + '\n' + (m.content or '') }}"
    r"{%- if loop.last and m.role == 'assistant' %}{{ ' (final)' }}{% endif %}{{ '<|im_end|>\n' }}{%- endfor %}"
    r"{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Marks the content but not the <|im_end|> after it: the model would never learn to stop.
STOP_TOKEN_OUTSIDE_MARKERS = (
    r"{%- for m in messages %}{{ '<|im_start|>' + m.role + '\n' }}"
    r"{%- if m.role == 'assistant' %}{% generation %}{{ m.content or '' }}{% endgeneration %}"
    r"{%- else %}{{ m.content }}{% endif %}{{ '<|im_end|>\n' }}{%- endfor %}"
    r"{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.mark.parametrize(
    "template, method, error",
    [
        (NOT_PREFIX_PRESERVING, "template-diff", "the recipe's chat template is not prefix-preserving"),
        (STOP_TOKEN_OUTSIDE_MARKERS, "trl-training-template", r"would train other text.*'Now the local time\.' vs"),
    ],
    ids=["not-prefix-preserving", "stop-token-untrained"],
)
def test_a_template_that_breaks_the_mask_is_refused(tiny_models, template, method, error):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models("qwen2.5"))
    fmt = ChatFormat.from_tokenizer(tokenizer, template)
    assert fmt.method == method
    chat = sample("chat", OPENING + [
        {"role": "assistant", "content": "Now the local time."},
        {"role": "user", "content": "Go on."},
        {"role": "assistant", "content": ANSWER},
    ])
    with pytest.raises(UserError, match=re.escape(chat.where()) + ".*" + error):
        fmt.encode(chat)


def packed(chat_format, family, vocab="trained") -> tuple[list[dict], Dataset]:
    """Encoded conversations of several lengths (each sample cut after each of its assistant turns) as input_ids and
    labels (-100 off the mask), and the rows TRL's best-fit-decreasing packing makes of them."""
    _, fmt = chat_format(family, vocab)
    rows = []
    for s in [CHAIN, RETRY] if family == "llama-3.2" else [CHAIN, PARALLEL]:
        for k, m in enumerate(s.messages):
            if m["role"] == "assistant":
                for ids, mask in fmt.encode(Sample(s.messages[: k + 1], s.tools, s.meta)):
                    rows.append({"input_ids": ids, "labels": [t if bit else -100 for t, bit in zip(ids, mask)]})
    longest = max(len(r["input_ids"]) for r in rows)
    return rows, pack_dataset(Dataset.from_list(rows), 2 * longest, "bfd")


@pytest.mark.parametrize("family, vocab", VOCABS)
def test_packing_keeps_each_mask_with_its_sequence(chat_format, family, vocab):
    rows, packs = packed(chat_format, family, vocab)
    assert len(packs) < len(rows)  # something was packed together
    unpacked = []
    for row in packs:
        assert sum(row["seq_lengths"]) == len(row["input_ids"]) == len(row["labels"])
        start = 0
        for length in row["seq_lengths"]:
            unpacked.append({k: row[k][start : start + length] for k in ("input_ids", "labels")})
            start += length
    key = lambda r: (r["input_ids"], r["labels"])  # noqa: E731
    assert sorted(unpacked, key=key) == sorted(rows, key=key)


OPT_MIXES_PACKED_SEQUENCES = pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="OPT builds its attention mask without position_ids, so packed sequences attend to each other (sdpa and "
    "eager alike): train OPT without packing and padding_free",
)


@pytest.mark.parametrize("family", [pytest.param(f, marks=OPT_MIXES_PACKED_SEQUENCES) if f == "opt" else f
                                    for f in FAMILIES])
def test_padding_free_forward_keeps_packed_sequences_apart(chat_format, tiny_models, family):
    """What TRL feeds the model for a packed row (position_ids restarting at each sequence, no attention mask,
    use_cache=False as its compute_loss sets) must give each sequence the logits it gets alone (TRL #3728, #3781).
    transformers finds the boundaries from position_ids when it builds its sdpa/eager masks, so no flash-attention is
    needed on CPU, except where a model's mask builder ignores position_ids (OPT), and for Qwen3.5, whose
    linear-attention layers need the causal_conv1d kernel to keep sequences apart (and refuse without it)."""
    tokenizer, _ = chat_format(family)
    _, packs = packed(chat_format, family)
    row = next(row for row in packs if len(row["seq_lengths"]) > 1)
    batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id or 0, padding_free=True)([row])
    assert batch["labels"][0].tolist() == row["labels"]  # collation keeps the mask (no sequence starts trained)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    model = AutoModelForCausalLM.from_pretrained(tiny_models(family)).eval()
    with torch.no_grad():
        if family == "qwen3.5" and importlib.util.find_spec("causal_conv1d") is None:
            with pytest.raises(ValueError, match="causal_conv1d"):  # refused, not silently mixed
                model(**inputs, use_cache=False)
            return
        together = model(**inputs, use_cache=False).logits[0]
        alone = [model(ids[None]).logits[0] for ids in torch.tensor(row["input_ids"]).split(row["seq_lengths"])]
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-4, rtol=1e-4)
