"""Ollama Modelfiles: the GGUF file, a prompt TEMPLATE that renders like the training chat template, stop tokens,
and dispatch defaults (temperature 0).

Ollama does not run Jinja chat templates: it renders prompts with a Go `text/template` over its own data
(`.System`, `.Tools`, `.Messages` with `.Role`, `.Content`, `.ToolCalls`), and it finds tool calls in the output by
reading that template. So each training template we ship has a Go translation here, recognised by the template's
exact text (an unrecognised template gets a Modelfile without TEMPLATE and a warning, rather than a guess).
tests/test_modelfile.py renders conversations with tools through these templates with Go's own text/template, fed
the way Ollama feeds it, and compares the result with the Jinja rendering.

Differences that remain, by Ollama's design: Ollama serialises tools and call arguments with Go's encoding/json
(compact, its own key order, `<>&` escaped) where the Jinja templates use Python's `json.dumps` (", " and ": ");
Ollama keeps only the JSON-schema keys it models (type, description, enum, items, properties, required, anyOf), so
e.g. `default` disappears from tool parameters; message text is not trimmed as Llama's and Gemma's templates trim
it; and the beginning-of-sequence token is left to llama.cpp, which adds it as the GGUF says (where the Jinja
templates write it into the text). Only a conversation's leading system message is supported, as in our samples.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# The Go templates, written the way Ollama's own are: `{{-` trims the newline before an action, so a template can be
# laid out on lines; every other character is output. @NAME@ marks a part filled in per model by `go_template`.
HERMES_INSTRUCTIONS = """\
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
HERMES_CALLS = """\
{{- range $j, $call := .ToolCalls }}{{ if or $j $m.Content }}
{{ end }}<tool_call>
{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}
</tool_call>
{{- end }}"""

# Qwen 2.5, Qwen3 and train/templates/chatml_tools.jinja: ChatML turns, tools in the system turn, Hermes calls, a run
# of tool results as one user turn of <tool_response> blocks. The last assistant message is left open (Ollama's
# convention for continuing it); otherwise the generation prompt follows.
CHATML_HERMES = """\
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
QWEN3_THINK = "<think>\n\n</think>\n\n"  # Qwen3's empty think block (what "thinking off" renders)

# Llama 3.2's tool template: tools as JSON in the first user turn, one call per turn as {"name", "parameters"},
# tool results as JSON strings in `ipython` turns, today's date in the system turn.
LLAMA3_2 = """\
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

# train/templates/gemma3_tools.jinja: Gemma turns; the system prompt and the tools go into the first user turn, Hermes
# calls in model turns; a run of user messages and tool results (<tool_response> blocks) is one user turn.
GEMMA3_TOOLS = """\
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
GEMMA3_FIRST_TURN_PREFIX = """\
{{ if $first }}{{ if $.System }}{{ $.System }}

{{ end }}{{ if $.Tools }}@HERMES_INSTRUCTIONS@

{{ end }}{{ end }}"""


def _fill(template: str, **parts: str) -> str:
    for name, text in parts.items():
        template = template.replace(f"@{name.upper()}@", text)
    return template


@lru_cache(maxsize=1)
def _known_templates() -> dict[str, str]:
    """Training template name -> its Jinja text: TRL's copies of the originals, and train/templates."""
    from dispatchtune.tiny_models import chat_template
    from dispatchtune.train.mask import resolve_template

    return {
        "qwen3": chat_template("qwen3"),
        "qwen2.5": chat_template("qwen2.5"),
        "llama-3.2": chat_template("llama-3.2"),
        "gemma3_tools": resolve_template("gemma3_tools"),
        "chatml_tools": resolve_template("chatml_tools"),
    }


def template_name(jinja: str | None) -> str | None:
    """Which known training template `jinja` is (compared as text, ends stripped), or None."""
    if not jinja:
        return None
    return next((name for name, text in _known_templates().items() if text.strip() == jinja.strip()), None)


