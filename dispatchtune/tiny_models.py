"""Build tiny random models of each supported family, offline, for tests and the demo.

A tiny model has its family's real architecture (a 2-layer config of the real class), real special tokens, real
chat template and real end-of-turn handling, and random weights. Its tokenizer is either trained here on a few
kilobytes of built-in text (`--vocab trained`, the default: about 1,000 tokens, so small, quick models) or the real
one (`--vocab real`, for the families whose vocabulary llama.cpp's tokenizer tests carry: the real BPE, token ids
and embedding rows; see `families.RealVocab`). Nothing is downloaded, so every stage can be tested end to end on a
machine without the Hub.

What each family is (tokens, template, tiny config) comes from `dispatchtune.families`. Heavy libraries (torch,
transformers, tokenizers) are imported inside the functions that need them, because the `dispatchtune` CLI imports
this module just to build its argument parser.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from jinja2 import TemplateError

from .atomic import commit, staging
from .errors import UserError
from .families import FAMILIES, Family, family, resolve_template

DEFAULT_HIDDEN_SIZE = 256  # llama.cpp's K-quants need weight rows that are multiples of 256
TOKENIZER_VOCAB_SIZE = 1000  # cap on the trained vocabulary; the small corpus yields 500-800 tokens
MARKER = "tiny_model.json"  # written last: a directory holding it is a complete build
CACHE_ENV = "DISPATCHTUNE_TINY_CACHE"  # where `tiny:` models named by recipes are built (default below)


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


def build_tokenizer(name: str, corpus: list[str] = (), vocab_size: int = TOKENIZER_VOCAB_SIZE):
    """A byte-level BPE tokenizer trained on the built-in corpus (and `corpus`, texts such as training samples
    rendered in the chat template), with the family's real special tokens and template.

    With a corpus, no merge joins a space to the word after it (the space stays a token of its own), so a word
    tokenizes the same after a space as after a quote: a name in a request and in a call's JSON are the same tokens,
    and a model trained from scratch learns to copy it by attention alone, where a pretrained model would have
    learned the correspondence from its pretraining. Nor does a merge join digits: every number is written digit by
    digit, so a number training never showed is made of tokens it did. The split rule is the family's, so
    llama.cpp's pre-tokenizer still matches; only the merges differ."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    spec = family(name)
    template = spec.template.text() if spec.template else None
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
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(spec.leading_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes, whatever the text
        show_progress=False,
    )
    split = tok.pre_tokenizer
    if corpus:  # train with a space before a letter and each digit split off, then tokenize with the family's rule
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r" (?=\p{L})|\p{N}"), "isolated"), split])
    tok.train_from_iterator([_CORPUS, template or "", *corpus], trainer=trainer)
    tok.pre_tokenizer = split
    return _family_tokenizer(spec, tok)


def _family_tokenizer(spec: Family, tok):
    """`tok` (a `tokenizers.Tokenizer` holding the family's leading tokens) with its special and plain tokens added
    after the vocabulary, as a transformers tokenizer with the family's bos/eos/pad, bos handling and template."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    template = spec.template.text() if spec.template else None
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


# --- real vocabularies: llama.cpp's tokenizer test files, converted by transformers ---

VOCABS = ("trained", "real")


def _real_vocab(spec: Family):
    if spec.real_vocab is None:
        with_real = ", ".join(f.name for f in FAMILIES.values() if f.real_vocab)
        raise UserError(f"no real vocabulary for {spec.name} here (llama.cpp's tokenizer tests carry none of its; "
                        f"they do for {with_real}): build it with --vocab trained")
    return spec.real_vocab


def converted_vocab(name: str) -> dict:
    """llama.cpp's tokenizer test vocabulary `name` (`ggml-vocab-<name>.gguf`) as transformers converts it to a fast
    tokenizer: its tokenizer.json, as a dict. The conversion takes about half a minute, so its result is cached
    (keyed by the file's hash) beside the unpacked sources."""
    from dispatchtune.export import llama_cpp_tools as tools

    source = tools.models_dir() / f"ggml-vocab-{name}.gguf"
    if not source.is_file():
        raise UserError(f"{source.parent} has no ggml-vocab-{name}.gguf: re-run scripts/install_export_tools.sh")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cached = tools.CACHE_DIR / "vocab" / f"{name}-{digest}"
    if not (cached / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        print(f"converting llama.cpp's {name} vocabulary to a tokenizer with transformers (once)", file=sys.stderr)
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        with staging(cached, directory=True) as tmp:
            tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
            try:
                commit(tmp, cached, replace=False)
            except FileExistsError:  # a concurrent conversion finished first: use its copy
                if not (cached / "tokenizer.json").is_file():
                    raise
    return json.loads((cached / "tokenizer.json").read_text(encoding="utf-8"))


def build_real_tokenizer(name: str):
    """The family's real tokenizer: the real byte-level BPE (vocabulary, merges, pre-tokenizer; NFC where the family
    normalises) from llama.cpp's test vocabulary, with the family's own tokens at their real ids, its bos/eos/pad and
    its real template (`families.RealVocab` says how, and what differs where anything does)."""
    from tokenizers import AddedToken, Tokenizer

    spec = family(name)
    real = _real_vocab(spec)
    data = converted_vocab(real.llama_cpp)
    # The file's own added tokens (special ones, and Qwen's [PAD...] placeholders) give way to the family's.
    first_added = min(t["id"] for t in data["added_tokens"])
    ordinary = {t: i + len(spec.leading_tokens) for t, i in data["model"]["vocab"].items() if i < first_added}
    clash = set(ordinary) & set(spec.leading_tokens)
    if clash:
        raise ValueError(f"{name}: leading tokens {sorted(clash)} are ordinary tokens of {real.llama_cpp}")
    data["model"].update(vocab={**{t: i for i, t in enumerate(spec.leading_tokens)}, **ordinary},
                         ignore_merges=real.ignore_merges)
    data.update(added_tokens=[], normalizer={"type": "NFC"} if spec.nfc else None, post_processor=None)
    tok = Tokenizer.from_str(json.dumps(data))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in spec.leading_tokens])
    return _family_tokenizer(spec, tok)


