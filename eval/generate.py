"""`dispatchtune eval run`: greedy predictions of a model (base, base + adapter, or GGUF) on eval cases.

The adapter directory is train's RUN/adapter: a LoRA adapter applied to the base, or, for a full fine-tune
(`model.finetune=full`), the trained model itself, loaded in place of the base.

Prompts are rendered here, with the chat template of the tokenizer that trained the adapter (the adapter directory
carries it) or, for a GGUF file, the template stored in the file: transformers and llama.cpp then see the same text,
so their predictions differ only by the weights. Generation is greedy and stops on the template's end-of-turn token
(`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`; a plain-text marker such as the training template's `<|im_end|>` on OPT
stops as a string) or an eos token; the text before it is the turn's prediction, kept raw so that scoring parses
it (eval/parse.py), not this stage. Template variables are the ones training rendered with (the recipe's
`template_kwargs` in RUN/run.json beside the adapter: Qwen3's `enable_thinking=false`, Llama's `date_string`), and a
case's own `date_string` (meta) wins, since its messages are written for that day.

A chain case runs as a loop: after turn k the conversation gets the model's own assistant turn (its parsed calls, or
its text when it made none or a malformed one) and then the case's tool results for turn k, and turn k+1 is
generated. Every case's turn k is generated in the same batches, so chains cost no more passes than their length.

Writes OUT/predictions.jsonl (one `Prediction` per case, in case order) and OUT/generation.json (what ran, how fast).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from dispatchtune.atomic import write_text
from dispatchtune.errors import UserError
from dispatchtune.runinfo import is_full_model, read_run_info

from .parse import parse_output
from .records import Case, Prediction
from .score import file_hash, iter_cases

GGUF_CONTEXT = 16384  # llama.cpp context: prep's 8192-token samples plus a long answer fit; its KV cache is allocated whole
BATCH_SIZE, MAX_NEW_TOKENS = 16, 256  # the defaults: prompts per generation batch, tokens per turn at most
PREDICTIONS, GENERATION = "predictions.jsonl", "generation.json"


def generate_predictions(cases: list[Case], cases_file: Path, out: Path, *, model: str, adapter: Path | None = None,
                         gguf: Path | None = None, tokenizer: str | None = None, template_kwargs: dict | None = None,
                         batch_size: int = BATCH_SIZE, max_new_tokens: int = MAX_NEW_TOKENS) -> tuple[dict, object]:
    """Runs the model on `cases` (read from `cases_file`) and writes OUT/predictions.jsonl and OUT/generation.json;
    returns what generation.json holds and the tokenizer that rendered the prompts (scoring parses with it).
    A full fine-tune's `adapter` is the model that runs: `model` (its base) is not loaded, and not needed."""
    if gguf is None and adapter is not None and is_full_model(adapter):
        model = str(adapter)
    backend = load_backend(model, adapter, gguf, tokenizer, template_kwargs, max_new_tokens)
    try:
        start = time.perf_counter()
        predictions, stats = predict(cases, backend, batch_size)
        wall = time.perf_counter() - start
    finally:
        backend.close()
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / PREDICTIONS, "".join(p.to_json() + "\n" for p in predictions))
    report = {
        "model": model, "adapter": _str(adapter), "gguf": _str(gguf),
        "tokenizer": backend.tokenizer_source,
        "template_kwargs": backend.template_kwargs,
        "cases_file": str(cases_file), "cases_sha256": file_hash(cases_file),
        "cases": len(cases), "turns": stats["turns"], "batch_size": batch_size,
        "max_new_tokens": max_new_tokens, "tokens_generated": stats["tokens"],
        "unfinished_turns": stats["unfinished"], "template_errors": stats["template_errors"],
        "wall_s": round(wall, 3), "cases_per_s": round(len(cases) / wall, 3) if wall else None,
        "device": backend.device, "python": platform.python_version(),
    }
    write_text(out / GENERATION, json.dumps(report, indent=2) + "\n")
    print(f"eval run: {len(cases)} cases, {stats['turns']} turns, {stats['tokens']} tokens in {wall:.1f} s "
          f"({report['cases_per_s']} cases/s) -> {out / PREDICTIONS}")
    return report, backend.tokenizer


