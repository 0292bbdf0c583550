"""The model card (README.md) a published run carries: Hub metadata, the tool-call format, usage, and the evidence.

The card is written only from files earlier stages left in RUN: the adapter's config and tokenizer (the base model,
the chat template; a full fine-tune's RUN/adapter holds the model itself, and the card says so), run.json (the
recipe, data and loss), RUN/eval/*/report.json (scores, base vs adapter vs GGUF), RUN/merged/verify.json and
RUN/gguf/verify.json (export parity). What is missing is said to be missing ("not evaluated"), never filled in.
Nothing from the environment goes in, so no token can.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from dispatchtune.runinfo import RunInfo, is_full_model, read_run_info
from dispatchtune.families import template_of
from dispatchtune.train.mask import end_of_turn_token

from .merge import read_adapter_config

TAGS = ["tool-calling", "function-calling", "dispatchtune", "lora"]


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def model_card(run_dir: Path, repo_id: str, *, include: list[str], datasets: list[str], license: str | None) -> str:
    """README.md text for the repo `repo_id` built from RUN (`include`: "merged", "gguf" also uploaded)."""
    from transformers import AutoTokenizer

    adapter = run_dir / "adapter"
    adapter_config = None if is_full_model(adapter) else read_adapter_config(adapter)  # None: a full fine-tune
    run = read_run_info(run_dir)
    base = (run and run.base_model) or (adapter_config and adapter_config.base_model_name_or_path) or ""
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    gguf = read_json(run_dir / "gguf" / "verify.json") if "gguf" in include else None
    merged = read_json(run_dir / "merged" / "verify.json") if "merged" in include else None
    what = (f"A LoRA adapter that turns `{base or 'its base model'}`" if adapter_config else
            f"A full fine-tune (every weight trained) of `{base or 'its base model'}`, turning it")
    metadata = {
        **({"base_model": base} if _is_hub_id(base) else {}),
        "library_name": "peft" if adapter_config else "transformers",
        "pipeline_tag": "text-generation",
        "tags": [t for t in TAGS if adapter_config or t != "lora"] + (["gguf"] if gguf else []),
        **({"datasets": datasets} if datasets else {}),
        "license": license or "other",
    }
    name = repo_id.split("/")[-1]
    sections = [
        f"---\n{yaml.safe_dump(metadata, sort_keys=False)}---\n",
        f"# {name}\n\n{what} into a tool-calling dispatch model, "
        "trained with dispatchtune on tool-call traces (loss on the assistant turns only)."
        + ("" if license else " Its license is the base model's; see the base model card."),
        _format_section(tokenizer, run and run.template_kwargs, "adapter" if adapter_config else "model"),
        _usage_section(repo_id, base, gguf, merged, full=adapter_config is None),
        _eval_section(run_dir),
        _recipe_section(run, adapter_config),
        _verification_section(merged, gguf),
    ]
    return "\n\n".join(s.strip() for s in sections if s) + "\n"


def _is_hub_id(name: str) -> bool:
    """A Hub model id (owner/name) rather than a local path or a `tiny:` test model."""
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", name or "")) and not Path(name).exists()


def _format_section(tokenizer, template_kwargs: dict | None, saved_with: str) -> str:
    template = tokenizer.chat_template
    if not template:
        return "## Prompt format\n\nThe tokenizer has no chat template."
    known = template_of(template)
    name = known.name if known else None
    fmt = (known.call_format.description if known and known.call_format
           else "as the chat template below renders `tool_calls`")
    return (
        "## Prompt and tool-call format\n\n"
        f"The chat template saved with the {saved_with} is the one used in training "
        f"({f'`{name}`' if name else 'custom'}); "
        "render prompts with `tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True"
        + "".join(f", {k}={v!r}" for k, v in (template_kwargs or {}).items()) + ")`"
        + (" (the template variables training used)" if template_kwargs else "") + ". "
        f"The model calls tools {fmt}. A turn ends with `{end_of_turn_token(tokenizer)}`: "
        "stop generation there.\n\n<details><summary>Chat template (Jinja)</summary>\n\n"
        f"```jinja\n{template.strip()}\n```\n\n</details>"
    )


def _usage_section(repo_id: str, base: str, gguf: dict | None, merged: dict | None, full: bool) -> str:
    base_ref = base if _is_hub_id(base) else "BASE_MODEL"
    if full:
        imports = "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        load = f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")\n'
    else:
        imports = "from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        load = f'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base_ref}"), "{repo_id}")\n'
    parts = [
        f"## Usage\n\n### transformers{'' if full else ' + PEFT'}\n\n```python\n{imports}"
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")  # carries the training chat template\n{load}'
        'tools = [{"type": "function", "function": {"name": "dispatch_unit", "description": "Send a unit.",\n'
        '          "parameters": {"type": "object", "properties": {"address": {"type": "string"}}}}}]\n'
        'messages = [{"role": "user", "content": "Send an ambulance to 12 Main Street."}]\n'
        "inputs = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,\n"
        '                                       return_tensors="pt", return_dict=True)\n'
        "out = model.generate(**inputs, max_new_tokens=128, do_sample=False)\n"
        'print(tokenizer.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))\n```'
    ]
    if merged:
        what = (f"A copy in the base's dtype ({merged['dtype']}), whose generation config stops at the end of a turn,"
                if full else "The merged model (adapter folded into the base, same dtype)")
        parts.append(f"{what} is in `merged/`:\n\n```python\n"
                     f'model = AutoModelForCausalLM.from_pretrained("{repo_id}", subfolder="merged")\n```')
    if gguf:
        files = [f["file"] for f in gguf["files"]]
        pick = next((f for f in files if "q4_k_m" in f), files[0])
        parts.append(
            "### llama.cpp and Ollama\n\n"
            f"GGUF files in `gguf/`: {', '.join(f'`{f}`' for f in files)}, each with an Ollama `Modelfile` whose "
            "template renders tools and calls like the training template.\n\n```bash\n"
            f"hf download {repo_id} --include 'gguf/*' --local-dir {repo_id.split('/')[-1]}\n"
            f"cd {repo_id.split('/')[-1]}/gguf\n"
            f"llama-server -m {pick} --jinja            # OpenAI-compatible, tools via the embedded chat template\n"
            f"ollama create {repo_id.split('/')[-1].lower()} -f {Path(pick).with_suffix('.Modelfile')}"
            "   # temperature 0, the template's stop tokens\n```"
        )
    return "\n\n".join(parts)


def _eval_section(run_dir: Path) -> str:
    """The eval stage's own comparison table over every scored run in RUN/eval (base, adapter, GGUF)."""
    reports = sorted(p.parent for p in (run_dir / "eval").glob("*/report.json"))
    if not reports:
        return "## Evaluation\n\nNot evaluated."
    from dispatchtune.eval.compare import load_runs, markdown

    table = re.sub(r"^## ", "### ", markdown(load_runs(reports)), flags=re.M)
    return ("## Evaluation\n\nHeld-out tool-call cases scored by `dispatchtune eval` (BFCL-style AST match; rates "
            f"with Wilson 95% intervals).\n\n{table}")


