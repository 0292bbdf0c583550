"""Convert a merged model to GGUF files for llama.cpp and Ollama, each verified against the merged model.

    dispatchtune export gguf --run RUN --quant f16,q8_0,q4_k_m        # RUN/merged -> RUN/gguf
    dispatchtune export gguf --model MERGED_DIR --out DIR --quant q4_k_m [--name NAME]

llama.cpp's own converter writes the merged weights losslessly (f32, bf16 or f16, as the merged model holds them)
and its quantiser makes each quantised type from that file; float types asked for are converted directly
(export/llama_cpp_tools.py says where both tools come from). Every file is then checked before anything is renamed
into place, and the figures go to verify.json:
- the metadata carries the training chat template, the tokenizer's eos id, and llama.cpp treats every stop id of
  the merged model's generation config as end of generation;
- llama.cpp tokenizes the rendered prompts (some with tools) to exactly the transformers ids;
- next-token logits at every prompt position agree with the merged model within the quant type's tolerance, and
  for f32/f16 files greedy continuations are the same tokens (up to a near-tie within tolerance).
A `<file>.Modelfile` for Ollama goes beside each file (export/modelfile.py).

llama.cpp recognises a tokenizer's pre-tokenizer by hashing how it splits a fixed text, so a tokenizer it does not
know (one trained locally) is refused with the converter's own message; the converter runs as llama.cpp ships it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dispatchtune.atomic import commit, staging
from dispatchtune.errors import UserError
from dispatchtune.runinfo import read_run_info
from dispatchtune.families import gguf_converter_args
from dispatchtune.paths import check_output_dir
from dispatchtune.train.sft import check_model_dir

from . import (
    VERIFY_FILE, Tolerance, compare_logits, existing_output, hf_logits, token_ids, verification_prompts, write_json,
)
from . import llama_cpp_tools as tools
from .modelfile import modelfile_settings, write_modelfile

# Logits of each GGUF type vs the merged model in float32, at every prompt position. The bounds sit beyond what tiny
# random models show (the worst case for quantisation: near-flat distributions, Gaussian weights, one K-quant super-
# block per row; real models do better). Worst of 3 adapters on each of qwen3, llama-3.2 and gemma3 (Gemma's 5:1
# layer pattern), as (max rel err, mean cosine, top-1): f32 (1.7e-3, 0.99999, 0.997); f16 (4.4e-3, 0.99999, 0.995);
# bf16 (3.8e-2, 0.9999, 0.966); q8_0 (1.0e-1, 0.9987, 0.925); q6_k (2.6e-1, 0.990, 0.779); q5_k_m (4.2e-1, 0.965,
# 0.622); q4_k_m (7.5e-1, 0.880, 0.329). GGUF_AND_TINY_MODELS.md saw the same spread. Conversion bugs are caught by
# the unquantised files, whose bounds are tight: a Gemma 3 with a 1:1 layer pattern, which llama.cpp's fixed 5:1
# does not model, gives f16 a mean cosine of 0.75.
TOLERANCES = {
    "f32": Tolerance(max_rel_err=5e-3, min_mean_cosine=0.99999, min_top1=0.98),
    "f16": Tolerance(max_rel_err=1e-2, min_mean_cosine=0.99999, min_top1=0.98),
    "bf16": Tolerance(max_rel_err=0.1, min_mean_cosine=0.9995, min_top1=0.93),
    "q8_0": Tolerance(max_rel_err=0.25, min_mean_cosine=0.997, min_top1=0.85),
    "q6_k": Tolerance(max_rel_err=0.5, min_mean_cosine=0.98, min_top1=0.7),
    "q5_k_m": Tolerance(max_rel_err=0.75, min_mean_cosine=0.94, min_top1=0.5),
    "q4_k_m": Tolerance(max_rel_err=1.0, min_mean_cosine=0.8, min_top1=0.25),
}
# Types whose greedy continuations must follow the merged model's, token for token until a near-tie: a step where
# the two candidates' logits differ by less than the type's max_rel_err (relative to the largest logit), where
# either pick is within tolerance. (bf16 rounds every weight once: top-1 ~0.97, so it is not asked.)
GREEDY_TYPES = ("f32", "f16")
GREEDY_TOKENS = 8  # greedy continuation length compared


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    p = sub.add_parser("gguf", help="llama.cpp / Ollama GGUF files, verified, with a Modelfile each",
                       description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="run directory: converts RUN/merged into RUN/gguf")
    src.add_argument("--model", type=Path, help="a merged transformers model directory (needs --out)")
    p.add_argument("--out", type=Path, help="output directory (default with --run: RUN/gguf)")
    p.add_argument("--quant", default="f16,q8_0,q4_k_m",
                   help=f"comma-separated types from {', '.join(TOLERANCES)} (default: %(default)s)")
    p.add_argument("--name", help="file name stem (default: the run's or model directory's name)")
    p.add_argument("--force", action="store_true", help="replace a complete output instead of skipping")


def run(args: argparse.Namespace) -> int:
    model = args.model or args.run / "merged"
    out = args.out or (args.run / "gguf" if args.run else None)
    if out is None:
        raise UserError("--model needs --out (where to write the GGUF files)")
    quants = [q.strip().lower() for q in args.quant.split(",") if q.strip()]
    name = args.name or (args.run or (model.parent if model.name == "merged" else model)).resolve().name
    report = export_gguf(model, out, quants, name=name, force=args.force, run_dir=args.run)
    for entry in report["files"]:
        m = entry["logits"]
        state = "ok" if entry["passed"] else "FAILED: " + "; ".join(entry["failures"])
        print(f"  {entry['file']}: {entry['size_mb']:.1f} MB, rel err {m['max_rel_err']:.2e}, "
              f"mean cosine {m['mean_cosine']:.5f}, top-1 {m['top1']:.2f} - {state}")
    if not report["passed"]:
        print(f"export gguf: verification FAILED; nothing written to {out}")
        return 1
    print(f"export gguf: {out}{' (existing)' if report.get('skipped') else ''}: "
          + ", ".join(e["file"] for e in report["files"]) + " with a Modelfile each; checks in verify.json")
    return 0


def export_gguf(model_dir: Path, out_dir: Path, quants: list[str], *, name: str, force: bool = False,
                run_dir: Path | None = None) -> dict:
    """Convert, quantise, verify and (if every file passed) write `out_dir`; return the verify report.
    `run_dir`: the training run, whose run.json gives the template variables for the Modelfile."""
    unknown = [q for q in quants if q not in TOLERANCES]
    if unknown or not quants:
        raise UserError(f"unknown quant type(s) {', '.join(unknown) or '(none given)'}; "
                        f"choose from {', '.join(TOLERANCES)}")
    check_output_dir(out_dir, "GGUF output")
    done = existing_output(out_dir, force)
    if done:
        if done.get("quants") != quants:
            raise UserError(f"{out_dir} holds {', '.join(done.get('quants', []))}, not {', '.join(quants)}; "
                            "pass --force to replace it")
        return {**done, "skipped": True}
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    check_convertible(model_dir, config)
    try:
        import llama_cpp  # noqa: F401  (checked here, before minutes of conversion)
    except ImportError:
        raise UserError("llama-cpp-python is not installed; run scripts/install_export_tools.sh") from None

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    source = _lossless_type(config)
    converter_args = gguf_converter_args(config.architectures or [])
    with staging(out_dir, directory=True) as tmp:
        log = tmp / "llama.cpp.log"
        paths = {q: tmp / f"{name}-{q}.gguf" for q in quants}
        source_path = paths.get(source, tmp / f".source-{source}.gguf")
        print(f"export gguf: converting {model_dir} to {source} with llama.cpp's converter")
        tools.convert(model_dir, source_path, source, log, extra_args=converter_args)
        for q in quants:
            if q in tools.FLOAT_TYPES and q != source:
                print(f"export gguf: converting to {q}")
                tools.convert(model_dir, paths[q], q, log, extra_args=converter_args)
            elif q not in tools.FLOAT_TYPES:
                print(f"export gguf: quantising to {q}")
                tools.quantize(source_path, paths[q], q, log)
        if source not in quants:
            source_path.unlink()
        print("export gguf: verifying against the merged model")
        stops = stop_ids(model_dir)
        files = verify_files(model_dir, tokenizer, paths, stops)
        settings = modelfile_settings(tokenizer, stops, getattr(config, "max_position_embeddings", None),
                                      template_kwargs=_template_kwargs(run_dir))
        for path in paths.values():
            write_modelfile(path, settings)
        report = {
            "check": "each GGUF vs the merged model (float32): metadata, token ids, logits at every prompt position"
                     " and, for f32/f16 files, greedy continuations",
            "passed": all(f["passed"] for f in files),
            "model": str(model_dir),
            "quants": quants,
            "llama_cpp_python": tools.llama_cpp_version(),
            "files": files,
        }
        if report["passed"]:
            log.unlink(missing_ok=True)
            write_json(tmp / VERIFY_FILE, report)
            commit(tmp, out_dir)
    return report


def _lossless_type(config) -> str:
    """The GGUF float type holding the merged weights exactly: quantised files are made from it, so their only
    rounding is their own (an f16 step in between would add one to every bf16 or f32 weight)."""
    dtype = str(config.dtype).removeprefix("torch.") if config.dtype is not None else None
    return {"bfloat16": "bf16", "float16": "f16"}.get(dtype, "f32")


def read_config(model_dir: Path):
    """The merged model's transformers config (read once and passed around)."""
    from transformers import AutoConfig

    if not (Path(model_dir) / "config.json").is_file():
        raise UserError(f"{model_dir} has no config.json; --model must be a merged model directory")
    check_model_dir(Path(model_dir))
    try:
        return AutoConfig.from_pretrained(model_dir)
    except OSError as e:  # transformers' word for a config.json that is not JSON
        raise UserError(f"{model_dir}/config.json cannot be read: {str(e).splitlines()[0]}") from None
    except ValueError as e:  # a model_type transformers does not know: llama.cpp's converter has no class either
        raise UserError(f"llama.cpp's converter cannot convert {model_dir}: {e}") from None


