"""Everything dispatchtune knows about a model family, stated once.

A family (qwen2.5, qwen3, qwen3.5, llama-3.2, smollm2, gemma3, opt) is the real checkpoint it stands for: its Hub id,
its chat template, the template a recipe trains with where that one cannot carry tools, its end-of-turn and stop
tokens, bos/eos/pad, whether llama.cpp can convert it to GGUF, the config of its tiny test model, its real vocabulary
and published template where llama.cpp's sources carry them (`RealVocab`, `PublishedTemplate`). A chat template
(`TEMPLATES`) knows how it writes tool calls (`CallFormat`: the description a model card gives, the parser eval uses)
and how Ollama renders it (a Go `text/template`, plus Ollama's built-in parser where Ollama cannot read the calls
from the template alone). Stages look facts up here; no other module spells a family's name or tokens.

Only the standard library is imported here: the CLI imports this module to build its parser, so the tiny-config
builders import transformers inside themselves.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import UserError

# Chat templates TRL does not ship: SmolLM2's original, and the tool-carrying ones recipes name (`chat_template`).
TEMPLATES_DIR = Path(__file__).parent / "templates"
NUM_LAYERS = 2  # tiny models: two layers of the real architecture (Gemma 3: six, see its config)


def resolve_template(spec: str | None) -> str | None:
    """None -> None (keep the tokenizer's); the name of one of dispatchtune's templates (a file in TEMPLATES_DIR
    without .jinja: the tool templates the families below name) or a path to a .jinja file -> its text. UserError if
    not found. Here, not in train, because `dispatchtune tiny` also renders with it."""
    if spec is None:
        return None
    for path in (TEMPLATES_DIR / f"{spec}.jinja", Path(spec).expanduser()):
        if path.suffix == ".jinja" and path.is_file():
            return path.read_text(encoding="utf-8")
    names = ", ".join(sorted(p.stem for p in TEMPLATES_DIR.glob("*.jinja")))
    raise UserError(f"chat template {spec!r} not found: give one of {names} or the path of a .jinja file")


# --- how templates write tool calls ---


@dataclass(frozen=True)
class CallFormat:
    """One way of writing tool calls into the assistant turn."""

    name: str
    description: str  # for the model card: "The model calls tools <description>."
    # How eval reads the calls: "response-schema" (TRL's `add_response_schema` knows the template, and its
    # `parse_response` decides) or "hermes" (eval's own parser, the format read off the text).
    parser: str
    # Ollama's built-in PARSER for the format, where Ollama's own tool-call detection (JSON after the call tag the
    # TEMPLATE writes) cannot read it; None where the TEMPLATE alone suffices.
    ollama_parser: str | None = None


HERMES = CallFormat(
    "hermes",
    'each call on its own lines as `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` (Hermes style; '
    "parallel calls follow one another); tools are listed as JSON inside `<tools></tools>`; tool results go back in a "
    "user turn as `<tool_response>...</tool_response>`",
    "response-schema",
)
# dispatchtune's own tool templates write Hermes calls too, but TRL has no parser for them.
HERMES_OWN = CallFormat(HERMES.name, HERMES.description, "hermes")
QWEN_XML = CallFormat(
    "qwen-xml",
    "each call as `<tool_call>\\n<function=NAME>\\n<parameter=P>\\nvalue\\n</parameter>\\n</function>\\n</tool_call>` "
    "(strings as they are, other values as JSON; parallel calls follow one another); tools are listed as JSON inside "
    "`<tools></tools>` in the system turn; tool results go back in a user turn as `<tool_response>...</tool_response>`",
    "response-schema",
    ollama_parser="qwen3.5",  # Ollama's parser for Qwen 3.5: its think block, then XML calls typed by the tools
)
LLAMA_JSON = CallFormat(
    "llama-json",
    'one call per assistant turn, the whole turn being `{"name": ..., "parameters": {...}}`; tools are listed as JSON '
    "in the first user turn; tool results go back in `ipython` turns",
    "response-schema",
)


# --- Ollama templates: Go text/template, over Ollama's data (.System, .Tools, .Messages, .Think, .IsThinkSet) ---
# Written the way Ollama's own are: `{{-` trims the newline before an action, so a template can be laid out on lines;
# every other character is output. @NAME@ marks a part filled in per template (and per model) by `_fill`. The last
# assistant message is left open (Ollama's convention for continuing it); otherwise the generation prompt follows.

_HERMES_INSTRUCTIONS = """\
# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{- range $.Tools }}
{{ json . }}
{{- end }}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>"""

# A message's calls, each on a new line after content or a previous call, as Qwen's and our Jinja templates write them.
_HERMES_CALLS = """\
{{- range $j, $call := .ToolCalls }}{{ if or $j $m.Content }}
{{ end }}<tool_call>
{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}
</tool_call>
{{- end }}"""

# ChatML turns, tools in the system turn, Hermes calls, a run of tool results as one user turn of <tool_response>
# blocks: Qwen 2.5, Qwen3 and chatml_tools.
_CHATML_HERMES = """\
{{- $system := .System }}
{{- if not $system }}{{ $system = "@DEFAULT_SYSTEM@" }}{{ end }}
{{- if .Tools }}<|im_start|>system
{{ if $system }}{{ $system }}

{{ end }}@HERMES_INSTRUCTIONS@<|im_end|>
{{ else if $system }}<|im_start|>system
{{ $system }}<|im_end|>
{{ end }}
{{- $prev := "" }}
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if and (eq $prev "tool") (ne .Role "tool") }}<|im_end|>
{{ end }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
@THINK_BEFORE_LAST@{{ .Content }}@HERMES_CALLS@
{{- if not $last }}@TURN_END@
{{ end }}
{{- else if eq .Role "tool" }}
{{- if ne $prev "tool" }}<|im_start|>user{{ end }}
<tool_response>
{{ .Content }}
</tool_response>
{{- end }}
{{- $prev = .Role }}
{{- end }}
{{- if eq $prev "tool" }}<|im_end|>
{{ end }}
{{- if ne $prev "assistant" }}<|im_start|>assistant
@THINK_AFTER_PROMPT@{{ end }}"""
_QWEN3_THINK = "<think>\n\n</think>\n\n"  # Qwen3's empty think block (what "thinking off" renders)

# Qwen 3.5: tools as JSON in the system turn (the system prompt after them), XML calls, assistant turns after the
# last user message with their think block, tool results as one user turn. Parameters come in Ollama's (sorted)
# argument order; strings as they are, booleans and null as Python's str() writes them, numbers, objects and lists as
# JSON (`printf "%T"` is the only type test Go templates have).
_QWEN3_5 = """\
{{- if .Tools }}<|im_start|>system
# Tools

You have access to the following functions:

<tools>
{{- range $.Tools }}
{{ json . }}
{{- end }}
</tools>

If you choose to call a function ONLY reply in the following format with NO suffix:

<tool_call>
<function=example_function_name>
<parameter=example_parameter_1>
value_1
</parameter>
<parameter=example_parameter_2>
This is the value for the second parameter
that can span
multiple lines
</parameter>
</function>
</tool_call>

<IMPORTANT>
Reminder:
- Function calls MUST follow the specified format: an inner <function=...></function> block must be nested within \
<tool_call></tool_call> XML tags
- Required parameters MUST be specified
- You may provide optional reasoning for your function call in natural language BEFORE the function call, but NOT after
- If there is no function call available, answer the question like normal with your current knowledge and do not \
tell the user about function calls
</IMPORTANT>{{ if .System }}

{{ .System }}{{ end }}<|im_end|>
{{ else if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- $query := -1 }}
{{- range $i, $m := .Messages }}{{ if eq .Role "user" }}{{ $query = $i }}{{ end }}{{ end }}
{{- $prev := "" }}
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if and (eq $prev "tool") (ne .Role "tool") }}<|im_end|>
{{ end }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if gt $i $query }}<think>
{{ .Thinking }}
</think>

