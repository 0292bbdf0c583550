"""Real vocabularies: the tiny models built with `--vocab real` tokenize as the real checkpoints do, carry their
published token ids and config facts, and the templates we train and serve with render as the published ones.

The references are llama.cpp's tokenizer test files (vocabularies of published checkpoints, texts and the ids the
real tokenizer gives them) and its copies of published chat templates, from the llama-cpp-python sources that
scripts/install_export_tools.sh unpacks; these tests skip without them.
"""

import copy
import json
import unicodedata
from functools import cache

import pytest
from transformers import AutoConfig, AutoTokenizer, GenerationConfig

from dispatchtune import tiny_models
from dispatchtune.errors import UserError
from dispatchtune.export import llama_cpp_tools
from dispatchtune.families import FAMILIES
from dispatchtune.tiny_models import build_tokenizer, converted_vocab, main

REAL = [name for name, f in FAMILIES.items() if f.real_vocab]
PUBLISHED = [name for name, f in FAMILIES.items() if f.published_template]


@pytest.fixture(scope="module")
def models_dir():
    try:
        return llama_cpp_tools.models_dir()
    except UserError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def real_tokenizer(real_tiny_models):
    """`real_tokenizer(family)`: the real-vocabulary tiny model's tokenizer as AutoTokenizer loads it."""
    return cache(lambda family: AutoTokenizer.from_pretrained(real_tiny_models(family)))


def vectors(models_dir, name: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's test vectors for `ggml-vocab-<name>.gguf`: each text with the ids the real tokenizer gives it
    (texts are separated by a marker line; the .out file has one line of ids per text)."""
    texts = (models_dir / f"ggml-vocab-{name}.gguf.inp").read_text(encoding="utf-8").split(
        "\n__ggml_vocab_test__\n")[:-1]
    ids = (models_dir / f"ggml-vocab-{name}.gguf.out").read_text(encoding="utf-8").splitlines()
    assert len(texts) == len(ids) > 40
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, ids)]


def test_the_registry_says_which_families_have_a_real_vocabulary():
    assert REAL == ["qwen3", "qwen3.5", "qwen2.5", "llama-3.2", "opt"]
    assert PUBLISHED == ["qwen3", "qwen3.5", "qwen2.5", "llama-3.2"]
    for name in ("smollm2", "gemma3"):  # llama.cpp's tokenizer tests carry neither vocabulary
        with pytest.raises(UserError, match=f"no real vocabulary for {name}.*--vocab trained"):
            tiny_models.build_real_tokenizer(name)


@pytest.mark.parametrize("family", REAL)
def test_real_tokenizer_reproduces_llama_cpps_vectors(models_dir, real_tokenizer, family):
    """Every text of the vocabulary's test file tokenizes to the ids it lists. OPT's ordinary tokens sit at their
    GPT-2 id + 4 (RealVocab.differs says why), so its ids are compared shifted.

    One known exception, by design: Qwen's tokenizers normalise text to NFC and llama.cpp does not, so the three
    `qwen35` texts written with combining marks (to test the split rule) are compared with the tokenizer's split
    and merges alone; the whole tokenizer gives them the ids of their composed form instead, as the real one does.
    """
    from tokenizers import Tokenizer

    spec = FAMILIES[family]
    tokenizer = real_tokenizer(family)
    unnormalised = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    unnormalised.normalizer = None
    shift = len(spec.leading_tokens)
    decomposed = 0
    for text, expected in vectors(models_dir, spec.real_vocab.llama_cpp):
        expected = [i + shift for i in expected]
        if spec.nfc and unicodedata.normalize("NFC", text) != text:
            decomposed += 1
            assert unnormalised.encode(text, add_special_tokens=False).ids == expected, text
            composed = tokenizer.encode(unicodedata.normalize("NFC", text), add_special_tokens=False)
            assert tokenizer.encode(text, add_special_tokens=False) == composed != expected
        else:
            assert tokenizer.encode(text, add_special_tokens=False) == expected, text
    assert decomposed == (3 if family == "qwen3.5" else 0)


def test_llama_3_needs_ignore_merges(models_dir):
    """Llama 3's tokenizer.json sets BPE `ignore_merges` (a word in the vocabulary is one token); the GGUF file does
    not record it, and without it one Vietnamese text of llama.cpp's vectors tokenizes differently."""
    from tokenizers import Tokenizer

    data = converted_vocab("llama-bpe")
    assert FAMILIES["llama-3.2"].real_vocab.ignore_merges and not data["model"]["ignore_merges"]
    plain = Tokenizer.from_str(json.dumps(data))
    differing = [text for text, ids in vectors(models_dir, "llama-bpe")
                 if plain.encode(text, add_special_tokens=False).ids != ids]
    assert differing == ["Cửa Việt"]
    data["model"]["ignore_merges"] = True
    fixed = Tokenizer.from_str(json.dumps(data))
    assert fixed.encode("Cửa Việt", add_special_tokens=False).ids == [34, 91163, 101798]


# The real checkpoints' published tokenizer and config facts, restated here to check the registry against.
QWEN_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|object_ref_start|>": 151646,
            "<|vision_start|>": 151652, "<|video_pad|>": 151656, "<tool_call>": 151657, "</tool_call>": 151658,
            "<|fim_prefix|>": 151659, "<|file_sep|>": 151664}
