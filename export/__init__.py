"""Export: merge a LoRA adapter into its base (`merge`), convert and quantise to GGUF with an Ollama Modelfile
(`export gguf`), and publish to the Hugging Face Hub (`publish`).

A merged model or a GGUF file is only useful if it behaves like the adapter that was evaluated, so each step checks
its output against its input on the same prompts (logits, tokens, template) and writes the numbers to `verify.json`.
Outputs are built in a temporary directory beside the target and renamed into place only after that check passed:
a final path holds a complete, verified artefact or nothing, whatever kills the process on the way.

This module holds what those checks share: the prompts, the logit comparison and the staging directory.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from dispatchtune.errors import UserError

VERIFY_FILE = "verify.json"  # written last inside a staged output: its presence marks the output complete

# A dispatch-style tool, and conversations covering what a tool-calling template renders: a plain turn, a system
# prompt with tools, and a full call-and-result exchange. Templates that refuse a shape (Gemma 3 has no `tool`
# role) skip that conversation; every template renders the first.
TOOLS = [{
    "type": "function",
    "function": {
        "name": "dispatch_unit",
        "description": "Send an emergency unit to a location.",
        "parameters": {
            "type": "object",
            "properties": {
                "unit": {"type": "string", "enum": ["ambulance", "fire", "police"], "description": "Unit type"},
                "address": {"type": "string", "description": "Street address"},
                "priority": {"type": "integer", "description": "1 (highest) to 3"},
            },
            "required": ["unit", "address"],
        },
    },
}]
_CALL = {"unit": "ambulance", "address": "12 Main Street", "priority": 1}
CONVERSATIONS: list[tuple[list[dict], list[dict] | None]] = [
    ([{"role": "user", "content": "What is the weather like in Paris today?"}], None),
    (
        [
            {"role": "system", "content": "You are a dispatcher. Call a tool when one applies."},
            {"role": "user", "content": "A man fell at 12 Main Street and is not moving. Send help!"},
        ],
        TOOLS,
    ),
    (
        [
            {"role": "user", "content": "Send an ambulance to 12 Main Street, priority 1."},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": "dispatch_unit", "arguments": _CALL}}]},
            {"role": "tool", "tool_call_id": "call_0", "name": "dispatch_unit", "content": '{"eta_minutes": 6}'},
        ],
        TOOLS,
    ),
]
# A model without a chat template (OPT) is checked on plain text.
PLAIN_PROMPTS = ["What is the weather like in Paris today?", "Dispatch an ambulance to 12 Main Street."]


def verification_prompts(tokenizer) -> list[str]:
    """The conversations rendered with the tokenizer's chat template (generation prompt added), as text."""
    if not tokenizer.chat_template:
        return list(PLAIN_PROMPTS)
    from jinja2 import TemplateError

    prompts = []
    for messages, tools in CONVERSATIONS:
        try:
            prompts.append(tokenizer.apply_chat_template(
                messages, tools=tools, add_generation_prompt=True, tokenize=False))
        except TemplateError:
            continue
    if not prompts:
        raise UserError("the chat template renders none of the verification conversations, not even a user turn")
    return prompts


def token_ids(tokenizer, text: str) -> list[int]:
    """Ids of already rendered text: the template wrote every special token, so none is added."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def hf_logits(model, ids: list[int]):
    """Logits at every position of one sequence, as a float64 numpy array (positions x vocabulary)."""
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], device=model.device))
    return out.logits[0].double().cpu().numpy()


@dataclass(frozen=True)
class Tolerance:
    """How close candidate logits must be to the reference: relative max error, mean cosine, top-1 agreement.

    Mean cosine and top-1 share are what llama.cpp's own quantisation reports gate on (with KL divergence); the
    worst position's cosine is recorded too, but a single near-flat position of a random test model says little.
    """

    max_rel_err: float
    min_mean_cosine: float
    min_top1: float

    def failures(self, metrics: dict) -> list[str]:
        out = []
        if metrics["max_rel_err"] > self.max_rel_err:
            out.append(f"relative max logit error {metrics['max_rel_err']:.3g} > {self.max_rel_err}")
        if metrics["mean_cosine"] < self.min_mean_cosine:
            out.append(f"mean cosine {metrics['mean_cosine']:.6f} < {self.min_mean_cosine}")
        if metrics["top1"] < self.min_top1:
            out.append(f"top-1 agreement {metrics['top1']:.3f} < {self.min_top1}")
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def compare_logits(reference: list, candidate: list) -> dict:
    """Agreement of two models' logits on the same sequences (each a positions x vocabulary array).

    `max_rel_err` is the largest absolute difference over the largest reference magnitude, so it does not blow
    up on logits near zero; cosines are per position; `top1` is the share of positions whose argmax agrees.
    """
    import numpy as np

    ref, cand = np.concatenate(reference), np.concatenate(candidate)
    if ref.shape != cand.shape:
        raise ValueError(f"logit shapes differ: {ref.shape} vs {cand.shape}")
    cosine = (ref * cand).sum(-1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(cand, axis=-1))
    return {
        "max_rel_err": float(np.abs(ref - cand).max() / np.abs(ref).max()),
        "mean_cosine": float(cosine.mean()),
        "min_cosine": float(cosine.min()),
        "top1": float((ref.argmax(-1) == cand.argmax(-1)).mean()),
        "positions": int(ref.shape[0]),
    }


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def verified_report(stage_dir: Path) -> dict | None:
    """The verify report in `stage_dir` if it says the output passed, else None (missing, unreadable or failed)."""
    try:
        report = json.loads((stage_dir / VERIFY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and report.get("passed") else None


def existing_output(final: Path, force: bool) -> dict | None:
    """The verify report of a complete output at `final` (to skip the work), or None if there is none (or --force).

    Anything else at `final` is not ours to overwrite without --force.
    """
    if force or not final.exists() or (final.is_dir() and not any(final.iterdir())):
        return None
    report = verified_report(final)
    if report is None:
        if not (final / VERIFY_FILE).is_file():
            raise UserError(f"{final} exists but is not a complete output; remove it or pass --force")
        raise UserError(f"{final} holds an output that failed verification; remove it or pass --force")
    return report


@contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A fresh directory beside `final` (same file system, so the final rename is atomic), removed on the way out.

    Its name carries this process's id, so a stage starting again removes what killed runs left (each can be a
    full model copy) and leaves alone a stage another live process is running. It gets the permissions of a
    directory made with mkdir (mkdtemp's are 0700), since it becomes the output.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-{os.getpid()}-", dir=final.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_staging(final: Path) -> None:
    """Remove the staging directories of `final` whose process is gone (killed, or out of memory)."""
    for old in final.parent.glob(f".{glob.escape(final.name)}.partial-*"):
        pid = old.name.removeprefix(f".{final.name}.partial-").split("-")[0]
        if not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def move_into_place(tmp: Path, final: Path) -> None:
    """Rename a finished staging directory to `final`, replacing what is there (only reached with --force)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
    tmp.rename(final)
    if old:
        shutil.rmtree(old, ignore_errors=True)