{{ end }}{{ .Content }}
{{- range $j, $call := .ToolCalls }}{{ if $j }}
{{ else if $m.Content }}

{{ end }}<tool_call>
<function={{ .Function.Name }}>
{{ range $k, $v := .Function.Arguments }}<parameter={{ $k }}>
{{ $t := printf "%T" $v }}{{ if eq $t "string" }}{{ $v }}
{{- else if eq $t "bool" }}{{ if $v }}True{{ else }}False{{ end }}
{{- else if eq $t "<nil>" }}None{{ else }}{{ json $v }}{{ end }}
</parameter>
{{ end }}</function>
</tool_call>
{{- end }}
{{- if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}
{{- if ne $prev "tool" }}<|im_start|>user{{ end }}
<tool_response>
{{ .Content }}
</tool_response>
{{- end }}
{{- $prev = .Role }}
{{- end }}
{{- if eq $prev "tool" }}<|im_end|>
{{ end }}
{{- if ne $prev "assistant" }}<|im_start|>assistant
@THINK_AFTER_PROMPT@{{ end }}"""

# Llama 3.2's tool template: tools as JSON in the first user turn, one call per turn as {"name", "parameters"},
# tool results as JSON strings in `ipython` turns, today's date in the system turn.
_LLAMA3_2 = """\
<|start_header_id|>system<|end_header_id|>

{{ if .Tools }}Environment: ipython
{{ end }}Cutting Knowledge Date: December 2023
Today Date: @DATE@

{{ .System }}<|eot_id|>
{{- $tools := .Tools }}
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>

{{ if $tools }}Given the following functions, please respond with a JSON for a function call with its proper \
arguments that best answers the given prompt.

Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.Do not use \
variables.

{{ range $.Tools }}{{ json . }}

{{ end }}{{ $tools = false }}{{ end }}{{ .Content }}<|eot_id|>
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>

{{ if .ToolCalls }}{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "parameters": \
{{ json .Function.Arguments }}}{{ end }}
{{- else }}{{ .Content }}{{ end }}
{{- if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ json .Content }}<|eot_id|>
{{- end }}
{{- if and $last (ne .Role "assistant") }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}"""

# gemma3_tools: Gemma turns; the system prompt and the tools go into the first user turn, Hermes calls in model turns;
# a run of user messages and tool results (<tool_response> blocks) is one user turn.
_GEMMA3_TOOLS = """\
{{- $prev := "" }}
{{- $first := true }}
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "tool") }}
{{- if or (eq $prev "user") (eq $prev "tool") }}{{ if and (eq $prev "tool") (eq .Role "tool") }}
{{ else }}