QWEN3_IDS = {**QWEN_IDS, "<tool_response>": 151665, "</tool_response>": 151666, "<think>": 151667, "</think>": 151668}
LLAMA_IDS = {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|reserved_special_token_0|>": 128002,
             "<|reserved_special_token_1|>": 128003, "<|finetune_right_pad_id|>": 128004,
             "<|reserved_special_token_2|>": 128005, "<|start_header_id|>": 128006, "<|end_header_id|>": 128007,
             "<|eom_id|>": 128008, "<|eot_id|>": 128009, "<|python_tag|>": 128010,
             "<|reserved_special_token_3|>": 128011, "<|reserved_special_token_247|>": 128255}
# (token ids, len(tokenizer), config vocab_size, config bos, config eos, generation_config eos, pad)
FACTS = {
    "qwen3": (QWEN3_IDS, 151669, 151936, 151643, 151645, [151645, 151643], 151643),
    # The stand-in of RealVocab.differs: Qwen 3's token set over Qwen2's vocabulary, not Qwen3.5's 248k one.
    "qwen3.5": (QWEN3_IDS, 151669, 151936, 151643, 151645, [151645, 151643], 151643),
    "qwen2.5": (QWEN_IDS, 151665, 151936, 151643, 151645, [151645, 151643], 151643),
    "llama-3.2": (LLAMA_IDS, 128256, 128256, 128000, [128001, 128008, 128009], [128001, 128008, 128009], None),
    "opt": ({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}, 50260, 50272, 2, 2, [2], 1),
}
# Tokens the real tokenizers add as plain (not special) ones: they survive skip_special_tokens decoding.
PLAIN = {"qwen3": {"<tool_call>", "<think>"}, "qwen2.5": {"<tool_call>"}, "llama-3.2": set(), "opt": set()}


@pytest.mark.parametrize("family", REAL)
def test_special_tokens_and_config_carry_the_published_facts(real_tiny_models, real_tokenizer, family):
    spec = FAMILIES[family]
    tokenizer = real_tokenizer(family)
    ids, length, vocab_size, bos, eos, stops, pad = FACTS[family]
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in ids} == ids
    assert len(tokenizer) == length
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        spec.bos_token, spec.eos_token, spec.pad_token)
    encoded = tokenizer("Dispatch unit 42.").input_ids
    assert (encoded[0] == tokenizer.bos_token_id) == spec.add_bos
    for token in PLAIN.get(family, ()):
        assert token not in tokenizer.all_special_tokens and tokenizer.decode(
            tokenizer.encode(token, add_special_tokens=False), skip_special_tokens=True) == token

    config = AutoConfig.from_pretrained(real_tiny_models(family))
    assert (config.vocab_size, config.bos_token_id, config.eos_token_id) == (vocab_size, bos, eos)
    assert config.tie_word_embeddings and config.num_hidden_layers == 2  # only depth and width shrink
    generation = GenerationConfig.from_pretrained(real_tiny_models(family))
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (bos, stops, pad)


@pytest.mark.parametrize("family", REAL)
def test_named_tokens_agree_with_the_vocabulary_file(models_dir, real_tokenizer, family):
    """Where llama.cpp's file names a control token (not a placeholder or a reserved slot), ours is at the same id:
    the file predates some names (Qwen1.5's token set, Llama 3.0's reserved names) but never contradicts them."""
    spec = FAMILIES[family]
    data = converted_vocab(spec.real_vocab.llama_cpp)
    named = {t["id"]: t["content"] for t in data["added_tokens"]
             if t["special"] and t["id"] < len(data["model"]["vocab"])  # transformers may add one past the file
             and not t["content"].startswith(("[PAD", "<|reserved"))}
    tokenizer = real_tokenizer(family)
    if family == "opt":  # GPT-2's one special token; OPT has its own four instead
        assert named == {50256: "<|endoftext|>"} and "<|endoftext|>" not in tokenizer.get_vocab()
        return
    assert named and {i: tokenizer.convert_ids_to_tokens(i) for i in named} == named