def load_cases(path: Path) -> list[Case]:
    """Every case of a cases file, checked as `eval score` checks them (so a bad file fails before generation)."""
    if not path.is_file():
        raise UserError(f"--cases {path}: no such file")
    return list(iter_cases(path))


class Backend:
    """Renders conversations with one chat template and generates greedily; subclasses bring the weights."""

    device = "cpu"

    def __init__(self, tokenizer, tokenizer_source: str, max_new_tokens: int, template_kwargs: dict | None = None,
                 chat_template: str | None = None):
        self.tokenizer, self.tokenizer_source = tokenizer, tokenizer_source
        self.chat_template = chat_template or tokenizer.chat_template
        if not self.chat_template:
            raise UserError(f"{tokenizer_source} has no chat template; pass --tokenizer with one (the adapter's)")
        self.max_new_tokens = max_new_tokens
        self.template_kwargs = dict(template_kwargs or {})
        self.end_of_turn = end_of_turn(tokenizer, self.chat_template, self.template_kwargs)

    def render(self, case: Case, messages: list[dict]) -> str:
        # Templates ignore variables they do not use; Llama's stamps today's date unless given `date_string`.
        kwargs = dict(self.template_kwargs)
        if case.meta.get("date_string"):
            kwargs["date_string"] = case.meta["date_string"]
        return self.tokenizer.apply_chat_template(
            messages, tools=case.tools or None, add_generation_prompt=True, tokenize=False,
            chat_template=self.chat_template, **kwargs,
        )

    def generate(self, prompts: list[str]) -> list[tuple[str, int, bool]]:
        """(text before the end of turn, tokens generated, whether it ended) for each prompt, in one batch."""
        raise NotImplementedError

    def cut(self, text: str) -> tuple[str, bool]:
        """The text before the end-of-turn marker where it was written out as plain text."""
        if self.end_of_turn and self.end_of_turn in text:
            return text.split(self.end_of_turn, 1)[0], True
        return text, False

    def close(self) -> None:
        pass


def end_of_turn(tokenizer, chat_template: str, template_kwargs: dict | None = None) -> str | None:
    """What the template writes after an assistant message's content, less whitespace and a final eos: the marker
    generation must stop on (`<|im_end|>`; `<|im_end|>` alone where the template writes `<|im_end|></s>`).
    A text, not a token (train.mask.end_of_turn_token is the token): on OPT, chatml_tools' `<|im_end|>` is plain
    text, and generation stops on it as a stop string."""
    marker = "\x00dispatchtune-end-probe\x00"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}],
        tokenize=False, chat_template=chat_template, **(template_kwargs or {}),
    )
    tail = text.split(marker, 1)[1].strip()
    eos = tokenizer.eos_token
    if eos and tail.endswith(eos) and tail != eos:
        tail = tail[: -len(eos)].strip()
    return tail or None