def go_template(tokenizer, template_kwargs: dict | None = None) -> str | None:
    """The Ollama TEMPLATE equivalent to the tokenizer's chat template, or None for a template not known here."""
    name = template_name(tokenizer.chat_template)
    calls = {"hermes_instructions": HERMES_INSTRUCTIONS, "hermes_calls": HERMES_CALLS}
    if name in ("qwen3", "qwen2.5", "chatml_tools"):
        eos = tokenizer.eos_token
        return _fill(
            CHATML_HERMES, **calls,
            default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
            if name == "qwen2.5" else "",
            think_before_last=f"{{{{ if $last }}}}{QWEN3_THINK}{{{{ end }}}}" if name == "qwen3" else "",
            think_after_prompt=f"{{{{ if and $.IsThinkSet (not $.Think) }}}}{QWEN3_THINK}{{{{ end }}}}"
            if name == "qwen3" else "",
            # chatml_tools closes assistant turns with <|im_end|> and then eos where eos is another token
            turn_end="<|im_end|>" if name != "chatml_tools" or eos in (None, "<|im_end|>") else "<|im_end|>" + eos,
        )
    if name == "llama-3.2":
        return _fill(LLAMA3_2, date=(template_kwargs or {}).get("date_string") or "{{ currentDate }}")
    if name == "gemma3_tools":
        return _fill(GEMMA3_TOOLS, first_turn_prefix=_fill(GEMMA3_FIRST_TURN_PREFIX, **calls), **calls)
    return None


def modelfile(gguf_name: str, tokenizer, stop_tokens: list[str], *, template_kwargs: dict | None = None,
              num_ctx: int | None = None) -> str:
    """Modelfile text for `ollama create NAME -f <file>.Modelfile`, run in the GGUF file's directory."""
    return _modelfile_text(gguf_name, go_template(tokenizer, template_kwargs), stop_tokens, num_ctx)


def _modelfile_text(gguf_name: str, template: str | None, stop_tokens: list[str], num_ctx: int | None) -> str:
    lines = [f"FROM ./{gguf_name}"]
    if template is None:
        lines.append("# No TEMPLATE: dispatchtune has no Ollama translation of this model's chat template; Ollama "
                     "falls back to its own guess from the GGUF's tokenizer.chat_template.")
    else:
        if '"""' in template:
            raise ValueError("a Modelfile TEMPLATE cannot hold three double quotes")
        lines.append(f'TEMPLATE """{template}"""')
    lines += [f'PARAMETER stop "{t}"' for t in stop_tokens]
    lines.append("PARAMETER temperature 0")  # dispatch: the same request gets the same call
    if num_ctx:
        lines.append(f"PARAMETER num_ctx {num_ctx}")  # tool schemas are long; Ollama's default context is short
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ModelfileSettings:
    """What every `<file>.Modelfile` of one model shares, worked out once for all its GGUF files."""
    template: str | None  # the Ollama TEMPLATE, None where the chat template is not one translated here
    stop_tokens: list[str]
    num_ctx: int


def modelfile_settings(tokenizer, stop_ids: list[int], max_positions: int | None, *,
                       template_kwargs: dict | None = None) -> ModelfileSettings:
    """Stops from the model's generation-config stop ids, context from its max_position_embeddings (capped)."""
    template = go_template(tokenizer, template_kwargs)
    if template is None:
        print("warning: the Modelfiles have no TEMPLATE: the chat template is not one dispatchtune translates for "
              "Ollama", file=sys.stderr)
    return ModelfileSettings(template, tokenizer.convert_ids_to_tokens(stop_ids), min(8192, max_positions or 8192))


def write_modelfile(gguf_path: Path, settings: ModelfileSettings) -> Path:
    """`<file>.Modelfile` beside `gguf_path`."""
    out = gguf_path.with_suffix(".Modelfile")
    out.write_text(_modelfile_text(gguf_path.name, settings.template, settings.stop_tokens, settings.num_ctx),
                   encoding="utf-8")
    return out
