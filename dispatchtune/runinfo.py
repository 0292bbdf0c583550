"""RUN/run.json: what `dispatchtune train` records about a finished run (the resolved recipe, the model as loaded,
the data's hashes and counts, metrics, the wandb run, library versions), read and written only here.

Train writes it last, so its presence marks the training stage complete; eval reads the template variables training
rendered with and the wandb run to log into, export the QLoRA flag and the template variables, the model card the
rest. Every section may be missing (a run.json written by hand, or by an older version); one that is there has its
type, or the file is the user's to fix. `is_full_model` tells the two kinds of RUN/adapter apart (a LoRA adapter, or
a full fine-tune's whole model) for every stage that reads one."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import write_text
from .errors import UserError

RUN_INFO = "run.json"
_OBJECTS = ("recipe", "model", "mask", "data", "metrics", "versions")  # JSON objects; `git` may also be null
_STRINGS = ("resumed_from", "wandb_run_id", "wandb_project", "wandb_entity", "wandb_dir", "finished")  # or null


@dataclass
class RunInfo:
    recipe: dict = field(default_factory=dict)  # the resolved recipe (train.config.Recipe.to_dict())
    model: dict = field(default_factory=dict)  # name_or_path, resolved path, model_init_kwargs, qlora, finetune
    mask: dict = field(default_factory=dict)  # how the assistant tokens were found: method, end_of_turn
    data: dict = field(default_factory=dict)  # train: path, sha256 and counts; heldout: path, sha256
    metrics: dict = field(default_factory=dict)  # losses, steps, runtime, processes
    resumed_from: str | None = None  # the checkpoint training continued from
    wandb_run_id: str | None = None
    wandb_project: str | None = None
    wandb_entity: str | None = None
    wandb_dir: str | None = None
    versions: dict = field(default_factory=dict)  # library -> version
    git: dict | None = None  # the commit and dirty flag of the checkout, when run from one
    finished: str | None = None  # ISO time

    @property
    def template_kwargs(self) -> dict:
        """The chat template variables training rendered with (the recipe's `model.template_kwargs`)."""
        return (self.recipe.get("model") or {}).get("template_kwargs") or {}

    @property
    def qlora(self) -> bool | None:
        """Whether training ran on a 4-bit base; None where run.json does not say."""
        return self.model.get("qlora")

    @property
    def finetune(self) -> str:
        """lora (RUN/adapter is a LoRA adapter; also where run.json predates the key) or full (the whole model)."""
        return self.model.get("finetune") or "lora"

    @property
    def base_model(self) -> str | None:
        """The base model as the recipe named it (a Hub id, a path or `tiny:<family>`)."""
        return self.model.get("name_or_path")

    def wandb_target(self) -> dict | None:
        """The wandb run training logged into, for eval to add its scores to: {"id", "project", "entity"}."""
        if not self.wandb_run_id:
            return None
        return {"id": self.wandb_run_id, "project": self.wandb_project, "entity": self.wandb_entity}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def is_full_model(adapter_dir: Path) -> bool:
    """Whether a RUN/adapter-style directory holds a whole model (a full fine-tune: config.json and weights, no
    adapter_config.json), to load as the model itself rather than apply to a base."""
    adapter_dir = Path(adapter_dir)
    return (adapter_dir / "config.json").is_file() and not (adapter_dir / "adapter_config.json").is_file()


def read_run_info(run_dir: Path) -> RunInfo | None:
    """RUN/run.json, or None where there is none; a file that is no run.json is a UserError that names it."""
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not JSON ({e}); restore it or remove the run directory's run.json") from None
    problem = _problem(data)
    if problem:
        raise UserError(f"{path} is not a run.json that `dispatchtune train` writes: {problem}")
    return RunInfo(**data)


def write_run_info(run_dir: Path, info: RunInfo) -> Path:
    """RUN/run.json, renamed into place once written; returns its path."""
    path = Path(run_dir) / RUN_INFO
    write_text(path, json.dumps(info.to_dict(), indent=2) + "\n")
    return path


def _problem(data) -> str | None:
    if not isinstance(data, dict):
        return f"a JSON object expected, got {type(data).__name__}"
    known = {f.name for f in dataclasses.fields(RunInfo)}
    unknown = sorted(set(data) - known)
    if unknown:
        return f"unknown key {unknown[0]!r}"
    for key, value in data.items():
        wrong_object = key in _OBJECTS and not isinstance(value, dict)
        if wrong_object or key == "git" and not isinstance(value, (dict, type(None))):
            return f"{key} must be an object, got {type(value).__name__}"
        if key in _STRINGS and not isinstance(value, (str, type(None))):
            return f"{key} must be a string or null, got {type(value).__name__}"
    model = data.get("recipe", {}).get("model")
    if model is not None and not isinstance(model, dict):
        return f"recipe.model must be an object, got {type(model).__name__}"
    if not isinstance((model or {}).get("template_kwargs") or {}, dict):
        return "recipe.model.template_kwargs must be an object"
    if not isinstance(data.get("model", {}).get("qlora"), (bool, type(None))):
        return "model.qlora must be true, false or null"
    if data.get("model", {}).get("finetune") not in ("lora", "full", None):
        return "model.finetune must be lora, full or null"
    if not isinstance(data.get("model", {}).get("name_or_path"), (str, type(None))):
        return "model.name_or_path must be a string"
    return None