{{ end }}
{{- else }}<start_of_turn>user
@FIRST_TURN_PREFIX@{{ end }}
{{- if eq .Role "tool" }}<tool_response>
{{ .Content }}
</tool_response>{{ else }}{{ .Content }}{{ end }}
{{- else if eq .Role "assistant" }}
{{- if or (eq $prev "user") (eq $prev "tool") }}<end_of_turn>
{{ end }}<start_of_turn>model
{{ .Content }}@HERMES_CALLS@
{{- if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- $prev = .Role }}
{{- if ne .Role "system" }}{{ $first = false }}{{ end }}
{{- end }}
{{- if ne $prev "assistant" }}<end_of_turn>
<start_of_turn>model
{{ end }}"""
# Written out in both places rather than as a {{ define }}: Ollama releases before 0.6 execute only the main tree.
_GEMMA3_FIRST_TURN_PREFIX = """\
{{ if $first }}{{ if $.System }}{{ $.System }}

{{ end }}{{ if $.Tools }}@HERMES_INSTRUCTIONS@

{{ end }}{{ end }}"""

_CHATML_END = "<|im_end|>"
_QWEN2_5_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def _fill(template: str, **parts: str) -> str:
    for name, text in parts.items():
        template = template.replace(f"@{name.upper()}@", text)
    return template


# An Ollama template builder: (the tokenizer's eos token, the template variables training used) -> Go template text.
OllamaBuilder = Callable[[str | None, dict], str]


def _chatml_hermes(*, default_system: str = "", qwen3_think: bool = False,
                   eos_after_turn: bool = False) -> OllamaBuilder:
    def build(eos_token: str | None, template_kwargs: dict) -> str:
        return _fill(
            _CHATML_HERMES, hermes_instructions=_HERMES_INSTRUCTIONS, hermes_calls=_HERMES_CALLS,
            default_system=default_system,
            think_before_last=f"{{{{ if $last }}}}{_QWEN3_THINK}{{{{ end }}}}" if qwen3_think else "",
            think_after_prompt=f"{{{{ if and $.IsThinkSet (not $.Think) }}}}{_QWEN3_THINK}{{{{ end }}}}"
            if qwen3_think else "",
            # chatml_tools closes assistant turns with <|im_end|> and then eos where eos is another token
            turn_end=_CHATML_END + (eos_token if eos_after_turn and eos_token not in (None, _CHATML_END) else ""),
        )

    return build


def _qwen3_5(*, thinks_by_default: bool) -> OllamaBuilder:
    """Ollama's think flag is the template's `enable_thinking`: unset, the template's own default applies."""
    if thinks_by_default:
        prompt = "{{ if and $.IsThinkSet (not $.Think) }}<think>\n\n</think>\n\n{{ else }}<think>\n{{ end }}"
    else:
        prompt = "{{ if and $.IsThinkSet $.Think }}<think>\n{{ else }}<think>\n\n</think>\n\n{{ end }}"
    return lambda eos_token, template_kwargs: _fill(_QWEN3_5, think_after_prompt=prompt)


