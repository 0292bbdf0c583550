"""The tiny-model factory: every family loads offline, runs, and renders tool conversations as its real model would."""

import copy
import hashlib

import pytest
import torch
from jinja2 import TemplateError
from transformers import AutoModelForCausalLM, AutoTokenizer

from dispatchtune import tiny_models
from dispatchtune.errors import UserError
from dispatchtune.families import FAMILIES
from dispatchtune.tiny_models import build_tiny_model, main

CHAT_FAMILIES = [f for f in FAMILIES if f != "opt"]
QWEN_FAMILIES = ["qwen3", "qwen3.5", "qwen2.5"]

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "get_local_time", "description": "Local time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
]
# The canonical sample, in the project's target shape (assistant content None next to tool_calls, dict arguments).
MESSAGES = [
    {"role": "system", "content": "You are a dispatch assistant."},
    {"role": "user", "content": "What's the weather and the time in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"id": "call_2", "type": "function", "function": {"name": "get_local_time", "arguments": {"city": "Paris"}}},
    ]},
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"temp_c": 18}'},
    {"role": "tool", "tool_call_id": "call_2", "name": "get_local_time", "content": '{"time": "14:05"}'},
    {"role": "assistant", "content": "It is 18 °C and 14:05 in Paris."},
]
# The assistant cue each template ends with under add_generation_prompt=True.
GENERATION_CUE = {
    "qwen3": "<|im_start|>assistant\n",
    "qwen3.5": "<|im_start|>assistant\n<think>\n\n</think>\n\n",  # the nothink template pre-closes the think block
    "qwen2.5": "<|im_start|>assistant\n",
    "llama-3.2": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "smollm2": "<|im_start|>assistant\n",
    "gemma3": "<start_of_turn>model\n",
}


def render(tokenizer, messages, **kwargs):
    return tokenizer.apply_chat_template(messages, tools=TOOLS, tokenize=False, **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_offline_and_runs(tiny_models, family):
    spec = FAMILIES[family]
    path = tiny_models(family)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    # Two layers stay under 10 MB; Gemma 3 has six, for the real 5 sliding : 1 global pattern llama.cpp assumes.
    assert sum(f.stat().st_size for f in path.iterdir()) < (25_000_000 if family == "gemma3" else 10_000_000)
    assert model.config.vocab_size == len(tokenizer)

    ids = tokenizer("Dispatch unit 42 to Main Street.", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert (ids[0, 0] == tokenizer.bos_token_id) == spec.add_bos

    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        spec.bos_token, spec.eos_token, spec.pad_token)
    end_of_turn = tokenizer.convert_tokens_to_ids(spec.end_of_turn)
    assert end_of_turn in model.generation_config.eos_token_id
    for token in spec.all_special_tokens + spec.plain_tokens:
        assert len(tokenizer(token, add_special_tokens=False).input_ids) == 1, token


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_qwen_tool_markup_survives_skipping_special_tokens(tiny_models, family):
    # Tool-call parsers read decoded text: `<tool_call>` must stay, `<|im_end|>` must go, as with the real tokenizers.
    tokenizer = AutoTokenizer.from_pretrained(tiny_models(family))
    ids = tokenizer('<tool_call>\n{"name": "f"}\n</tool_call><|im_end|>').input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == '<tool_call>\n{"name": "f"}\n</tool_call>'


@pytest.mark.parametrize("family", FAMILIES)
def test_carries_the_original_template(tiny_models, family):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models(family))
    assert tokenizer.chat_template == (FAMILIES[family].template.text() if FAMILIES[family].template else None)
    if family == "opt":
        assert tokenizer.chat_template is None


def test_trl_recognises_the_templates_it_can_patch(tiny_models):
    from trl.chat_template_utils import get_training_chat_template

    for family in CHAT_FAMILIES:
        tokenizer = AutoTokenizer.from_pretrained(tiny_models(family))
        if family in ("llama-3.2", "smollm2"):  # TRL has no training template for these: no assistant_only_loss
            with pytest.raises(ValueError, match="not training-compatible"):
                get_training_chat_template(tokenizer)
        else:
            assert "generation" in get_training_chat_template(tokenizer), family


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_generation_prompt(tiny_models, family):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models(family))
    prompt = render(tokenizer, MESSAGES[:2], add_generation_prompt=True, date_string="26 Jul 2024")
    assert prompt.endswith(GENERATION_CUE[family])
    assert FAMILIES[family].end_of_turn in prompt


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_qwen_renders_parallel_calls_and_results(tiny_models, family):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models(family))
    text = render(tokenizer, MESSAGES)
    assert text.count("<tool_call>") >= 2 and text.count("<tool_response>") == 2
    assert "get_weather" in text and "get_local_time" in text and '"time": "14:05"' in text
    assert text.rstrip().endswith("It is 18 °C and 14:05 in Paris.<|im_end|>")
    if family == "qwen3.5":  # Qwen3.5 writes calls as XML-ish parameters, not JSON
        assert "<function=get_weather>\n<parameter=city>\nParis\n</parameter>" in text
    else:
        assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in text
    assert len(tokenizer(text).input_ids) < len(text) / 2  # the corpus taught it the markup: not byte by byte


