"""The loss mask: which tokens of a rendered sample train, checked against what the model generates at inference.

Only assistant turns train. A turn's trained text must be exactly what generation produces after the inference
prompt: `render(messages[:i+1])[len(render(messages[:i], add_generation_prompt=True)):]` with the template saved for
inference, i.e. the turn rendered as the last one, the way generation sees it. That text runs from the first token
the model writes to its end-of-turn token, and includes what the template writes after that token within the turn
(ChatML's and Gemma's "\\n"; Llama writes nothing): generation stops before reaching it, so training it is harmless,
and TRL's training templates train it too. The generation prompt (`<|im_start|>assistant\\n`, and Qwen3.5's
pre-closed `<think>\\n\\n</think>\\n\\n`) is prompt, not trained.

Two ways to find the turns in the rendered sample:
- "trl-training-template": TRL's patched copy of a known template, with `{% generation %}` markers (Qwen 2.5/3/3.5),
  rendered with `return_assistant_tokens_mask`. Where the training copy puts part of the inference generation prompt
  inside the marked span (Qwen3.5's pre-closed think block), that part is left untrained.
- "template-diff": any other template (Llama 3.2, dispatchtune's tool templates, a recipe's own): a turn is what
  rendering it adds after the generation prompt, which needs the template to be prefix-preserving; that is checked
  per turn.
  The ids are those of `apply_chat_template(..., tokenize=True)`: the text tokenized without added special tokens.

A turn must also be trained in the context generation gives it: the text before it is its inference prompt. One row
of the whole sample gives every turn that context with Llama 3.2, dispatchtune's templates and single-turn samples,
and then the sample trains as that row. Not with TRL's Qwen3/3.5 copies, which write a `<think>` block into every
assistant turn, where the originals drop it from earlier turns (Qwen3: from every turn but the one being generated;
Qwen3.5: from turns before the last user message): a model trained on turn B after a turn A with a think block would
see A without one at inference. Such a sample trains as several rows instead, each the inference rendering up to its
last turn (tokenized as template-diff does), training the turns that read their inference prompt and generated text
there: a new row starts at a turn that would not. Qwen3 thus trains a row per assistant turn, Qwen3.5 a row per user
message.
"""

from __future__ import annotations

import copy
from bisect import bisect_left
from dataclasses import dataclass, field, replace
from typing import Any

from jinja2 import TemplateError

from dispatchtune.data_prep.sample import Sample
from dispatchtune.errors import UserError
from dispatchtune.families import TEMPLATES_DIR, TOOL_TEMPLATES

TRL_METHOD = "trl-training-template"
DIFF_METHOD = "template-diff"