def _llama3_2(eos_token: str | None, template_kwargs: dict) -> str:
    return _fill(_LLAMA3_2, date=template_kwargs.get("date_string") or "{{ currentDate }}")


def _gemma3_tools(eos_token: str | None, template_kwargs: dict) -> str:
    calls = {"hermes_instructions": _HERMES_INSTRUCTIONS, "hermes_calls": _HERMES_CALLS}
    return _fill(_GEMMA3_TOOLS, first_turn_prefix=_fill(_GEMMA3_FIRST_TURN_PREFIX, **calls), **calls)


# --- chat templates ---


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template we recognise by its exact text, with what follows from it."""

    name: str
    source: str  # "trl:<file>" (TRL's copy of the original, in the installed package) or "dispatchtune:<file>"
    call_format: CallFormat | None  # None: the template does not render tools or calls
    ollama: OllamaBuilder | None = None  # None: no Ollama translation (the template cannot carry tools)

    def text(self) -> str:
        source, file = self.source.split(":", 1)
        if source == "trl":
            # find_spec locates the installed package without importing it (importing trl takes seconds).
            folder = Path(importlib.util.find_spec("trl").submodule_search_locations[0]) / "chat_templates"
        else:
            folder = TEMPLATES_DIR
        return (folder / file).read_text(encoding="utf-8")

    def ollama_template(self, eos_token: str | None, template_kwargs: dict | None = None) -> str | None:
        """The Go template Ollama renders like this one (None if there is none); `template_kwargs` are the variables
        training rendered with (Llama's `date_string` is fixed into the template; Qwen's `enable_thinking` is Ollama's
        think flag at request time)."""
        return self.ollama(eos_token, template_kwargs or {}) if self.ollama else None


TEMPLATES: dict[str, ChatTemplate] = {
    t.name: t
    for t in (
        ChatTemplate("qwen3", "trl:qwen3.jinja", HERMES, _chatml_hermes(qwen3_think=True)),
        # Qwen3.5 checkpoints of 2B and below ship the template that defaults to thinking off, the 4B and 9B the one
        # that defaults to it on. Both iterate `arguments|items`, so call arguments must be dicts.
        ChatTemplate("qwen3.5", "trl:qwen3_5_nothink.jinja", QWEN_XML, _qwen3_5(thinks_by_default=False)),
        ChatTemplate("qwen3.5-think", "trl:qwen3_5_think.jinja", QWEN_XML, _qwen3_5(thinks_by_default=True)),
        ChatTemplate("qwen2.5", "trl:qwen2_5.jinja", HERMES, _chatml_hermes(default_system=_QWEN2_5_SYSTEM)),
        # At most one call per assistant turn (it raises on more); string tool results JSON-encoded a second time;
        # today's date in the system turn unless `date_string` is passed.
        ChatTemplate("llama-3.2", "trl:llama3_2.jinja", LLAMA_JSON, _llama3_2),
        # Plain ChatML that ignores `tools` and `tool_calls` (see templates/README.md).
        ChatTemplate("smollm2", "dispatchtune:smollm2.jinja", None),
        # Ignores `tools` and `tool_calls` and raises on any `tool` message (roles must alternate).
        ChatTemplate("gemma3", "trl:gemma3.jinja", None),
        # dispatchtune's tool templates, for families whose own template cannot carry tools (templates/README.md).
        ChatTemplate("chatml_tools", "dispatchtune:chatml_tools.jinja", HERMES_OWN,
                     _chatml_hermes(eos_after_turn=True)),
        ChatTemplate("gemma3_tools", "dispatchtune:gemma3_tools.jinja", HERMES_OWN, _gemma3_tools),
    )
}


def template_of(text: str | None) -> ChatTemplate | None:
    """Which known template `text` is (compared as text, ends stripped), or None: how a tokenizer's (or a GGUF's)
    template is recognised, since a trained adapter's tokenizer says nothing else about its family."""
    if not text:
        return None
    return next((t for t in TEMPLATES.values() if t.text().strip() == text.strip()), None)