def _recipe_section(run: RunInfo | None, adapter_config) -> str:
    """The training table; `adapter_config` None for a full fine-tune (no LoRA rows, and says so)."""
    info = run or RunInfo()
    recipe = info.recipe
    lora = {
        "LoRA rank / alpha / dropout": " / ".join(str(x) for x in (
            adapter_config.r, adapter_config.lora_alpha, adapter_config.lora_dropout)),
        "target modules": adapter_config.target_modules if isinstance(adapter_config.target_modules, str)
        else ", ".join(sorted(adapter_config.target_modules or [])),
        "QLoRA (4-bit base)": info.qlora,
    } if adapter_config else {"fine-tuning": "full: every weight trained"}
    rows = {
        "base model": info.base_model or (adapter_config and adapter_config.base_model_name_or_path),
        **lora,
        "training data": _data(info.data.get("train") or {}),
        "steps": info.metrics.get("steps"),
        "loss first -> last": _loss(info.metrics),
        "library versions": ", ".join(f"{k} {v}" for k, v in info.versions.items()),
    }
    table = "\n".join(f"| {k} | {v} |" for k, v in rows.items() if v not in (None, "", " /  / "))
    section = "## Training\n\n| | |\n|---|---|\n" + table if table else "## Training"
    if recipe:
        shown = {k: v for k, v in recipe.items() if k in ("model", "lora", "training") and v}
        section += ("\n\n<details><summary>Recipe (from run.json)</summary>\n\n```yaml\n"
                    f"{yaml.safe_dump(shown, sort_keys=False).strip()}\n```\n\n</details>")
    elif run is None:
        section += "\n\nNo run.json: the training recipe is not known."
    return section


def _data(train: dict) -> str | None:
    if "samples" not in train:
        return None
    return (f"{train['samples']} samples, {train.get('tool_calls', '?')} tool calls, "
            f"{train.get('trained_tokens', '?')} trained tokens")


def _loss(metrics: dict) -> str | None:
    first, last = metrics.get("first_loss"), metrics.get("last_loss")
    return f"{first:.3f} -> {last:.3f}" if first is not None and last is not None else None


def _verification_section(merged: dict | None, gguf: dict | None) -> str:
    blocks = []
    if merged:
        m = merged["metrics"]
        reference = "the trained model" if merged.get("finetune") == "full" else "base+adapter"
        blocks.append(f"Merged model vs {reference} on {merged['prompts']} rendered prompts ({m['positions']} "
                      f"positions): max relative logit error {m['max_rel_err']:.1e}, mean cosine "
                      f"{m['mean_cosine']:.6f}, top-1 agreement {m['top1']:.3f} ({merged['dtype']}).")
    if gguf:
        rows = ["| file | size | max rel. error | mean cosine | top-1 | greedy vs transformers | verified |",
                "|---|---:|---:|---:|---:|---|---|"]
        for f in gguf["files"]:
            m = f["logits"]
            greedy = f.get("greedy") or "-"
            rows.append(f"| {f['file']} | {f['size_mb']:.1f} MB | {m['max_rel_err']:.1e} | {m['mean_cosine']:.5f} "
                        f"| {m['top1']:.3f} | {greedy} | {'yes' if f['passed'] else 'no'} |")
        blocks.append("Each GGUF file vs the merged model: llama.cpp's tokenizer gives the same token ids, the "
                      "metadata carries the training chat template and stop tokens, and next-token logits agree:\n\n"
                      + "\n".join(rows))
    return "\n\n".join(["## Export checks", *blocks]) if blocks else ""