def check_convertible(model_dir: Path, config=None) -> None:
    """Refuse, before any work, a model llama.cpp's converter has no class for (OPT, for one)."""
    config = config or read_config(model_dir)
    architectures = config.architectures or []
    supported = tools.supported_architectures(tools.converter_dir())
    if not any(a in supported for a in architectures):
        raise UserError(f"llama.cpp's converter cannot convert {', '.join(architectures) or 'this model'} "
                        f"(model_type {config.model_type!r}): it has no GGUF architecture for it; use the "
                        "merged transformers model instead")


def stop_ids(model_dir: Path) -> list[int]:
    """The merged model's generation-config stop (eos) ids, sorted."""
    from transformers import GenerationConfig

    eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
    return sorted(set(eos if isinstance(eos, list) else [eos]) - {None})


def verify_files(model_dir: Path, tokenizer, paths: dict[str, Path], stop_ids: list[int]) -> list[dict]:
    """Check every GGUF in `paths` (quant type -> file) against the merged model; one report entry per file."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompts = verification_prompts(tokenizer)
    ids = [token_ids(tokenizer, p) for p in prompts]
    reference = [hf_logits(model, i) for i in ids]
    greedy = [_hf_greedy(model, i) for i in ids]
    return [_verify_file(q, path, tokenizer, prompts, ids, reference, greedy, stop_ids) for q, path in paths.items()]


def _verify_file(quant, path, tokenizer, prompts, ids, reference, greedy, stop_ids) -> dict:
    import llama_cpp
    import numpy as np

    failures = []
    meta = _metadata(path)
    if meta.get("tokenizer.chat_template") != tokenizer.chat_template:
        failures.append("tokenizer.chat_template differs from the merged tokenizer's (the training template)")
    if meta.get("tokenizer.ggml.eos_token_id") != tokenizer.eos_token_id:
        failures.append(f"eos id {meta.get('tokenizer.ggml.eos_token_id')} != tokenizer's {tokenizer.eos_token_id}")

    llm = llama_cpp.Llama(str(path), logits_all=True, n_ctx=max(map(len, ids)) + GREEDY_TOKENS + 8,
                          n_threads=os.cpu_count(), verbose=False)
    try:
        # llama_vocab_is_eog is what stops llama.cpp's (and Ollama's) generation.
        tokens = llama_cpp.llama_model_get_vocab(llm.model)
        not_eog = [i for i in stop_ids if not llama_cpp.llama_vocab_is_eog(tokens, i)]
        if not_eog:
            failures.append(f"llama.cpp does not end generation on stop ids {not_eog}")
        mismatched = [n for n, (text, i) in enumerate(zip(prompts, ids))
                      if llm.tokenize(text.encode(), add_bos=False, special=True) != i]
        if mismatched:
            failures.append(f"llama.cpp tokenizes prompt(s) {mismatched} differently from transformers")
        candidate = []
        for i in ids:
            llm.reset()
            llm.eval(i)
            candidate.append(np.array(llm.scores[: len(i)], dtype=np.float64))
        # The converter may drop embedding rows past the tokenizer (Gemma) or pad them (Qwen): compare the rows
        # both have, which hold every token the tokenizer can produce.
        vocab = min(reference[0].shape[1], candidate[0].shape[1])
        continuations = [_llama_greedy(llm, i) for i in ids] if quant in GREEDY_TYPES else None
    finally:
        llm.close()
    metrics = compare_logits([r[:, :vocab] for r in reference], [c[:, :vocab] for c in candidate])
    failures += TOLERANCES[quant].failures(metrics)
    greedy_verdict, problem = (None, None) if continuations is None else _greedy_check(
        greedy, continuations, TOLERANCES[quant])
    failures += [problem] if problem else []
    return {
        "file": path.name,
        "quant": quant,
        "size_mb": path.stat().st_size / 2**20,
        "passed": not failures,
        "failures": failures,
        "metadata": {k: meta.get(k) for k in ("general.architecture", "tokenizer.ggml.pre",
                                              "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")},
        "stop_ids": stop_ids,  # each one ends llama.cpp's generation (else a failure above)
        "tokenizer_parity": not mismatched,
        "tolerance": TOLERANCES[quant].to_dict(),
        "logits": metrics,
        "greedy": greedy_verdict,
    }


def _metadata(path: Path) -> dict:
    """Scalar and string metadata of a GGUF file, read with the gguf package (arrays left out)."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(path)
    out = {}
    for key, field in reader.fields.items():
        if len(field.types) == 1 and field.types[0] != GGUFValueType.ARRAY:
            out[key] = field.contents()
    return out


