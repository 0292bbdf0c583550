"""Ollama Modelfiles: the GGUF file, a prompt TEMPLATE that renders like the training chat template, Ollama's
built-in PARSER where its own tool-call detection cannot read the template's call format, stop tokens, and dispatch
defaults (temperature 0).

Ollama does not run Jinja chat templates: it renders prompts with a Go `text/template` over its own data
(`.System`, `.Tools`, `.Messages` with `.Role`, `.Content`, `.ToolCalls`), and it finds tool calls in the output by
reading that template (a JSON call after the template's call tag) or with a built-in parser named by PARSER. Each
training template we know has its Go translation in `dispatchtune.families`, recognised by the template's exact text
(an unrecognised template gets a Modelfile without TEMPLATE and a warning, rather than a guess).
tests/test_modelfile.py renders conversations with tools through these templates with Go's own text/template, fed
the way Ollama feeds it, and compares the result with the Jinja rendering.

Differences that remain, by Ollama's design: Ollama serialises tools and call arguments with Go's encoding/json
(compact, its own key order, `<>&` escaped) where the Jinja templates use Python's `json.dumps` (", " and ": "), and
ranges over call arguments in sorted key order (XML parameters then come sorted); Ollama keeps only the JSON-schema
keys it models (type, description, enum, items, properties, required, anyOf), so e.g. `default` disappears from tool
parameters; message text is not trimmed as Llama's, Gemma's and Qwen 3.5's templates trim it; and the
beginning-of-sequence token is left to llama.cpp, which adds it as the GGUF says (where the Jinja templates write it
into the text). Only a conversation's leading system message is supported, as in our samples. A template variable
Ollama has a request flag for (Qwen's `enable_thinking`: `think`) is left to that flag, so a model trained with
thinking off is run with `think: false` (`ollama run --think=false`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from dispatchtune.families import template_of


@dataclass(frozen=True)
class ModelfileSettings:
    """What every `<file>.Modelfile` of one model shares, worked out once for all its GGUF files."""
    template: str | None  # the Ollama TEMPLATE, None where the chat template is not one translated here
    parser: str | None  # Ollama's built-in PARSER for the call format, where the TEMPLATE alone does not suffice
    stop_tokens: list[str]
    num_ctx: int


def modelfile_settings(tokenizer, stop_ids: list[int], max_positions: int | None, *,
                       template_kwargs: dict | None = None) -> ModelfileSettings:
    """The TEMPLATE and PARSER of the tokenizer's chat template (rendered with the variables training used), stops
    from the model's generation-config stop ids, context from its max_position_embeddings (capped)."""
    known = template_of(tokenizer.chat_template)
    template = known.ollama_template(tokenizer.eos_token, template_kwargs) if known else None
    if template is None:
        print("warning: the Modelfiles have no TEMPLATE: the chat template is not one dispatchtune translates for "
              "Ollama", file=sys.stderr)
    parser = known.call_format.ollama_parser if template and known.call_format else None
    return ModelfileSettings(template, parser, tokenizer.convert_ids_to_tokens(stop_ids),
                             min(8192, max_positions or 8192))


def _modelfile_text(gguf_name: str, settings: ModelfileSettings) -> str:
    """Modelfile text for `ollama create NAME -f <file>.Modelfile`, run in the GGUF file's directory."""
    lines = [f"FROM ./{gguf_name}"]
    if settings.template is None:
        lines.append("# No TEMPLATE: dispatchtune has no Ollama translation of this model's chat template; Ollama "
                     "falls back to its own guess from the GGUF's tokenizer.chat_template.")
    else:
        if '"""' in settings.template:
            raise ValueError("a Modelfile TEMPLATE cannot hold three double quotes")
        lines.append(f'TEMPLATE """{settings.template}"""')
    if settings.parser:
        lines.append(f"PARSER {settings.parser}")  # reads the calls (and a think block) out of the model's output
    lines += [f'PARAMETER stop "{t}"' for t in settings.stop_tokens]
    lines.append("PARAMETER temperature 0")  # dispatch: the same request gets the same call
    if settings.num_ctx:
        lines.append(f"PARAMETER num_ctx {settings.num_ctx}")  # tool schemas are long; Ollama's default is short
    return "\n".join(lines) + "\n"


def write_modelfile(gguf_path: Path, settings: ModelfileSettings) -> Path:
    """`<file>.Modelfile` beside `gguf_path`."""
    out = gguf_path.with_suffix(".Modelfile")
    out.write_text(_modelfile_text(gguf_path.name, settings), encoding="utf-8")
    return out
