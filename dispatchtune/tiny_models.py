"""Build tiny random models of each supported family, offline, for tests and the demo.

A tiny model has its family's real architecture (a 2-layer config of the real class), real special tokens, real
chat template and real end-of-turn handling, but a tokenizer trained here on a few kilobytes of built-in text and
random weights. Nothing is downloaded, so every stage can be tested end to end on a machine without the Hub.

`FAMILIES` is also the one place later stages look up a family's facts (its Hub id, end-of-turn token, template).
Heavy libraries (torch, transformers, tokenizers) are imported inside the functions that need them, because the
`dispatchtune` CLI imports this module just to build its argument parser.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .atomic import commit, staging
from .errors import UserError

DEFAULT_HIDDEN_SIZE = 256  # llama.cpp's K-quants need weight rows that are multiples of 256
NUM_LAYERS = 2
TOKENIZER_VOCAB_SIZE = 1000  # cap on the trained vocabulary; the small corpus yields 500-800 tokens
MARKER = "tiny_model.json"  # written last: a directory holding it is a complete build
_TEMPLATES_DIR = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class FamilySpec:
    """What a tiny model copies from the real checkpoint it stands for.

    Token ids differ from the real model's (the vocabulary is tiny), but which tokens exist, which ones the tokenizer
    treats as bos/eos/pad, whether it prepends bos, and which ones end a turn are the real ones.
    """

    name: str
    hub_id: str  # the real checkpoint this family stands for
    end_of_turn: str  # closes an assistant turn; generation must stop on it
    bos_token: str | None  # the tokenizer's bos_token (None where the real tokenizer has none)
    eos_token: str  # the tokenizer's eos_token
    pad_token: str | None  # the tokenizer's pad_token (None where the real tokenizer has none)
    leading_tokens: tuple[str, ...]  # special tokens at ids 0.. (where the real vocabulary starts with them)
    special_tokens: tuple[str, ...]  # further special tokens, appended after the learned vocabulary
    plain_tokens: tuple[str, ...]  # whole tokens that are NOT special: they survive skip_special_tokens decoding
    stop_tokens: tuple[str, ...]  # generation_config.eos_token_id, as in the real generation_config.json
    add_bos: bool  # the tokenizer prepends bos_token when encoding plain text
    template: str | None  # "trl:<file>" (TRL's copy of the original) or "dispatchtune:<file>"; None: no template
    make_config: Callable[[int, int], Any]  # (hidden_size, vocab_size) -> a transformers config of the real class
    unk_token: str | None = None
    # How text is split before byte-level BPE: this regex (then bytes), or None for GPT-2's byte-level split.
    # Qwen tokenizers use their own regex and NFC; transformers' Qwen tokenizer classes rebuild exactly that
    # pipeline whatever tokenizer.json says (AutoTokenizer forces Qwen2Tokenizer for model_type qwen2), so the
    # tiny Qwen tokenizers must use it too for tokenizer.json and AutoTokenizer to agree.
    split_regex: str | None = None
    nfc: bool = False

    @property
    def all_special_tokens(self) -> tuple[str, ...]:
        return self.leading_tokens + self.special_tokens


# --- config builders: the real architecture, shrunk. MLP widths are multiples of the hidden size, and attention
# widths are 256 or the hidden size, so with the default every weight row is a multiple of 256 (K-quants). ---


def _qwen3_config(hidden: int, vocab: int):
    from transformers import Qwen3Config

    # head_dim 128 as in every Qwen3; GQA 2:1 as in Qwen3-0.6B (16 q / 8 kv heads).
    return Qwen3Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=NUM_LAYERS,
        num_attention_heads=2, num_key_value_heads=1, head_dim=128, tie_word_embeddings=True,
        max_position_embeddings=40960, rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
    )


def _qwen3_5_config(hidden: int, vocab: int):
    from transformers import Qwen3_5TextConfig

    # One Gated DeltaNet layer and one gated full-attention layer (the real ones repeat 3 linear : 1 full).
    return Qwen3_5TextConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=NUM_LAYERS,
        layer_types=["linear_attention", "full_attention"], num_attention_heads=2, num_key_value_heads=1,
        head_dim=128, linear_num_key_heads=2, linear_num_value_heads=2, linear_key_head_dim=128,
        linear_value_head_dim=128, tie_word_embeddings=True, max_position_embeddings=262144,
        rope_parameters={"rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25},
    )


def _qwen2_5_config(hidden: int, vocab: int):
    from transformers import Qwen2Config

    # head_dim 64 as in Qwen2.5-0.5B; Qwen2 always has q/k/v biases.
    return Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=NUM_LAYERS,
        num_attention_heads=hidden // 64, num_key_value_heads=1, tie_word_embeddings=True,
        max_position_embeddings=32768, rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
    )


def _llama3_2_config(hidden: int, vocab: int):
    from transformers import LlamaConfig

    # Llama 3.2 1B/3B tie embeddings and use llama3 RoPE scaling; head_dim 64.
    return LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=NUM_LAYERS,
        num_attention_heads=hidden // 64, num_key_value_heads=2, tie_word_embeddings=True, rms_norm_eps=1e-5,
        max_position_embeddings=131072,
        rope_parameters={
            "rope_type": "llama3", "rope_theta": 500_000.0, "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
        },
    )


def _smollm2_config(hidden: int, vocab: int):
    from transformers import LlamaConfig

    # SmolLM2 is a Llama: tied embeddings, head_dim 64, rope_theta 100k, 8k context.
    return LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=NUM_LAYERS,
        num_attention_heads=hidden // 64, num_key_value_heads=2, tie_word_embeddings=True, rms_norm_eps=1e-5,
        max_position_embeddings=8192, rope_parameters={"rope_type": "default", "rope_theta": 100_000.0},
    )


def _gemma3_config(hidden: int, vocab: int):
    from transformers import Gemma3TextConfig

    # Six layers, not NUM_LAYERS: every released Gemma 3 repeats 5 sliding-window layers : 1 global, and llama.cpp
    # assumes that pattern (its converter writes no per-layer types), so a GGUF of any other pattern is another model.
    # 1 kv head as in the 1B.
    return Gemma3TextConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=6,
        layer_types=["sliding_attention"] * 5 + ["full_attention"], num_attention_heads=2, num_key_value_heads=1,
        head_dim=128, query_pre_attn_scalar=128, sliding_window=512, max_position_embeddings=32768,
        tie_word_embeddings=True,
    )


def _opt_config(hidden: int, vocab: int):
    from transformers import OPTConfig

    # opt-350m is the odd one of the OPT family: post-layer-norm blocks and 512-wide embeddings projected in and
    # out of a 1024-wide model. Keep both quirks (half-width embeddings here); the MLP is narrower than the real 4x.
    return OPTConfig(
        vocab_size=vocab, hidden_size=hidden, ffn_dim=2 * hidden, num_hidden_layers=NUM_LAYERS,
        num_attention_heads=hidden // 64, word_embed_proj_dim=hidden // 2, do_layer_norm_before=False,
        max_position_embeddings=2048,
    )


# --- the families ---

_QWEN_SPECIAL = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)
# Real Qwen tokenizers add these as single tokens but not as special ones, so decoding with skip_special_tokens=True
# keeps `<tool_call>` and `<think>` in the text, which is what tool-call parsers read.
_QWEN2_5_PLAIN = (
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
)
_QWEN3_PLAIN = _QWEN2_5_PLAIN + ("<tool_response>", "</tool_response>", "<think>", "</think>")
# The Qwen tokenizers' split regexes (transformers' qwen2 / qwen3_5 PRETOKENIZE_REGEX): single digits, and
# Qwen3.5 counts combining marks (\p{M}) as letters.
_QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
_QWEN3_5_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def _qwen(name: str, hub_id: str, plain: tuple[str, ...], template: str, config, split: str) -> FamilySpec:
    """Qwen 2.5, 3 and 3.5 share their tokenizer setup: no bos, eos `<|im_end|>`, pad `<|endoftext|>`."""
    return FamilySpec(
        name=name, hub_id=hub_id, end_of_turn="<|im_end|>", bos_token=None, eos_token="<|im_end|>",
        pad_token="<|endoftext|>", leading_tokens=(), special_tokens=_QWEN_SPECIAL, plain_tokens=plain,
        stop_tokens=("<|im_end|>", "<|endoftext|>"), add_bos=False, template=template, make_config=config,
        split_regex=split, nfc=True,
    )


FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        _qwen("qwen3", "Qwen/Qwen3-0.6B", _QWEN3_PLAIN, "trl:qwen3.jinja", _qwen3_config, split=_QWEN2_SPLIT),
        # Qwen3.5 checkpoints of 2B and below ship the template that defaults to thinking off. The real ones are
        # vision-language models; this stands for their text decoder, with the Qwen3 token set. Its template
        # iterates `arguments|items`, so tool-call arguments must be dicts (a JSON string is an error).
        _qwen(
            "qwen3.5", "Qwen/Qwen3.5-0.8B", _QWEN3_PLAIN, "trl:qwen3_5_nothink.jinja", _qwen3_5_config,
            split=_QWEN3_5_SPLIT,
        ),
        _qwen(
            "qwen2.5", "Qwen/Qwen2.5-0.5B-Instruct", _QWEN2_5_PLAIN, "trl:qwen2_5.jinja", _qwen2_5_config,
            split=_QWEN2_SPLIT,
        ),
        # Llama 3.2's tool template renders at most one tool call per assistant turn (it raises on more), writes
        # string tool results JSON-encoded a second time, and stamps today's date into the system turn unless
        # `date_string` is passed. The real vocabulary also has 248 `<|reserved_special_token_N|>` tokens, left
        # out here. The real tokenizer has no pad token.
        FamilySpec(
            name="llama-3.2", hub_id="meta-llama/Llama-3.2-1B-Instruct", end_of_turn="<|eot_id|>",
            bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token=None, leading_tokens=(),
            special_tokens=(
                "<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
            ),
            plain_tokens=(), stop_tokens=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"), add_bos=True,
            template="trl:llama3_2.jinja", make_config=_llama3_2_config,
        ),
        # SmolLM2's template is plain ChatML and ignores `tools` and `tool_calls` (see templates/README.md).
        FamilySpec(
            name="smollm2", hub_id="HuggingFaceTB/SmolLM2-360M-Instruct", end_of_turn="<|im_end|>",
            bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<|endoftext|>",
            leading_tokens=(
                "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
                "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>",
                "<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<jupyter_script>", "<empty_output>",
            ),
            special_tokens=(), plain_tokens=(), stop_tokens=("<|im_end|>",), add_bos=False,
            template="dispatchtune:smollm2.jinja", make_config=_smollm2_config,
        ),
        # Gemma 3's template ignores `tools` and `tool_calls` and raises on any `tool` message (roles must
        # alternate user/assistant), so tool use has to be folded into user/assistant text for this family.
        FamilySpec(
            name="gemma3", hub_id="google/gemma-3-1b-it", end_of_turn="<end_of_turn>", bos_token="<bos>",
            eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
            leading_tokens=("<pad>", "<eos>", "<bos>", "<unk>", "<mask>"),
            special_tokens=(
                "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>",
            ),
            plain_tokens=(), stop_tokens=("<eos>", "<end_of_turn>"), add_bos=True, template="trl:gemma3.jinja",
            make_config=_gemma3_config,
        ),
        # OPT is a base model: no chat template, and `</s>` is both bos (prepended when encoding) and eos.
        FamilySpec(
            name="opt", hub_id="facebook/opt-350m", end_of_turn="</s>", bos_token="</s>", eos_token="</s>",
            pad_token="<pad>", leading_tokens=("<s>", "<pad>", "</s>", "<unk>"), special_tokens=(),
            plain_tokens=(), stop_tokens=("</s>",), add_bos=True, template=None, make_config=_opt_config,
        ),
    )
}

# Text the tokenizer learns its merges from: chat, JSON tool schemas and calls, and (added per family) the chat
# template itself, so that rendered conversations tokenize to a sane length rather than byte by byte.
_CORPUS = """\
You are a helpful assistant. You can call functions to help the user.
What is the weather like in Paris today? It is sunny and 21 degrees.
Please book a table for two at 7 pm tomorrow and send me a confirmation email.
Dispatch an ambulance to 12 Main Street. The caller reports a fall; the patient is conscious and breathing.
I could not find any flights for that date. Would you like me to search the next day instead?
The order has shipped and should arrive on Monday. Is there anything else I can help you with?
Sure! Let me look that up for you. Here is what I found: three results match your query.
Thank you, that is all for now. You're welcome, have a great day!
{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather for a city.", \
"parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}, \
"unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
{"type": "function", "function": {"name": "search_flights", "description": "Search flights between two airports.", \
"parameters": {"type": "object", "properties": {"origin": {"type": "string"}, "destination": {"type": "string"}, \
"date": {"type": "string", "format": "date"}, "max_results": {"type": "integer", "default": 5}}, \
"required": ["origin", "destination", "date"]}}}
{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
{"name": "search_flights", "arguments": {"origin": "SFO", "destination": "JFK", "date": "2024-07-26"}}
{"name": "send_email", "parameters": {"to": "alice@example.com", "subject": "Hello", "body": "See you soon."}}
{"name": "dispatch_unit", "arguments": {"unit_id": 42, "priority": "high", "location": {"lat": 48.85, "lon": 2.35}}}
<tool_call>
{"name": "get_current_time", "arguments": {"timezone": "Europe/Paris"}}
</tool_call>
<tool_response>
{"temperature": 21, "condition": "sunny", "humidity": 0.4, "ok": true, "error": null}
</tool_response>
<tools></tools> <function=get_weather> <parameter=city> </parameter> </function>
def lookup_order(order_id: str) -> dict: return {"status": "shipped", "items": [1, 2, 3]}
create_calendar_event convert_currency get_stock_price lookup_order send_email book_hotel cancel_booking
system user assistant tool ipython model function arguments parameters name content tool_calls tool_call_id
"""


def chat_template(family: str) -> str | None:
    """The family's real chat template text (None for OPT), read from TRL's copy or dispatchtune/templates/."""
    spec = family_spec(family)
    if spec.template is None:
        return None
    source, file = spec.template.split(":", 1)
    if source == "trl":
        # find_spec locates the installed package without importing it (importing trl takes seconds).
        folder = Path(importlib.util.find_spec("trl").submodule_search_locations[0]) / "chat_templates"
    else:
        folder = _TEMPLATES_DIR
    return (folder / file).read_text(encoding="utf-8")


def family_spec(family: str) -> FamilySpec:
    try:
        return FAMILIES[family]
    except KeyError:
        raise UserError(f"unknown model family {family!r}; choose one of: {', '.join(FAMILIES)}") from None


def build_tokenizer(family: str):
    """A byte-level BPE tokenizer trained on the built-in corpus, with the family's real special tokens and template."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = family_spec(family)
    template = chat_template(family)
    tok = Tokenizer(models.BPE())
    if spec.nfc:
        tok.normalizer = normalizers.NFC()
    if spec.split_regex:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(spec.split_regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(spec.leading_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes, whatever the text
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS, template or ""], trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in spec.special_tokens])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in spec.plain_tokens])
    named = {spec.bos_token, spec.eos_token, spec.pad_token, spec.unk_token}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=spec.bos_token,
        eos_token=spec.eos_token,
        pad_token=spec.pad_token,
        unk_token=spec.unk_token,
        extra_special_tokens=[t for t in spec.all_special_tokens if t not in named],
        add_bos_token=spec.add_bos,
        chat_template=template,
    )