@dataclass(frozen=True, eq=False)
class ChatFormat:
    """How one tokenizer renders samples for training and inference."""

    tokenizer: Any
    inference_template: str  # the template saved with the adapter and used at inference
    training_template: str  # what `encode` renders the ids with: TRL's marked copy, or the inference template
    method: str  # TRL_METHOD or DIFF_METHOD
    end_of_turn: str | None  # token that closes an assistant turn (generation stops on it)
    template_kwargs: dict = field(default_factory=dict)  # passed to every render (Llama's `date_string`)
    template_name: str = "the chat template"  # for error messages

    @classmethod
    def from_tokenizer(
        cls, tokenizer, chat_template: str | None = None, template_kwargs: dict | None = None
    ) -> "ChatFormat":
        """chat_template (text, already resolved) replaces the tokenizer's; UserError when there is none (OPT
        without a recipe template), or when the template's assistant turn ends on no special token to stop on."""
        try:
            template = tokenizer.get_chat_template(chat_template, tools=[])
        except ValueError:
            raise UserError(
                f"{tokenizer.name_or_path} has no chat template: set chat_template in the recipe (e.g. "
                f"{' or '.join(TOOL_TEMPLATES)})"
            ) from None
        training = _training_template(tokenizer, template)
        fmt = cls(
            tokenizer=tokenizer,
            inference_template=template,
            training_template=training or template,
            method=TRL_METHOD if training else DIFF_METHOD,
            end_of_turn=None,
            template_kwargs=dict(template_kwargs or {}),
            template_name=_template_name(template, tokenizer, given=chat_template is not None),
        )
        return replace(fmt, end_of_turn=end_of_turn_token(tokenizer, template, fmt.template_kwargs, fmt.template_name))

    def encode(self, sample: Sample) -> list[tuple[list[int], list[int]]]:
        """The rows (input_ids and 0/1 assistant mask) one sample trains as, rendered with its tools: one row, unless
        that shows some assistant turn another context than generation does (see the module's docstring). Raises
        UserError naming the sample (sample.where()) when: the template cannot render it (e.g. Llama 3.2 refuses
        parallel calls), no token is trained (e.g. a prompt without an assistant turn), or the trained text of some
        assistant turn differs from what the inference template produces for that turn after add_generation_prompt."""
        messages, tools, where = sample.messages, sample.tools or None, sample.where()
        turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
        if not turns:
            raise UserError(f"{where}: no assistant turn, so nothing to train on (a prompt belongs in held-out data)")
        try:
            prompts = self._render([messages[:i] for i in turns], tools, add_generation_prompt=True)
            rendered_turns = self._render([messages[: i + 1] for i in turns], tools)
            generated = []  # per turn: what generation produces after the inference prompt
            for i, prompt, text in zip(turns, prompts, rendered_turns):
                if not text.startswith(prompt):
                    raise UserError(
                        f"{where}: {self.template_name} is not prefix-preserving at messages[{i}]: the prompt "
                        f"for that turn is not the start of the turn rendered ({_difference(prompt, text)})"
                    )
                generated.append(text[len(prompt) :])
            if self.method == TRL_METHOD:
                text, ids, offsets, spans = self._marked_spans(messages, tools)
            else:
                text, ids, offsets, spans = self._diff_spans(messages, tools, turns, prompts, rendered_turns, where)
        except (TemplateError, TypeError, ValueError) as e:
            raise UserError(f"{where}: {self.template_name} cannot render this sample: {e}") from None
        if len(spans) != len(turns):
            raise UserError(
                f"{where}: {self.template_name} marks {len(spans)} trained spans for {len(turns)} assistant turns"
            )
        for k, (i, prompt, want, (start, end)) in enumerate(zip(turns, prompts, generated, spans)):
            trained = text[start:end]
            head = trained[: len(trained) - len(want)]  # generation-prompt text inside the span: left untrained
            if not trained.endswith(want) or not prompt.endswith(head):
                raise UserError(
                    f"{where}: messages[{i}] would train other text than the model generates after the inference "
                    f"prompt ({self.template_name}, {self.method}): trained vs generated {_difference(trained, want)}"
                )
            spans[k] = (start + len(head), end)
        if all(text[:start] == prompt for prompt, (start, _) in zip(prompts, spans)):
            return [(ids, self._mask(ids, offsets, spans, turns, where))]
        rows = []
        for group in _rows(prompts, generated, rendered_turns):
            ids, offsets = self._tokenize(rendered_turns[group[-1]])
            spans = [(len(prompts[k]), len(prompts[k]) + len(generated[k])) for k in group]
            rows.append((ids, self._mask(ids, offsets, spans, [turns[k] for k in group], where)))
        return rows

    def _mask(self, ids, offsets, spans, turns, where) -> list[int]:
        """The 0/1 mask training the character spans of the assistant turns `turns` (message indices)."""
        starts = [start for start, _ in offsets]
        end_of_turn = self.tokenizer.convert_tokens_to_ids(self.end_of_turn)
        mask = [0] * len(ids)
        for i, (start, end) in zip(turns, spans):
            first, stop = bisect_left(starts, start), bisect_left(starts, end)
            if first == stop or starts[first] != start or offsets[stop - 1][1] != end or (
                first and offsets[first - 1][1] > start
            ):
                raise UserError(f"{where}: a token crosses the start or end of messages[{i}], so it cannot train alone")
            if end_of_turn not in ids[first:stop]:
                raise UserError(f"{where}: messages[{i}] does not end with {self.end_of_turn}: the model cannot stop")
            mask[first:stop] = [1] * (stop - first)
        return mask

    def _tokenize(self, text: str):
        """ids and character offsets, as apply_chat_template(tokenize=True) tokenizes: the template writes any bos."""
        out = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return out["input_ids"], out["offset_mapping"]

    def _render(self, conversations: list, tools, template: str | None = None, **kwargs) -> list[str]:
        return self.tokenizer.apply_chat_template(
            conversations, tools=tools, chat_template=template or self.inference_template, tokenize=False,
            **self.template_kwargs, **kwargs,
        )

    def _marked_spans(self, messages, tools):
        """The text, ids, offsets and character spans of the `{% generation %}` blocks of the training template."""
        (text,) = self._render([messages], tools, self.training_template)
        out = self.tokenizer.apply_chat_template(
            messages, tools=tools, chat_template=self.training_template, return_dict=True,
            return_assistant_tokens_mask=True, tokenizer_kwargs={"return_offsets_mapping": True},
            **self.template_kwargs,
        )
        offsets, runs, run_start = out["offset_mapping"], [], None
        for k, bit in enumerate([*out["assistant_masks"], 0]):
            if bit and run_start is None:
                run_start = k
            elif not bit and run_start is not None:
                runs.append((offsets[run_start][0], offsets[k - 1][1]))
                run_start = None
        return text, out["input_ids"], offsets, runs

    def _diff_spans(self, messages, tools, turns, prompts, rendered_turns, where):
        """The text, ids, offsets and character spans of each turn as the template adds it after its prompt."""
        (text,) = self._render([messages], tools)
        for i, rendered in zip(turns, rendered_turns):
            if not text.startswith(rendered):
                raise UserError(
                    f"{where}: {self.template_name} is not prefix-preserving: messages[{i}] renders differently "
                    f"once later messages follow ({_difference(rendered, text)})"
                )
        spans = [(len(prompt), len(rendered)) for prompt, rendered in zip(prompts, rendered_turns)]
        return text, *self._tokenize(text), spans