def build_tiny_model(name: str, out_dir: Path, *, hidden_size: int = DEFAULT_HIDDEN_SIZE, seed: int = 0,
                     vocab: str = "trained", corpus: Path | None = None, chat_template: str | None = None,
                     layers: int | None = None, heads: int | None = None) -> Path:
    """Write a tiny model of family `name` (tokenizer, safetensors weights, generation config) to `out_dir`; return it.
    `vocab`: "trained" (a tokenizer trained here) or "real" (the family's real one, `build_real_tokenizer`).
    `corpus`: a JSON Lines file of samples whose text the trained tokenizer also learns from, so that the data a
    model is to be trained on tokenizes into few tokens; `chat_template` (a template name or .jinja path, see
    `families.resolve_template`): the one it will be trained with, which the tokenizer then learns the corpus
    rendered in (see `corpus_texts`). `layers`, `heads`: other than the family's tiny shape.

    The build happens in a temporary sibling directory renamed into place at the end, so `out_dir` is either
    absent or complete. A complete `out_dir` built with the same settings is returned as is; one built with other
    settings, or any other directory in the way, is an error rather than something to overwrite.
    """
    spec = family(name)
    if hidden_size < 128 or hidden_size % 128:
        raise UserError(f"hidden size must be a positive multiple of 128 (heads of 64 in pairs), not {hidden_size}")
    out_dir = Path(out_dir)
    if vocab not in VOCABS:
        raise UserError(f"unknown vocabulary {vocab!r}; choose one of: {', '.join(VOCABS)}")
    recipe = {"family": spec.name, "hub_id": spec.hub_id, "hidden_size": hidden_size, "seed": seed}
    if vocab == "real":
        _real_vocab(spec)  # refuse a family without one before anything is written
        recipe["vocab"] = vocab
        if corpus:
            raise UserError("--corpus trains the tokenizer; the real vocabulary is fixed (use --vocab trained)")
    if corpus:
        recipe["corpus_sha256"] = hashlib.sha256(Path(corpus).read_bytes()).hexdigest()
    template = resolve_template(chat_template)
    if template:
        if not corpus:
            raise UserError("--chat-template renders the --corpus samples for the tokenizer; give --corpus too")
        recipe["chat_template_sha256"] = hashlib.sha256(template.encode()).hexdigest()
    for key, value in (("layers", layers), ("heads", heads)):
        if value is not None:
            if value < 1 or key == "heads" and hidden_size % value:
                raise UserError(f"--{key} {value}: expected a positive number"
                                + (f" that divides the hidden size {hidden_size}" if key == "heads" else ""))
            recipe[key] = value
    if _reusable(out_dir, recipe):
        return out_dir
    with staging(out_dir, directory=True) as tmp:
        texts = corpus_texts(Path(corpus), template, spec) if corpus else []  # read only when building, not reusing
        _write_model(spec, tmp, hidden_size, seed, vocab, texts, layers, heads)
        (tmp / MARKER).write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
        try:
            commit(tmp, out_dir, replace=False)
        except FileExistsError:
            if not _reusable(out_dir, recipe):  # lost a race to an identical concurrent build: use the winner's
                raise
    return out_dir


def cached_tiny_model(name: str) -> Path:
    """The model a recipe's `tiny:<name>` names: `<family>` (a trained vocabulary) or `<family>:real` (the real one),
    built on first use in $DISPATCHTUNE_TINY_CACHE (default ~/.cache/dispatchtune/tiny) and reused after."""
    family_name, _, vocab = name.partition(":")
    cache = Path(os.environ.get(CACHE_ENV, "~/.cache/dispatchtune/tiny")).expanduser()
    folder = cache / (f"{family_name}-{vocab}" if vocab else family_name)
    return build_tiny_model(family_name, folder, vocab=vocab or "trained")


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