def test_llama_renders_one_call_per_turn(tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models("llama-3.2"))
    with pytest.raises(TemplateError, match="only supports single tool-calls"):
        render(tokenizer, MESSAGES)
    one_call = copy.deepcopy(MESSAGES[:4]) + MESSAGES[5:]
    one_call[2]["tool_calls"] = one_call[2]["tool_calls"][:1]
    text = render(tokenizer, one_call, date_string="26 Jul 2024")
    assert text.startswith("<|begin_of_text|>")  # the template writes bos itself; apply_chat_template adds none
    assert '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>' in text
    # A string tool result counts as "iterable" in the template, so it is JSON-encoded a second time.
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n"{\\"temp_c\\": 18}"<|eot_id|>' in text
    assert "Today Date: 26 Jul 2024" in text  # without date_string the template stamps today's date


def test_smollm2_ignores_tools(tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models("smollm2"))
    # transformers drops None-valued keys before rendering, and plain ChatML concatenates the missing content.
    with pytest.raises(TemplateError, match="no attribute 'content'"):
        render(tokenizer, MESSAGES)
    messages = copy.deepcopy(MESSAGES)
    messages[2]["content"] = ""
    text = render(tokenizer, messages)
    # Neither the tool list nor the calls are rendered; tool results are bare `tool` turns.
    assert "get_weather" not in text and "get_local_time" not in text
    assert "<|im_start|>assistant\n<|im_end|>" in text
    assert '<|im_start|>tool\n{"temp_c": 18}<|im_end|>' in text


def test_gemma3_rejects_tool_messages(tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models("gemma3"))
    with pytest.raises(TemplateError, match="roles must alternate"):
        render(tokenizer, MESSAGES)
    text = render(tokenizer, MESSAGES[:2] + MESSAGES[5:])
    # The system prompt is folded into the first user turn; tools are not rendered at all.
    assert text.startswith("<bos><start_of_turn>user\nYou are a dispatch assistant.\n\nWhat's the weather")
    assert "get_weather" not in text
    assert text.endswith("<start_of_turn>model\nIt is 18 °C and 14:05 in Paris.<end_of_turn>\n")


def test_opt_has_no_chat_template(tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models("opt"))
    assert tokenizer.chat_template is None
    with pytest.raises(ValueError):
        render(tokenizer, MESSAGES)


def _hashes(path):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir())}


def test_same_family_and_seed_give_the_same_files(tmp_path):
    rng = torch.random.get_rng_state()
    first = _hashes(build_tiny_model("qwen3", tmp_path / "a", seed=3))
    assert first == _hashes(build_tiny_model("qwen3", tmp_path / "b", seed=3))
    other = _hashes(build_tiny_model("qwen3", tmp_path / "c", seed=4))
    assert other["tokenizer.json"] == first["tokenizer.json"]
    assert other["model.safetensors"] != first["model.safetensors"]
    assert torch.equal(torch.random.get_rng_state(), rng)  # the caller's RNG is left alone


def test_complete_build_is_reused_and_others_are_refused(tmp_path, monkeypatch):
    out = build_tiny_model("smollm2", tmp_path / "m")
    before = {f.name: f.stat().st_mtime_ns for f in out.iterdir()}
    monkeypatch.setattr(tiny_models, "_write_model", lambda *a: pytest.fail("rebuilt a complete model"))
    assert build_tiny_model("smollm2", out) == out
    assert {f.name: f.stat().st_mtime_ns for f in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no partial build left beside it

    with pytest.raises(UserError, match="built as"):
        build_tiny_model("smollm2", out, seed=1)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a complete tiny model"):
        build_tiny_model("smollm2", tmp_path / "junk")
    with pytest.raises(UserError, match="unknown model family"):
        build_tiny_model("gpt-5", tmp_path / "x")


def test_cli(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "--family" in capsys.readouterr().out

    built = []
    monkeypatch.setattr(tiny_models, "build_tiny_model", lambda family, out, **kw: built.append((family, out)) or out)
    assert main(["--family", "all", "--out", str(tmp_path)]) == 0
    assert built == [(f, tmp_path / f) for f in FAMILIES]
    built.clear()
    assert main(["--family", "gemma3", "--out", str(tmp_path / "g")]) == 0
    assert built == [("gemma3", tmp_path / "g")]