def end_of_turn_token(tokenizer, template: str | None = None, template_kwargs: dict | None = None,
                      name: str = "the chat template") -> str:
    """The last special token the template writes at the end of an assistant turn: generation stops on it.

    Read from the template itself rather than a table of families, so a recipe's own template (or a model no table
    has heard of) gets the token its turns really end with: `<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, or `</s>`
    after chatml_tools' plain-text `<|im_end|>` on OPT. Train checks that this token is trained; merge and export
    put it among the model's EOS ids."""
    probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    render = lambda messages, **kw: tokenizer.apply_chat_template(  # noqa: E731
        messages, chat_template=template, tokenize=False, **(template_kwargs or {}), **kw)
    try:
        prompt, text = render(probe[:1], add_generation_prompt=True), render(probe)
    except (TemplateError, TypeError, ValueError) as e:
        raise UserError(f"{name} cannot render a plain exchange: {e}") from None
    if not text.startswith(prompt):
        raise UserError(f"{name} is not prefix-preserving ({_difference(prompt, text)})")
    # Named special tokens, and added tokens flagged special (a chat token need not be a named one).
    special = set(tokenizer.all_special_ids)
    special |= {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    ends = [t for t in tokenizer(text[len(prompt) :], add_special_tokens=False).input_ids if t in special]
    if not ends:
        raise UserError(
            f"{name} ends an assistant turn with no special token ({text[len(prompt):]!r}), so generation could "
            f"not stop: end the turn with eos_token ({tokenizer.eos_token})"
        )
    return tokenizer.convert_ids_to_tokens(ends[-1])


def _training_template(tokenizer, template: str) -> str | None:
    """The generation-marked template to train with: the template itself if it has markers, TRL's patched copy if
    TRL knows it, else None (then the mask comes from the template's own prefix diffs)."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(template):
        return template
    probe = copy.copy(tokenizer)  # TRL reads the template off the tokenizer; leave the caller's alone
    probe.chat_template = template
    try:
        return get_training_chat_template(probe)
    except (ValueError, TemplateError):  # TRL has no training copy of it
        return None


def _rows(prompts: list[str], generated: list[str], rendered_turns: list[str]) -> list[list[int]]:
    """The assistant turns (positions in the lists, each the turn's inference prompt, generated text and inference
    rendering as the last turn) grouped into rows, greedily: a row is the rendering of its last turn, and the next
    turn joins the row only if every turn of the row still reads its prompt and then its generated text there."""
    rows: list[list[int]] = []
    for j, text in enumerate(rendered_turns):
        if rows and all(text.startswith(prompts[k] + generated[k]) for k in rows[-1]):
            rows[-1].append(j)
        else:
            rows.append([j])
    return rows


def _template_name(template: str, tokenizer, given: bool) -> str:
    for path in sorted(TEMPLATES_DIR.glob("*.jinja")):
        if path.read_text(encoding="utf-8") == template:
            return f"chat template {path.stem}"
    return "the recipe's chat template" if given else f"the chat template of {tokenizer.name_or_path}"


def _difference(a: str, b: str) -> str:
    """Where two renderings part, for error messages."""
    k = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"at char {k}: {a[max(0, k - 30) : k + 30]!r} vs {b[max(0, k - 30) : k + 30]!r}"
