"""The encoded training set (input ids + assistant mask), computed once with every core and kept on disk.

Encoding renders each sample with the chat template, tokenizes it and checks its mask (`train.mask.ChatFormat`):
tens of milliseconds a sample, so tens of minutes for ToolBench-sized data. `encoded` runs it through
`datasets.Dataset.map(num_proc=...)` over the file's lines and saves the result under the run directory, in
RUN/cache/encoded-<name>-<key>/ (written under a temporary name, renamed into place once complete). The key hashes
everything the result depends on: the data file's bytes, the tokenizer, the templates and their variables, the mask
method and end of turn, max_length, the sample filter, and the code of the mask and of this module. So `--resume`,
a second run and every other rank of an `accelerate launch` (which wait for the main process, then find its copy:
`train.sft` calls this under `main_process_first`) load it, and any changed input encodes afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from dispatchtune.atomic import commit, remove_stale, staging
from dispatchtune.errors import UserError

COLUMNS = ("input_ids", "assistant_masks")
# Per row, summed after; a sample's own counts (samples, left_out rows, tool_calls) on its first row.
_COUNTS = ("samples", "left_out", "tokens", "trained_tokens", "truncated", "truncated_tokens", "tool_calls")
_CODE = (Path(__file__).with_name("mask.py"), Path(__file__))  # the code that decides the ids and masks
ROWS_PER_PROCESS = 100  # fewer rows per worker (a few seconds of work) are not worth starting one for


def encoded(fmt, path: Path, *, max_length: int | None, name: str, cache_dir: Path, assistant_only: bool = False,
            progress: bool = True, num_proc: int | None = None):
    """(`datasets.Dataset` of input_ids + assistant_masks, counts) for the samples of the JSON Lines file `path`
    (one row a sample or more: `train.mask.ChatFormat.encode`), from the cache when it holds them, else encoded (in
    `num_proc` processes; default: one per available core) and cached. `assistant_only`: skip samples without an
    assistant turn (held-out data). A sample the mask checks refuse, or whose prompt fills max_length, is a UserError
    naming it, as `encode_sample` says."""
    from datasets import Dataset, load_from_disk

    key = cache_key(fmt, path, max_length=max_length, assistant_only=assistant_only)
    target = Path(cache_dir) / f"encoded-{name}-{key[:16]}"
    if not (target / "counts.json").is_file():
        _build(fmt, Path(path), target, max_length=max_length, name=name, assistant_only=assistant_only,
               progress=progress, num_proc=num_proc)
        for old in Path(cache_dir).glob(f"encoded-{name}-*"):  # caches of earlier inputs: never read again
            if old != target and not old.name.startswith("."):
                _remove_tree(old)
    elif progress:
        print(f"encoding {name}: reusing {target}")
    counts = json.loads((target / "counts.json").read_text(encoding="utf-8"))
    if not counts["rows"]:  # `datasets` cannot load an empty saved dataset back
        return Dataset.from_dict({k: [] for k in COLUMNS}, features=_features(COLUMNS)), counts
    return load_from_disk(str(target / "data")), counts


def encode_sample(fmt, sample, max_length: int | None) -> list[dict]:
    """One sample's rows, each with its input_ids, assistant_masks and counts (the sample's own on its first row). A
    row's prompt (the tokens before its first trained token) that fills max_length would teach nothing: packing would
    keep only prompt. That is an error for the first row (nothing of the sample would train); a later row is left out
    and counted (its turns are those that cutting one long row at max_length would lose). A longer row is fine but
    cut at max_length (by packing, or by TRL's truncation without it); the counts say by how much."""
    rows = []
    for input_ids, mask in fmt.encode(sample):
        prompt = mask.index(1)  # every row trains a turn
        if max_length and prompt >= max_length:
            if not rows:
                raise UserError(f"max_length {max_length} is shorter than the prompt of {sample.where()} ({prompt} "
                                f"tokens); raise training.max_length or filter with `prep --tokenizer ... "
                                f"--max-tokens {max_length}`")
            rows[0]["left_out"] += 1
            continue
        kept = min(len(input_ids), max_length or len(input_ids))
        rows.append({"input_ids": input_ids, "assistant_masks": mask, "samples": int(not rows), "left_out": 0,
                     "tokens": kept, "trained_tokens": sum(mask[:kept]), "truncated": int(kept < len(input_ids)),
                     "truncated_tokens": len(input_ids) - kept,
                     "tool_calls": 0 if rows else sum(1 for _ in sample.calls())})
    return rows


def cache_key(fmt, path: Path, *, max_length: int | None, assistant_only: bool) -> str:
    """sha256 over what the encoded set depends on (see the module's docstring)."""
    import datasets

    digest = hashlib.sha256()
    for part in (file_sha256(path), tokenizer_sha256(fmt.tokenizer), fmt.inference_template, fmt.training_template,
                 json.dumps(fmt.template_kwargs, sort_keys=True, default=str), fmt.method, fmt.end_of_turn,
                 str(max_length), str(assistant_only), datasets.__version__,
                 *(p.read_text(encoding="utf-8") for p in _CODE)):
        digest.update(hashlib.sha256(str(part).encode()).digest())
    return digest.hexdigest()


def tokenizer_sha256(tokenizer) -> str:
    """The tokenizer's content (vocabulary, merges, normalisation, added and special tokens), wherever it was loaded
    from: the files `save_pretrained` writes, hashed by name and bytes."""
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp:
        for file in sorted(tokenizer.save_pretrained(tmp)):
            file = Path(file)
            if file.is_file():
                digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _build(fmt, path: Path, target: Path, *, max_length, name, assistant_only, progress, num_proc) -> None:
    """Encode `path` into `target`: its lines as an Arrow text dataset, mapped in parallel, saved, renamed."""
    from datasets import Dataset

    remove_stale(target)
    features = _features((*COLUMNS, *_COUNTS))
    with staging(target, directory=True) as tmp:
        work = tmp / "work"  # datasets' Arrow files for the lines and the map; gone with the staging folder
        with _progress_bars(False):
            lines = _lines(path, work)
        procs = num_proc or processes(len(lines))
        if len(lines):
            with _progress_bars(progress and sys.stderr.isatty()):  # as tqdm's default: none in a log file
                ds = lines.map(_encode_batch, batched=True, batch_size=32, with_indices=True, remove_columns=["text"],
                               features=features, num_proc=procs if procs > 1 else None, desc=f"encoding {name}",
                               fn_kwargs={"fmt": fmt, "path": str(path), "max_length": max_length,
                                          "assistant_only": assistant_only})
        else:  # map leaves an empty dataset without the new columns
            ds = Dataset.from_dict({k: [] for k in features}, features=features)
        counts = {"rows": len(ds), **{k: _sum(ds, k) for k in _COUNTS}}
        with _progress_bars(False):
            ds.remove_columns(list(_COUNTS)).save_to_disk(str(tmp / "data"))
        (tmp / "counts.json").write_text(json.dumps(counts) + "\n", encoding="utf-8")
        del ds, lines
        _remove_tree(work)
        commit(tmp, target)


@contextmanager
def _progress_bars(on: bool):
    """datasets' progress bars on or off for the block, as they were after."""
    import datasets

    was = not datasets.is_progress_bar_enabled()
    (datasets.enable_progress_bars if on else datasets.disable_progress_bars)()
    try:
        yield
    finally:
        (datasets.disable_progress_bars if was else datasets.enable_progress_bars)()


def _features(names):
    from datasets import Features, Sequence, Value

    types = {"input_ids": Sequence(Value("int32")), "assistant_masks": Sequence(Value("int8"))}
    return Features({k: types.get(k, Value("int64")) for k in names})


def _lines(path: Path, work: Path):
    """The file's lines (blank ones too, so row k is line k + 1) as an Arrow-backed dataset in `work`."""
    from datasets import Dataset, Features, Value, load_dataset
    from datasets.exceptions import DatasetGenerationError

    features = Features({"text": Value("string")})
    if path.stat().st_size == 0:  # datasets' text builder finds no split in an empty file
        return Dataset.from_dict({"text": []}, features=features)
    try:
        return load_dataset("text", data_files=str(path), split="train", cache_dir=str(work), features=features)
    except DatasetGenerationError as e:
        if isinstance(e.__cause__, UnicodeDecodeError):
            raise UserError(f"{path}: not UTF-8 text (JSON Lines expected)") from None
        raise


def _encode_batch(batch: dict, indices: list[int], fmt, path: str, max_length, assistant_only: bool) -> dict:
    """`datasets.map` function: the encoded rows of a batch of lines (blank lines, and with `assistant_only` samples
    without an assistant turn, give none)."""
    from dispatchtune.data_prep.sample import Rejected, Sample

    out = {k: [] for k in (*COLUMNS, *_COUNTS)}
    for line, index in zip(batch["text"], indices):
        if not line.strip():
            continue
        try:
            sample = Sample.from_record(json.loads(line))
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {index + 1}: not JSON Lines ({e.msg} at column {e.colno})") from None
        except (KeyError, TypeError, AttributeError, ValueError, Rejected) as e:
            raise UserError(f"{path} line {index + 1}: not a sample written by `dispatchtune prep` "
                            f"({type(e).__name__}: {e})") from None
        if assistant_only and not sample.has_assistant:
            continue
        for row in encode_sample(fmt, sample, max_length):
            for key, value in row.items():
                out[key].append(value)
    return out


def _sum(ds, column: str) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(ds.data.column(column)).as_py() or 0)


def processes(rows: int) -> int:
    """How many processes encode `rows` lines: one per available core, each with ROWS_PER_PROCESS rows or more."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, rows // ROWS_PER_PROCESS))


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