# --- families ---


@dataclass(frozen=True)
class RealVocab:
    """A family's real tokenizer, rebuilt offline (`dispatchtune tiny --vocab real`).

    llama.cpp vendors the tokenizers of published checkpoints as vocabulary-only GGUF files for its tokenizer tests
    (`models/ggml-vocab-<llama_cpp>.gguf`, with texts and the ids the real tokenizer gives them in `.inp`/`.out`),
    and the llama-cpp-python source distribution carries them. transformers converts such a file into a fast
    tokenizer: the real byte-level BPE (vocabulary, merges, pre-tokenizer). Its ordinary tokens keep their ids; the
    family's own tokens (`Family.leading_tokens`, then `special_tokens`, then `plain_tokens`) replace the file's
    added ones, at the ids they have in the real tokenizer. The tiny model's config then carries the checkpoint's
    vocab_size and token ids; only depth and width shrink.
    """

    llama_cpp: str  # the vocabulary's name in llama.cpp's models/ folder: also its pre-tokenizer's, tokenizer.ggml.pre
    vocab_size: int  # the checkpoint's config.json vocab_size (its embedding rows; Qwen pads past the tokenizer)
    config_bos: str | None  # the token config.json's bos_token_id names (Qwen names one its tokenizer never adds)
    config_eos: tuple[str, ...]  # the token(s) config.json's eos_token_id names
    # tokenizer.json's BPE `ignore_merges`: a pre-tokenized word that is in the vocabulary is one token, whether or
    # not the merges reach it (Llama 3's tokenizer.json sets it; the GGUF file does not record it, llama.cpp's
    # `llama-bpe` pre-tokenizer implies it).
    ignore_merges: bool = False
    differs: str | None = None  # what is not the real checkpoint's tokenizer, and why (None: nothing)


@dataclass(frozen=True)
class PublishedTemplate:
    """The checkpoint's own chat template, as llama.cpp keeps a copy of it (`models/templates/<file>`), and how the
    template we train and serve with (`Family.training_template`) renders the canonical samples (tool-call turns
    with content null and "", parallel calls, chains, tool results, a final answer) next to it: identically, except
    as stated here. tests/test_real_vocab.py renders both."""

    file: str
    # Template variables under which the two render alike; without them they differ as `differs` says.
    needs: tuple[tuple[str, Any], ...] = ()
    # The published one fails on an assistant turn whose content is null (transformers drops the key, the template
    # reads it), where ours renders it as content "" (which the published one renders exactly as ours).
    refuses_null_content: bool = False
    differs: str | None = None  # what differs, why, and what it means to a user serving with the published one