def test_missing_sources_are_one_line_naming_the_fix(tmp_path, monkeypatch, capsys):
    from dispatchtune.cli import main as cli

    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.setattr(llama_cpp_tools, "CACHE_DIR", tmp_path / "empty")
    assert cli(["tiny", "--family", "qwen3", "--vocab", "real", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "install_export_tools.sh" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()
    assert cli(["tiny", "--family", "gemma3", "--vocab", "real", "--out", str(tmp_path / "g")]) == 2
    assert "no real vocabulary for gemma3" in capsys.readouterr().err


def test_cli_builds_the_families_that_have_one(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(tiny_models, "build_tiny_model", lambda family, out, **kw: built.append((family, kw)) or out)
    assert main(["--family", "all", "--vocab", "real", "--out", str(tmp_path)]) == 0
    assert built == [(f, {"hidden_size": 256, "seed": 0, "vocab": "real", "corpus": None, "chat_template": None,
                          "layers": None, "heads": None}) for f in REAL]


def test_recipes_name_them_tiny_family_real(tmp_path, monkeypatch):
    built = []
    monkeypatch.setenv(tiny_models.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(tiny_models, "build_tiny_model", lambda family, out, **kw: built.append((family, out, kw)))
    tiny_models.cached_tiny_model("llama-3.2:real")
    tiny_models.cached_tiny_model("qwen3")
    assert built == [("llama-3.2", tmp_path / "llama-3.2-real", {"vocab": "real"}), ("qwen3", tmp_path / "qwen3", {"vocab": "trained"})]


# --- templates: ours against the published ones, on the canonical samples ---

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": name, "description": text, "parameters": CITY}}
         for name, text in [("get_weather", "Current weather in a city."), ("get_local_time", "Local time in a city.")]]
OPENING = [{"role": "system", "content": "You are a dispatch assistant."},
           {"role": "user", "content": "What's the weather and the time in Paris?"}]
ANSWER = {"role": "assistant", "content": "It is 18 °C and 14:05 in Paris."}


def call(k: int, name: str) -> dict:
    return {"id": f"call_{k}", "type": "function", "function": {"name": name, "arguments": {"city": "Paris"}}}


def result(k: int, name: str) -> dict:
    return {"role": "tool", "tool_call_id": f"call_{k}", "name": name,
            "content": ['{"temp_c": 18}', '{"time": "14:05"}'][k]}


def calling(content, *calls) -> dict:
    return {"role": "assistant", "content": content, "tool_calls": list(calls)}


SAMPLES = {
    "call-null": OPENING + [calling(None, call(0, "get_weather")), result(0, "get_weather"), ANSWER],
    "call-empty": OPENING + [calling("", call(0, "get_weather")), result(0, "get_weather"), ANSWER],
    "parallel": OPENING + [calling(None, call(0, "get_weather"), call(1, "get_local_time")),
                           result(0, "get_weather"), result(1, "get_local_time"), ANSWER],
    "chain": OPENING + [calling(None, call(0, "get_weather")), result(0, "get_weather"),
                        calling("Now the local time.", call(1, "get_local_time")), result(1, "get_local_time"),
                        ANSWER],
}


def renders(tokenizer, template: str, messages: list[dict], **kwargs) -> list[str]:
    """What the template makes of each prefix of the conversation from the first user message on: with the
    generation prompt where the model is to answer next (serving), the conversation so far where it has answered
    (training renders whole conversations). A template error is rendered as its text."""
    out = []
    for k in range(len(OPENING), len(messages) + 1):
        try:
            out.append(tokenizer.apply_chat_template(
                messages[:k], tools=TOOLS, chat_template=template, tokenize=False,
                add_generation_prompt=messages[k - 1]["role"] != "assistant", date_string="26 Jul 2024", **kwargs))
        except Exception as e:  # noqa: BLE001  (Jinja raises what the template raises)
            out.append(f"error: {e}")
    return out


def without_null_content(messages: list[dict]) -> list[dict]:
    messages = copy.deepcopy(messages)
    for m in messages:
        if m.get("content", "") is None:
            m["content"] = ""
    return messages


@pytest.mark.parametrize("family", PUBLISHED)
@pytest.mark.parametrize("sample", SAMPLES)
def test_our_template_renders_as_the_published_one(models_dir, family, sample):
    spec = FAMILIES[family]
    published = spec.published_template
    theirs = (models_dir / "templates" / published.file).read_text(encoding="utf-8")
    ours = spec.training_template.text()
    tokenizer = build_tokenizer(family)  # rendering reads only the token names, which every tiny tokenizer has
    messages = SAMPLES[sample]
    needs = dict(published.needs)
    expected = renders(tokenizer, ours, messages, **needs)
    if published.refuses_null_content and messages != without_null_content(messages):
        assert any("content" in r for r in renders(tokenizer, theirs, messages, **needs) if r.startswith("error"))
        messages = without_null_content(messages)  # what a user of the published template must send instead
    assert renders(tokenizer, theirs, messages, **needs) == expected
    if needs:  # the difference the registry states is real
        assert renders(tokenizer, theirs, messages) != renders(tokenizer, ours, messages)
    if family == "llama-3.2" and sample == "parallel":  # both refuse more than one call per turn
        assert "single tool-calls" in expected[1]
    else:
        assert not any(r.startswith("error") for r in expected)