def build_tiny_model(family: str, out_dir: Path, *, hidden_size: int = DEFAULT_HIDDEN_SIZE, seed: int = 0) -> Path:
    """Write a tiny `family` model (tokenizer, safetensors weights, generation config) to `out_dir`; return it.

    The build happens in a temporary sibling directory renamed into place at the end, so `out_dir` is either
    absent or complete. A complete `out_dir` built with the same settings is returned as is; one built with other
    settings, or any other directory in the way, is an error rather than something to overwrite.
    """
    spec = family_spec(family)
    if hidden_size < 128 or hidden_size % 128:
        raise UserError(f"hidden size must be a positive multiple of 128 (heads of 64 in pairs), not {hidden_size}")
    out_dir = Path(out_dir)
    recipe = {"family": spec.name, "hub_id": spec.hub_id, "hidden_size": hidden_size, "seed": seed}
    if _reusable(out_dir, recipe):
        return out_dir
    with staging(out_dir, directory=True) as tmp:
        _write_model(spec, tmp, hidden_size, seed)
        (tmp / MARKER).write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
        try:
            commit(tmp, out_dir, replace=False)
        except FileExistsError:
            if not _reusable(out_dir, recipe):  # lost a race to an identical concurrent build: use the winner's
                raise
    return out_dir