def corpus_texts(path: Path, chat_template: str | None = None, spec: Family | None = None) -> list[str]:
    """The text of a JSON Lines file of samples as the model will see it: each sample rendered in `chat_template`
    with family `spec`'s bos/eos (its added tokens then cut out: they are never merged), so that the template's own
    words (`system`, `Tools`, a tool list's layout) become tokens too; without a template, every string, with the
    JSON held in strings (tool lists, call arguments) and each call (`{"name": ..., "arguments": ...}`) written out
    as templates write JSON."""
    def strings(value):
        if isinstance(value, dict):
            if "arguments" in value:
                yield json.dumps(value, ensure_ascii=False)
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)
        elif isinstance(value, str):
            if value[:1] in "[{":
                try:
                    yield from strings(json.loads(value))
                    yield json.dumps(json.loads(value), ensure_ascii=False)
                    return
                except ValueError:
                    pass
            yield value

    def rendered(sample: dict) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        (text,), _ = render_jinja_template(conversations=[sample["messages"]], tools=sample.get("tools"),
                                           chat_template=chat_template, bos_token=spec.bos_token,
                                           eos_token=spec.eos_token)
        for token in spec.all_special_tokens + spec.plain_tokens:
            text = text.replace(token, "\n")
        return text

    texts = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    sample = json.loads(line)
                    texts.append(rendered(sample) if chat_template else "\n".join(strings(sample)))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--corpus {path}: cannot read it ({e})") from None
    except ValueError as e:
        raise UserError(f"--corpus {path}: line {n} is not JSON ({e})") from None
    except (KeyError, TypeError, TemplateError) as e:
        raise UserError(f"--corpus {path}: line {n} does not render in the chat template ({e!r})") from None
    return texts


def _reshape(config, layers: int | None, heads: int | None) -> None:
    """Another depth (the family's layer-type pattern repeated) or number of attention heads (all full heads)."""
    if layers:
        if getattr(config, "layer_types", None):
            config.layer_types = [config.layer_types[i % len(config.layer_types)] for i in range(layers)]
        config.num_hidden_layers = layers
    if heads:
        config.num_attention_heads = config.num_key_value_heads = heads
        config.head_dim = config.hidden_size // heads


def _write_model(spec: Family, out: Path, hidden_size: int, seed: int, vocab: str = "trained",
                 corpus: list[str] = (), layers: int | None = None, heads: int | None = None) -> None:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    real = spec.real_vocab if vocab == "real" else None
    tokenizer = build_real_tokenizer(spec.name) if real else build_tokenizer(spec.name, corpus)
    ids = tokenizer.convert_tokens_to_ids
    config = spec.tiny_config(hidden_size, real.vocab_size if real else len(tokenizer))
    _reshape(config, layers, heads)
    config.bos_token_id = ids(spec.bos_token) if spec.bos_token else None
    config.eos_token_id = ids(spec.eos_token)
    config.pad_token_id = ids(spec.pad_token) if spec.pad_token else None
    if real:  # the checkpoint's config.json ids, which may name tokens the tokenizer does not use as bos/eos
        config.bos_token_id = ids(real.config_bos) if real.config_bos else None
        eos = [ids(t) for t in real.config_eos]
        config.eos_token_id = eos if len(eos) > 1 else eos[0]
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
    parser.add_argument("--corpus", type=Path, help="a JSON Lines file of samples the trained tokenizer also learns "
                        "from (the demo's training data), so they tokenize into fewer tokens")
    parser.add_argument("--chat-template", metavar="NAME", help="the chat template the model will be trained with "
                        "(a name as recipes give it, or a .jinja path): the tokenizer learns the --corpus samples "
                        "rendered in it, so the template's own words are single tokens too (shorter rows)")
    parser.add_argument("--layers", type=int, help="number of layers (default: the family's tiny depth, 2 for most)")
    parser.add_argument("--heads", type=int, help="attention heads, dividing the hidden size (default: the family's)")
    parser.add_argument(
        "--vocab", choices=VOCABS, default="trained",
        help="trained: a ~1,000-token tokenizer trained here (small, quick models; the default); real: the family's "
             "real tokenizer and vocabulary size, from llama.cpp's tokenizer tests (set up by "
             "scripts/install_export_tools.sh; with --family all, the families that have one)",
    )


def run(args: argparse.Namespace) -> int:
    names = list(FAMILIES) if args.family == "all" else [args.family]
    if args.family == "all" and args.vocab == "real":
        names = [n for n in names if FAMILIES[n].real_vocab]
    for name in names:
        out = args.out / name if args.family == "all" else args.out
        path = build_tiny_model(name, out, hidden_size=args.hidden_size, seed=args.seed, vocab=args.vocab,
                                corpus=args.corpus, chat_template=args.chat_template, layers=args.layers,
                                heads=args.heads)
        print(f"{name}: {path} (stands for {FAMILIES[name].hub_id}, {args.vocab} vocabulary)")
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
