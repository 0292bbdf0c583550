"""Benchmark encoding the training set (`train.encode.encoded`) against the tokenizer alone on the same texts.

Writes a ToolLLaMA-shaped file (`make_corpus.py --shape toolllama`), runs `dispatchtune prep` on it, and measures
in one run, on the accepted samples:

- floor: the text of each row encode makes of each sample (not timed), then the tokenizer alone on those texts as
  one batch (`tokenizer(texts)`: Rust, every core): what tokenizing costs with nothing else;
- encode: `train.encode.encoded` as training runs it (render, tokenize, mask and its checks, every core through
  `datasets.map(num_proc=...)`, saved to the cache: the wall time a training run waits), and with `--single` also
  in one process;
- reuse: the same call again, loading the cache.

Throughput counts the encoded tokens of each row (no max_length cut). CPU seconds add this process's and its
finished children's, so on a machine shared with other work they say what wall times cannot. The tokenizer is a Qwen3 one: by default
the tiny Qwen3 model's (`dispatchtune tiny`: Qwen3's chat template and special tokens, a vocabulary trained locally,
so token counts differ from the real one's), or --tokenizer DIR for the real one.

    python scripts/bench_encode.py --records 2000 --single
    python scripts/bench_encode.py --records 2000 --tokenizer ~/models/Qwen3-0.6B
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

from make_corpus import write_corpus  # beside this script


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=2000, help="ToolLLaMA step records in the generated file")
    ap.add_argument("--tokenizer", help="a tokenizer directory (default: the tiny Qwen3 model's)")
    ap.add_argument("--single", action="store_true", help="also time the encode in one process")
    ap.add_argument("--keep", type=Path, help="work in this directory and keep its files")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from dispatchtune.data_prep.prep import PrepConfig, prep
    from dispatchtune.data_prep.sample import read_jsonl
    from dispatchtune.tiny_models import build_tiny_model
    from dispatchtune.train.encode import encoded, processes
    from dispatchtune.train.mask import ChatFormat

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_encode_"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "toolllama.json"
    if not corpus.exists():
        write_corpus(corpus, "toolllama", args.records)
    if not (work / "data" / "train.jsonl").exists():
        prep(PrepConfig(inputs=[corpus], out=work / "data", format="toolllama", heldout_frac=0.0, progress=False))
    data = work / "data" / "train.jsonl"
    tokenizer_dir = args.tokenizer or str(build_tiny_model("qwen3", work / "tiny-qwen3"))
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    fmt = ChatFormat.from_tokenizer(tokenizer, template_kwargs={"enable_thinking": False})  # as recipes/qwen3-*
    samples = list(read_jsonl(data))
    texts = [tokenizer.decode(ids) for s in samples for ids, _ in fmt.encode(s)]  # what encode tokenizes

    cache = work / "cache"
    rows = []

    def timed(name: str, run) -> None:
        """Wall and CPU seconds (this process and its finished children) of run(), which returns the tokens."""
        wall, cpu = time.perf_counter(), _cpu_seconds()
        tokens = run()
        rows.append((name, time.perf_counter() - wall, _cpu_seconds() - cpu, tokens))

    def encode(num_proc=None, fresh=True) -> int:
        if fresh:
            shutil.rmtree(cache, ignore_errors=True)
        return encoded(fmt, data, max_length=None, name="train", cache_dir=cache, progress=False,
                       num_proc=num_proc)[1]["tokens"]

    timed("tokenizer(texts), one batch (floor)",
          lambda: sum(map(len, tokenizer(texts, add_special_tokens=False)["input_ids"])))
    n = processes(len(samples))
    timed(f"encoded as training does ({n} process{'es' if n > 1 else ''})", encode)
    timed("encoded again (cache)", lambda: encode(fresh=False))
    if args.single:
        timed("encoded in 1 process (--single)", lambda: encode(num_proc=1))
    counts = encoded(fmt, data, max_length=None, name="train", cache_dir=cache, progress=False)[1]

    load = os.getloadavg()
    print(f"\ndate {datetime.date.today()}; {platform.machine()}, {os.cpu_count()} cores, load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; Python {platform.python_version()}; tokenizer "
          f"{tokenizer_dir} ({type(tokenizer).__name__}, vocabulary {len(tokenizer)})")
    print(f"input: {args.records:,} ToolLLaMA-shaped records -> {len(samples):,} samples in {counts['rows']:,} rows, "
          f"{counts['tokens']:,} tokens ({counts['tokens'] / len(samples):,.0f} a sample), "
          f"{counts['trained_tokens']:,} trained\n")
    print("| run | wall s | CPU s | samples/s | tokens/s | x floor throughput |")
    print("|---|---:|---:|---:|---:|---:|")
    floor = rows[0][3] / rows[0][1]
    for name, dt, cpu, tokens in rows:
        print(f"| {name} | {dt:.2f} | {cpu:.2f} | {len(samples) / dt:,.0f} | {tokens / dt:,.0f} | "
              f"{tokens / dt / floor:.2f} |")
    assert rows[0][3] == counts["tokens"], "the floor and the encode should count the same tokens"
    if not args.keep:
        shutil.rmtree(work)


def _cpu_seconds() -> float:
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                       resource.RUSAGE_CHILDREN)))


if __name__ == "__main__":
    main()
