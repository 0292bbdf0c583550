"""Which checkpoint a resumed run continues from: the last complete one, never one that a kill or a full disk cut short.

transformers' `get_last_checkpoint` takes the highest `checkpoint-N` directory, complete or not, and resuming from a
half-written one fails for good (`Can't find a valid checkpoint`, or a missing `trainer_state.json`). A checkpoint is
complete when it holds what `Trainer._load_from_checkpoint` and the state loaders read, whole:
- `trainer_state.json`, readable, with its `global_step`: `Trainer._save_checkpoint` writes it last, after the
  weights, optimizer, scheduler and RNG states, so its presence says the others were written before it;
- the weights: the adapter (`adapter_model.safetensors`/`.bin`), a full model, or FSDP's shards;
- unless the run saves only the model (`save_only_model`): the optimizer state (`optimizer.pt`, per-rank files, or
  FSDP/DeepSpeed directories) and, outside DeepSpeed, `scheduler.pt`;
- and every weight or state file in it intact: a safetensors file as long as its header says, a `torch.save` file
  with its zip directory (written last, so a cut file has none).
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
from pathlib import Path

_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "model.safetensors.index.json",
           "pytorch_model.bin", "pytorch_model.bin.index.json")


def last_complete_checkpoint(output_dir: Path, *, with_optimizer: bool = True) -> tuple[Path | None, list[str]]:
    """The complete checkpoint with the highest step in `output_dir` (None when there is none), and for each newer
    incomplete one, `checkpoint-N (why)`."""
    found = sorted((int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir()
                   and (m := _CHECKPOINT.fullmatch(p.name))) if output_dir.is_dir() else []
    skipped = []
    for _, path in reversed(found):
        problem = incomplete(path, with_optimizer=with_optimizer)
        if problem is None:
            return path, skipped
        skipped.append(f"{path.name} ({problem})")
    return None, skipped


def incomplete(checkpoint: Path, *, with_optimizer: bool = True) -> str | None:
    """What is missing or cut short in a checkpoint directory, or None when it is complete."""
    state = checkpoint / "trainer_state.json"
    try:
        if not isinstance(json.loads(state.read_text(encoding="utf-8")).get("global_step"), int):
            return "trainer_state.json has no global_step"
    except FileNotFoundError:
        return "no trainer_state.json: the save did not finish"
    except (OSError, ValueError, AttributeError) as e:
        return f"trainer_state.json unreadable ({type(e).__name__})"
    names = {p.name for p in checkpoint.iterdir()}
    if not names & set(WEIGHTS) and not any(n.startswith("pytorch_model_fsdp") for n in names):
        return "no model or adapter weights"
    if with_optimizer:
        deepspeed = any(n.startswith("global_step") for n in names)
        if not any(n == "optimizer.pt" or n.endswith("-optimizer.pt") or n.startswith("optimizer_") for n in names) \
                and not deepspeed:
            return "no optimizer state"
        if "scheduler.pt" not in names and not deepspeed:
            return "no scheduler.pt"
    for path in sorted(checkpoint.iterdir()):
        problem = _cut_short(path)
        if problem:
            return f"{path.name} {problem}"
    return None


def _cut_short(path: Path) -> str | None:
    """Why a weight or state file is not whole, or None (other files, and directories, are not judged)."""
    if path.suffix == ".safetensors":
        try:
            with open(path, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (OSError, ValueError, struct.error, KeyError, TypeError, IndexError):
            return "has no readable safetensors header"
        if path.stat().st_size < 8 + length + end:
            return f"is cut short ({path.stat().st_size} of {8 + length + end} bytes)"
    elif path.suffix in (".pt", ".pth", ".bin"):
        try:
            zipfile.ZipFile(path).close()
        except (OSError, zipfile.BadZipFile):
            return "is cut short (no zip directory at its end)"
    return None