class HFBackend(Backend):
    def __init__(self, model_id: str, adapter: Path | None, tokenizer_source: str, max_new_tokens: int,
                 template_kwargs: dict | None = None):
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig

        tokenizer = load_tokenizer(tokenizer_source)
        super().__init__(tokenizer, tokenizer_source, max_new_tokens, template_kwargs)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        try:
            model = AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype)
        except OSError as e:
            raise UserError(f"--model {model_id}: cannot load it ({str(e).splitlines()[0]})") from None
        if adapter is not None and not is_full_model(adapter):  # a full fine-tune's directory is `model_id` itself
            from peft import PeftModel

            if not (adapter / "adapter_config.json").is_file():
                raise UserError(f"--adapter {adapter}: neither a PEFT adapter (adapter_config.json) nor a fully "
                                "fine-tuned model (config.json)")
            model = PeftModel.from_pretrained(model, adapter)
        self.model = model.to(self.device).eval()
        torch.manual_seed(0)  # greedy decoding draws nothing; set anyway, so nothing random can slip in unseeded

        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        stops = _ids(model.generation_config.eos_token_id) | _ids(tokenizer.eos_token_id)
        marker = tokenizer.encode(self.end_of_turn, add_special_tokens=False) if self.end_of_turn else []
        stops |= set(marker) if len(marker) == 1 else set()
        self.stop_ids = stops
        # A fresh config: the checkpoint's sampling defaults (Qwen3's temperature and top_p) must not apply.
        self.config = GenerationConfig(
            do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=sorted(stops),
            pad_token_id=tokenizer.pad_token_id, stop_strings=[self.end_of_turn] if len(marker) > 1 else None,
        )

    def generate(self, prompts: list[str]) -> list[tuple[str, int, bool]]:
        import torch

        # The template writes any bos itself, as in training (apply_chat_template tokenizes without special tokens).
        batch = self.tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**batch, generation_config=self.config, tokenizer=self.tokenizer)
        results = []
        for row in out[:, batch.input_ids.shape[1]:].tolist():
            end = next((i for i, t in enumerate(row) if t in self.stop_ids), None)
            kept = row if end is None else row[:end]
            text, marked = self.cut(self.tokenizer.decode(kept, skip_special_tokens=False))
            results.append((text, len(kept) + (end is not None), end is not None or marked))
        return results


class GGUFBackend(Backend):
    """llama.cpp runs one sequence at a time; prompts are tokenized by llama.cpp from the same rendered text."""

    def __init__(self, gguf: Path, tokenizer_source: str, max_new_tokens: int, template_kwargs: dict | None = None):
        try:
            import llama_cpp
        except ImportError:
            raise UserError("--gguf needs llama-cpp-python: pip install llama-cpp-python") from None
        if not gguf.is_file():
            raise UserError(f"--gguf {gguf}: no such file")
        self.llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=GGUF_CONTEXT, n_gpu_layers=-1, seed=0, verbose=False)
        tokenizer = load_tokenizer(tokenizer_source)
        super().__init__(tokenizer, tokenizer_source, max_new_tokens, template_kwargs,
                         chat_template=self.llm.metadata.get("tokenizer.chat_template"))
        self.device = "llama.cpp"
        stops = _ids(tokenizer.eos_token_id) | {self.llm.token_eos()}
        marker = self.llm.tokenize(self.end_of_turn.encode(), add_bos=False, special=True) if self.end_of_turn else []
        self.stop_ids = stops | (set(marker) if len(marker) == 1 else set())

    def generate(self, prompts: list[str]) -> list[tuple[str, int, bool]]:
        results = []
        for prompt in prompts:
            ids = self.llm.tokenize(prompt.encode(), add_bos=False, special=True)
            if len(ids) + self.max_new_tokens > GGUF_CONTEXT:
                raise UserError(f"a prompt of {len(ids)} tokens plus --max-new-tokens {self.max_new_tokens} does not "
                                f"fit the llama.cpp context of {GGUF_CONTEXT} tokens")
            kept, stopped = [], False
            for token in self.llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
                if token in self.stop_ids:
                    stopped = True
                    break
                kept.append(token)
                if len(kept) >= self.max_new_tokens:
                    break
            text, marked = self.cut(self.llm.detokenize(kept, special=True).decode("utf-8", errors="replace"))
            results.append((text, len(kept) + stopped, stopped or marked))
        return results

    def close(self) -> None:
        self.llm.close()  # before interpreter exit, or llama.cpp may crash tearing down