@dataclass(frozen=True)
class Family:
    """What a model family is, for training, export and its tiny test model.

    A tiny model's tokenizer is trained here (about 1,000 tokens, so its ids differ from the real model's) unless the
    family has a `real_vocab` and the model is built with it; either way which tokens exist, which ones the tokenizer
    treats as bos/eos/pad, whether it prepends bos, and which ones end a turn are the real ones.
    """

    name: str
    hub_id: str  # the real checkpoint this family stands for
    architecture: str  # its transformers class (config.json `architectures`)
    template: ChatTemplate | None  # the real chat template (None: a base model without one)
    tool_template: ChatTemplate | None  # what a recipe trains with where `template` cannot carry tools, else None
    end_of_turn: str  # closes an assistant turn; generation must stop on it
    bos_token: str | None  # the tokenizer's bos_token (None where the real tokenizer has none)
    eos_token: str  # the tokenizer's eos_token
    pad_token: str | None  # the tokenizer's pad_token (None where the real tokenizer has none)
    leading_tokens: tuple[str, ...]  # special tokens at ids 0.. (where the real vocabulary starts with them)
    special_tokens: tuple[str, ...]  # further special tokens, appended after the learned vocabulary
    plain_tokens: tuple[str, ...]  # whole tokens that are NOT special: they survive skip_special_tokens decoding
    stop_tokens: tuple[str, ...]  # generation_config.eos_token_id, as in the real generation_config.json
    add_bos: bool  # the tokenizer prepends bos_token when encoding plain text
    tiny_config: Callable[[int, int], Any]  # (hidden_size, vocab_size) -> a transformers config of the real class
    gguf_refused: str | None = None  # why llama.cpp cannot convert it (None: it can)
    gguf_converter_args: tuple[str, ...] = ()  # what llama.cpp's converter needs for a merged model of this family
    unk_token: str | None = None
    # How text is split before byte-level BPE: this regex (then bytes), or None for GPT-2's byte-level split.
    # Qwen tokenizers use their own regex and NFC; transformers' Qwen tokenizer classes rebuild exactly that
    # pipeline whatever tokenizer.json says (AutoTokenizer forces Qwen2Tokenizer for model_type qwen2), so the
    # tiny Qwen tokenizers must use it too for tokenizer.json and AutoTokenizer to agree.
    split_regex: str | None = None
    llama_cpp_pretokenizer: str | None = None  # llama.cpp's pre-tokenizer written from that regex
    nfc: bool = False
    # The real tokenizer, where llama.cpp's tokenizer tests carry its vocabulary (None: the tiny model can only have
    # a trained one; SmolLM2's and Gemma 3's vocabularies are not among them).
    real_vocab: RealVocab | None = None
    # The checkpoint's published template, where llama.cpp keeps a copy (SmolLM2's and Gemma 3's it does not; they
    # train with dispatchtune's tool templates anyway, since theirs cannot carry tools; OPT has none).
    published_template: PublishedTemplate | None = None

    @property
    def all_special_tokens(self) -> tuple[str, ...]:
        return self.leading_tokens + self.special_tokens

    @property
    def training_template(self) -> ChatTemplate | None:
        """The template a recipe for this family trains (and so infers) with."""
        return self.tool_template or self.template


# --- tiny configs: the real architecture, shrunk. MLP widths are multiples of the hidden size, and attention
# widths are 256 or the hidden size, so with the default hidden size every weight row is a multiple of 256
# (llama.cpp's K-quants). ---


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


_QWEN_SPECIAL = (
    "<|endoftext|>", "<|im_start|>", _CHATML_END, "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
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
# Qwen3.5 counts combining marks (\p{M}) as letters. llama.cpp's `qwen2` and `qwen35` pre-tokenizers implement them.
_QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
_QWEN3_5_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)




def _llama3_special() -> tuple[str, ...]:
    """Llama 3.1/3.2's 256 special tokens in id order (128000-128255): eight named ones, and 248
    `<|reserved_special_token_N|>` numbered in order around them (3.0 called 128004, 128008 and 128010 reserved)."""
    named = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 4: "<|finetune_right_pad_id|>", 6: "<|start_header_id|>",
             7: "<|end_header_id|>", 8: "<|eom_id|>", 9: "<|eot_id|>", 10: "<|python_tag|>"}
    reserved = iter(range(256))
    return tuple(named.get(i) or f"<|reserved_special_token_{next(reserved)}|>" for i in range(256))


_LLAMA3_SPECIAL = _llama3_special()
_LLAMA3_STOPS = ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")