def _hf_greedy(model, ids: list[int]) -> tuple[list[int], list]:
    """GREEDY_TOKENS argmax steps, stopping on nothing (both sides make as many tokens), with each step's logits."""
    import torch

    seq, steps = list(ids), []
    with torch.no_grad():
        for _ in range(GREEDY_TOKENS):
            # logits_to_keep=1: the last position only (a real vocabulary makes the others costly)
            steps.append(model(input_ids=torch.tensor([seq]), logits_to_keep=1).logits[0, -1].double().numpy())
            seq.append(int(steps[-1].argmax()))
    return seq[len(ids):], steps


def _greedy_check(reference: list[tuple[list[int], list]], continuations: list[list[int]],
                  tol: Tolerance) -> tuple[str, str | None]:
    """("equal" | "near-tie" | "differs", failure message or None). A near-tie: the first difference is a step
    where the merged model's two candidates are within tolerance of each other, after which the sequences may part."""
    verdict = "equal"
    for n, ((expected, steps), got) in enumerate(zip(reference, continuations)):
        k = next((k for k, (a, b) in enumerate(zip(expected, got)) if a != b), None)
        if k is None:
            continue
        margin = (steps[k][expected[k]] - steps[k][got[k]]) / abs(steps[k]).max()
        if margin > tol.max_rel_err:
            return "differs", (f"greedy continuation of prompt {n} parts at token {k}: llama.cpp {got} vs "
                               f"transformers {expected} (relative logit margin {margin:.3g} > {tol.max_rel_err})")
        verdict = "near-tie"
    return verdict, None


def _llama_greedy(llm, ids: list[int]) -> list[int]:
    import numpy as np

    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(GREEDY_TOKENS):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([out[-1]])
    return out


def _template_kwargs(run_dir: Path | None) -> dict:
    """The template variables training rendered with (Llama's date_string), from RUN/run.json's recipe."""
    info = read_run_info(run_dir) if run_dir else None
    return info.template_kwargs if info else {}