def load_backend(model: str, adapter: Path | None, gguf: Path | None, tokenizer: str | None,
                 template_kwargs: dict | None, max_new_tokens: int) -> Backend:
    """The backend for the model, rendering with `tokenizer`'s template (default: the adapter's, else the model's)
    and `template_kwargs` (default: those training used, from run.json beside the adapter or tokenizer)."""
    source = tokenizer
    if source is None:
        has_tokenizer = adapter is not None and (adapter / "tokenizer_config.json").is_file()
        source = str(adapter) if has_tokenizer else model
    if template_kwargs is None:
        template_kwargs = recipe_template_kwargs(Path(str(adapter or source)))
    if gguf is not None:
        return GGUFBackend(gguf, source, max_new_tokens, template_kwargs)
    return HFBackend(model, adapter, source, max_new_tokens, template_kwargs)


def recipe_template_kwargs(adapter_dir: Path) -> dict:
    """The template variables training used: `model.template_kwargs` of RUN/run.json, for an adapter in RUN/adapter."""
    info = read_run_info(adapter_dir.parent) if adapter_dir.is_dir() else None
    return info.template_kwargs if info else {}


def predict(cases: list[Case], backend: Backend, batch_size: int) -> tuple[list[Prediction], dict]:
    """Every case's turns, turn k of all cases batched together (longest prompts first, so a batch pads little and
    running out of memory shows at once)."""
    from jinja2 import TemplateError
    from tqdm import tqdm

    bar = tqdm(total=sum(len(c.turns) for c in cases), desc="eval run", unit="turn", file=sys.stderr)
    conversations = {c.id: list(c.messages) for c in cases}
    turns: dict[str, list[dict]] = {c.id: [] for c in cases}
    stats = {"turns": 0, "tokens": 0, "unfinished": 0, "template_errors": 0}
    for k in range(max(len(c.turns) for c in cases)):
        prompts: list[tuple[Case, str]] = []
        for case in cases:
            if len(turns[case.id]) != k or k >= len(case.turns):
                continue  # finished, or stopped early by a template error
            try:
                prompts.append((case, backend.render(case, conversations[case.id])))
            except TemplateError as e:
                if k == 0:
                    raise UserError(f"the chat template refuses case {case.id!r}: {e}") from None
                # Tool results, or the model's own turn, cannot be rendered (Gemma 3's own template refuses tool
                # messages): the rest of the case counts as no output.
                turns[case.id] += [{"text": ""}] * (len(case.turns) - k)
                stats["template_errors"] += 1
                bar.update(len(case.turns) - k)
        prompts.sort(key=lambda p: -len(p[1]))
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i : i + batch_size]
            for (case, prompt), (text, tokens, ended) in zip(chunk, backend.generate([p for _, p in chunk])):
                turns[case.id].append({"text": text})
                stats["tokens"] += tokens
                stats["unfinished"] += not ended
                if k + 1 < len(case.turns):
                    conversations[case.id] += next_turn(case, k, text, backend.tokenizer, prompt)
            bar.update(len(chunk))
            stats["turns"] += len(chunk)
    bar.close()
    return [Prediction(c.id, turns[c.id]) for c in cases], stats


def next_turn(case: Case, k: int, text: str, tokenizer, prompt: str) -> list[dict]:
    """The model's assistant turn k as a message, then the case's tool results; call i takes result i's id."""
    calls, _ = parse_output(text, tokenizer, prefix=prompt, tools=case.tools)
    results = case.turns[k].results
    if not calls:
        return [{"role": "assistant", "content": text}, *results]
    tool_calls = [
        {"id": results[i].get("tool_call_id") if i < len(results) else f"call_{k}_{i}", "type": "function",
         "function": {"name": c.name, "arguments": c.arguments}}
        for i, c in enumerate(calls)
    ]
    return [{"role": "assistant", "content": "", "tool_calls": tool_calls}, *results]


def load_tokenizer(source: str, advice: str = ""):
    """The tokenizer at `source` (a Hub id or a directory); a UserError, ending with `advice`, when there is none."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the tokenizer {source!r} ({str(e).splitlines()[0]})"
                        + (f"; {advice}" if advice else "")) from None


def _ids(value) -> set[int]:
    return set() if value is None else {value} if isinstance(value, int) else set(value)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