def _qwen(name: str, hub_id: str, architecture: str, template: str, plain: tuple[str, ...], config, split: str,
          pretokenizer: str, published: PublishedTemplate, converter_args: tuple[str, ...] = (),
          differs: str | None = None) -> Family:
    """Qwen 2.5, 3 and 3.5 share their tokenizer setup: no bos, eos `<|im_end|>`, pad `<|endoftext|>`; 151,643 BPE
    tokens, then the added ones from id 151643 in the order `_QWEN_SPECIAL` + `plain` list them (`<|endoftext|>`
    151643, `<|im_start|>` 151644, `<|im_end|>` 151645, `<tool_call>` 151657, `<think>` 151667); config.json names
    `<|endoftext|>` as bos and `<|im_end|>` as eos, with 151,936 embedding rows."""
    return Family(
        name=name, hub_id=hub_id, architecture=architecture, template=TEMPLATES[template], tool_template=None,
        end_of_turn=_CHATML_END, bos_token=None, eos_token=_CHATML_END, pad_token="<|endoftext|>", leading_tokens=(),
        special_tokens=_QWEN_SPECIAL, plain_tokens=plain, stop_tokens=(_CHATML_END, "<|endoftext|>"), add_bos=False,
        tiny_config=config, split_regex=split, llama_cpp_pretokenizer=pretokenizer, nfc=True,
        gguf_converter_args=converter_args, published_template=published,
        real_vocab=RealVocab(pretokenizer, 151936, config_bos="<|endoftext|>", config_eos=(_CHATML_END,),
                             differs=differs),
    )


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        _qwen("qwen3", "Qwen/Qwen3-0.6B", "Qwen3ForCausalLM", "qwen3", _QWEN3_PLAIN, _qwen3_config, _QWEN2_SPLIT,
              "qwen2", PublishedTemplate("Qwen-Qwen3-0.6B.jinja", refuses_null_content=True, differs=(
                  "we train and serve with TRL's copy, which reads a missing or non-string content as empty; the "
                  "published template fails on an assistant tool-call turn whose content is null. A server "
                  "rendering the model's own template (vLLM, llama.cpp --jinja) makes the same prompts provided "
                  "such turns carry content \"\"; Ollama renders the Modelfile's TEMPLATE, not either of them"))),
        # The tiny one stands for the 0.8B (thinking off by default); the real ones are vision-language models, and
        # this is their text decoder, with the Qwen3 token set. transformers' text model has no multi-token-prediction
        # head (it neither loads nor saves the checkpoints' `mtp.*` weights), so llama.cpp must convert without one.
        _qwen("qwen3.5", "Qwen/Qwen3.5-0.8B", "Qwen3_5ForCausalLM", "qwen3.5", _QWEN3_PLAIN, _qwen3_5_config,
              _QWEN3_5_SPLIT, "qwen35", PublishedTemplate("Qwen3.5-4B.jinja", needs=(("enable_thinking", False),),
                                                          differs=(
                  "llama.cpp keeps the 4B's template, which opens a think block in the generation prompt unless "
                  "enable_thinking is false; the 0.8B's own (TRL's qwen3_5_nothink, ours) closes it unless "
                  "enable_thinking is true. With the flag set they render alike, and a user serving the 0.8B with "
                  "its own template gets thinking off by default, as it trains")),
              converter_args=("--no-mtp",), differs=(
                  "Qwen3.5's own vocabulary (248,044 BPE tokens, its added tokens from id 248044, config vocab_size "
                  "248320) is in no file here: llama.cpp's `qwen35` test vocabulary is Qwen2's BPE under Qwen3.5's "
                  "pre-tokenizer, so this tokenizer has Qwen3.5's split rule and token names over Qwen 2/3's "
                  "vocabulary and ids; llama.cpp's converter, which recognises the real one as `qwen35`, recognises "
                  "this one as `qwen2` (its test text splits alike under both rules over this vocabulary)")),
        _qwen("qwen2.5", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen2ForCausalLM", "qwen2.5", _QWEN2_5_PLAIN,
              _qwen2_5_config, _QWEN2_SPLIT, "qwen2", PublishedTemplate("Qwen-Qwen2.5-7B-Instruct.jinja")),
        # No pad token. config.json names bos and all three stop tokens as eos.
        Family(
            name="llama-3.2", hub_id="meta-llama/Llama-3.2-1B-Instruct", architecture="LlamaForCausalLM",
            template=TEMPLATES["llama-3.2"], tool_template=None, end_of_turn="<|eot_id|>",
            bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token=None, leading_tokens=(),
            special_tokens=_LLAMA3_SPECIAL, plain_tokens=(), stop_tokens=_LLAMA3_STOPS, add_bos=True,
            tiny_config=_llama3_2_config,
            real_vocab=RealVocab("llama-bpe", 128256, config_bos="<|begin_of_text|>", config_eos=_LLAMA3_STOPS,
                                 ignore_merges=True),
            published_template=PublishedTemplate("meta-llama-Llama-3.2-3B-Instruct.jinja"),
        ),
        # No real vocabulary here (llama.cpp's tokenizer tests carry neither SmolLM2's nor Gemma 3's): their tiny
        # models always have a trained tokenizer.
        Family(
            name="smollm2", hub_id="HuggingFaceTB/SmolLM2-360M-Instruct", architecture="LlamaForCausalLM",
            template=TEMPLATES["smollm2"], tool_template=TEMPLATES["chatml_tools"], end_of_turn=_CHATML_END,
            bos_token="<|im_start|>", eos_token=_CHATML_END, pad_token=_CHATML_END, unk_token="<|endoftext|>",
            leading_tokens=(
                "<|endoftext|>", "<|im_start|>", _CHATML_END, "<repo_name>", "<reponame>", "<file_sep>",
                "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>",
                "<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<jupyter_script>", "<empty_output>",
            ),
            special_tokens=(), plain_tokens=(), stop_tokens=(_CHATML_END,), add_bos=False,
            tiny_config=_smollm2_config,
        ),
        Family(
            name="gemma3", hub_id="google/gemma-3-1b-it", architecture="Gemma3ForCausalLM",
            template=TEMPLATES["gemma3"], tool_template=TEMPLATES["gemma3_tools"], end_of_turn="<end_of_turn>",
            bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
            leading_tokens=("<pad>", "<eos>", "<bos>", "<unk>", "<mask>"),
            special_tokens=(
                "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>",
            ),
            plain_tokens=(), stop_tokens=("<eos>", "<end_of_turn>"), add_bos=True, tiny_config=_gemma3_config,
        ),
        # A base model: no chat template, and `</s>` is both bos (prepended when encoding) and eos. chatml_tools
        # writes its ChatML tags as plain text (several tokens each) and ends assistant turns with `</s>`. Its
        # tokenizer is GPT-2's byte-level BPE behind OPT's four special tokens at ids 0-3 (config.json: bos = eos =
        # 2, pad 1, 50,272 embedding rows).
        Family(
            name="opt", hub_id="facebook/opt-350m", architecture="OPTForCausalLM", template=None,
            tool_template=TEMPLATES["chatml_tools"], end_of_turn="</s>", bos_token="</s>", eos_token="</s>",
            pad_token="<pad>", leading_tokens=("<s>", "<pad>", "</s>", "<unk>"), special_tokens=(),
            plain_tokens=(), stop_tokens=("</s>",), add_bos=True, tiny_config=_opt_config,
            gguf_refused="llama.cpp's converter has no OPT architecture (OPTForCausalLM)",
            real_vocab=RealVocab("gpt-2", 50272, config_bos="</s>", config_eos=("</s>",), differs=(
                "OPT numbers GPT-2's tokens in the order of fairseq's dictionary, which no file here holds: the "
                "tokens, merges and splits are OPT's and the special tokens sit at OPT's ids 0-3, but every "
                "ordinary token is at its GPT-2 id + 4, not at OPT's id")),
        ),
    )
}


# dispatchtune's own templates that carry tools, for families whose template cannot (a recipe's `chat_template`).
TOOL_TEMPLATES = tuple(sorted({f.tool_template.name for f in FAMILIES.values() if f.tool_template}))


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UserError(f"unknown model family {name!r}; choose one of: {', '.join(FAMILIES)}") from None


def gguf_converter_args(architectures: list[str]) -> list[str]:
    """The llama.cpp converter arguments a merged model of these architectures (config.json) needs."""
    return list(dict.fromkeys(a for f in FAMILIES.values() if f.architecture in architectures
                              for a in f.gguf_converter_args))


def llama_cpp_splits() -> dict[str, str]:
    """Split regex -> llama.cpp pre-tokenizer name, for the families whose tokenizers split with their own regex."""
    return {f.split_regex: f.llama_cpp_pretokenizer for f in FAMILIES.values() if f.split_regex}