def _reusable(out_dir: Path, recipe: dict) -> bool:
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return False  # nothing there yet (an empty directory is replaced by the rename)
    try:
        found = json.loads((out_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"{out_dir} exists but is not a complete tiny model; remove it or pick another path") from None
    if found != recipe:
        raise UserError(f"{out_dir} holds a tiny model built as {found}, not {recipe}; remove it or pick another path")
    return True


def _write_model(spec: FamilySpec, out: Path, hidden_size: int, seed: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = build_tokenizer(spec.name)
    ids = tokenizer.convert_tokens_to_ids
    config = spec.make_config(hidden_size, len(tokenizer))
    config.bos_token_id = ids(spec.bos_token) if spec.bos_token else None
    config.eos_token_id = ids(spec.eos_token)
    config.pad_token_id = ids(spec.pad_token) if spec.pad_token else None
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[ids(t) for t in spec.stop_tokens],
        pad_token_id=config.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# --- command line: `python -m dispatchtune.tiny_models` or `dispatchtune tiny` ---


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", required=True, choices=[*FAMILIES, "all"], help="model family, or all of them")
    parser.add_argument(
        "--out", required=True, type=Path, help="output directory (with --family all: one subdirectory per family)"
    )
    parser.add_argument(
        "--hidden-size", type=int, default=DEFAULT_HIDDEN_SIZE, help="model width, a multiple of 128 (default: 256)"
    )
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    families = list(FAMILIES) if args.family == "all" else [args.family]
    for family in families:
        out = args.out / family if args.family == "all" else args.out
        path = build_tiny_model(family, out, hidden_size=args.hidden_size, seed=args.seed)
        print(f"{family}: {path} (stands for {FAMILIES[family].hub_id})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dispatchtune.tiny_models", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
