"""Recipes: one YAML file per model, read into dataclasses, with `section.key=value` overrides on the command line.

A recipe has seven sections. `model`, `lora`, `data`, `run`, `eval` and `export` are the dataclasses below (`eval`
and `export`, and `data`'s prep settings, are read by `dispatchtune run` only); `training` is TRL's `SFTConfig`,
field for field, so everything TRL documents can be set there. Each section is parsed the way
`trl.TrlParser` reads a `--config` file: the values become argparse defaults, and argparse converts strings with the
field's type (PyYAML reads `1e-4` as a string; here it becomes a float). A key that is not a field is an error
naming its section and the closest field, rather than TrlParser's silent pass-through.

Defaults that depend on the machine (bf16, gradient checkpointing, Liger) or on the run directory (output_dir,
report_to, run_name) sit beneath the recipe's own `training` values, so a recipe states only what it means.
Path values expand environment variables (`run.dir=runs/sweep/$WANDB_RUN_ID` gives each sweep run its own directory).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dispatchtune.errors import UserError


@dataclass
class ModelArgs:
    name_or_path: str  # a Hub id, a local directory, or `tiny:<family>` (a tiny random model, built once and cached)
    chat_template: str | None = None  # None: the tokenizer's own; a name in dispatchtune/templates; or a .jinja path
    template_kwargs: dict | None = None  # extra variables for the template (Llama's `date_string`)
    dtype: str = "auto"  # auto: bfloat16 where the GPU has it, else float32; or bfloat16 / float16 / float32
    attn_implementation: str = "auto"  # auto: flash_attention_2 where CUDA has it (or `kernels`), else sdpa
    trust_remote_code: bool = False


@dataclass
class LoraArgs:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"  # module names, "all-linear", or a PEFT regex
    qlora: bool = False  # 4-bit NF4 base (bitsandbytes, double quantisation, bf16 compute); needs CUDA


@dataclass
class DataArgs:
    train: str | None = None  # default RUN/data/train.jsonl
    heldout: str | None = None  # default RUN/data/heldout.jsonl (eval loss when training.eval_strategy is set)
    # `dispatchtune run`'s prep into RUN/data; None leaves prep's own default. No inputs: train on data.train as it is.
    inputs: list[str] | None = None  # input files or globs, relative to the working directory
    split_by: str | None = None  # query, tool or category
    heldout_frac: float | None = None
    heldout_tools_in_train: str | None = None  # with split_by tool: strip, drop or keep (see `prep --help`)
    max_tokens: int | None = None  # set: render each sample in the training format (model.chat_template), reject longer


@dataclass
class RunArgs:
    dir: str | None = None  # RUN; default runs/<recipe file name>
    name: str | None = None  # the wandb run name; default RUN's folder name
    wandb_project: str | None = None  # set: report_to wandb
    wandb_entity: str | None = None
    wandb_tags: list[str] | None = None


@dataclass
class EvalArgs:
    """`dispatchtune run`'s evaluation and gate. None leaves `eval run`'s own default."""

    max_new_tokens: int | None = None
    batch_size: int | None = None
    max_cases: int | None = None  # a seeded sample of the held-out cases, to bound eval time (the suite comes whole)
    suite: str | None = None  # a built-in suite added to the held-out cases: dispatch
    min_score: float | None = None  # gate: the adapter's overall AST match must reach this rate (0-1)
    must_beat_base: bool = True  # gate: and be above the base model's, on the same cases


@dataclass
class ExportArgs:
    quants: list[str] = field(default_factory=lambda: ["f16", "q8_0", "q4_k_m"])  # GGUF types; [] for no GGUF
    allow_unknown_pretokenizer: bool = False  # only for tokenizers trained locally (the tiny models)


@dataclass
class Recipe:
    path: Path
    model: ModelArgs
    lora: LoraArgs
    data: DataArgs
    run: RunArgs
    eval: EvalArgs
    export: ExportArgs
    training: Any  # trl.SFTConfig
    training_keys: list[str] = field(default_factory=list)  # the training fields the recipe or our defaults set

    @property
    def dir(self) -> Path:
        return Path(self.run.dir)

    def to_dict(self) -> dict:
        """The resolved recipe: every field of our sections, and the `training` fields set by the recipe, its
        overrides or our machine defaults (the rest are TRL's defaults of the recorded version)."""
        training = self.training.to_dict()
        return {
            "path": str(self.path),
            **{name: dataclasses.asdict(getattr(self, name)) for name in OUR_SECTIONS},
            "training": {k: training[k] for k in self.training_keys},
        }


SECTIONS = {"model": ModelArgs, "lora": LoraArgs, "data": DataArgs, "run": RunArgs, "eval": EvalArgs,
            "export": ExportArgs, "training": None}
OUR_SECTIONS = [name for name, cls in SECTIONS.items() if cls]


def load_recipe(path: str | Path, overrides: list[str] = (), *, prep_inputs: bool = False) -> Recipe:
    """The recipe at `path` with `section.key=value` overrides applied; UserError for any unknown key or bad value.
    prep_inputs (`dispatchtune run`): data.inputs are prepared into RUN/data, where training reads them, so the
    recipe may set data.inputs or data.train/data.heldout, not both."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe file {path} not found; pass one of recipes/*.yaml or a path to your own")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, dict | None) for v in raw.values()):
        raise UserError(f"recipe {path} must be a mapping of sections ({', '.join(SECTIONS)}) to mappings")
    raw = {name: dict(values or {}) for name, values in raw.items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not (sep and dot and name):
            raise UserError(f"override {item!r} is not section.key=value (e.g. training.learning_rate=1e-4)")
        # Scalars stay strings for argparse to convert with the field's type (so `no` stays "no", not False);
        # null, [..] and {..} are read as YAML.
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value  # not YAML, so a plain string
        raw.setdefault(section, {})[name] = parsed if parsed is None or isinstance(parsed, list | dict) else value
    for section in raw:
        if section not in SECTIONS:
            raise UserError(f"unknown recipe section {section!r}{_suggest(section, SECTIONS)}")

    model, lora, data, run, eval_, export = (_parse(s, SECTIONS[s], raw.get(s, {})) for s in OUR_SECTIONS)
    if prep_inputs and data.inputs and (data.train is not None or data.heldout is not None):
        raise UserError("data.inputs are prepared into RUN/data, where training reads them; "
                        "set either data.inputs or data.train/data.heldout, not both")
    run.dir = os.path.expandvars(run.dir or f"runs/{path.stem}")
    run.name = run.name or Path(run.dir).name
    data.train = os.path.expandvars(data.train or f"{run.dir}/data/train.jsonl")
    data.heldout = os.path.expandvars(data.heldout or f"{run.dir}/data/heldout.jsonl")
    if not model.name_or_path:
        raise UserError(f"recipe {path} sets no model.name_or_path (a Hub id, a local directory or tiny:<family>)")
    if isinstance(run.wandb_tags, str):
        run.wandb_tags = [run.wandb_tags]
    if isinstance(data.inputs, str):
        data.inputs = [data.inputs]
    if isinstance(export.quants, str):  # export.quants=f16,q8_0 as `export gguf --quant` takes it
        export.quants = [q for q in export.quants.split(",") if q]

    from trl import SFTConfig

    training = _machine_defaults(run, raw.get("training", {})) | raw.get("training", {})
    return Recipe(path, model, lora, data, run, eval_, export, _parse("training", SFTConfig, training),
                  list(training))


def _machine_defaults(run: RunArgs, training: dict) -> dict:
    """Our `training` defaults: packed padding-free batches, and the fast paths this machine has."""
    import torch

    cuda = torch.cuda.is_available()
    # transformers 5 renamed gradient_checkpointing (TRL defaults it to True); the new name wins when both are set
    checkpointing = "gradient_checkpointing" if "gradient_checkpointing" in training else "activation_checkpointing"
    return {
        "output_dir": f"{run.dir}/checkpoints",
        "run_name": run.name,
        "report_to": "wandb" if run.wandb_project else "none",
        "packing": True,
        "packing_strategy": "bfd",  # best-fit decreasing, padding-free: no compute spent on pad tokens
        "bf16": cuda and torch.cuda.is_bf16_supported(),
        checkpointing: cuda,  # memory for longer packed sequences; on CPU the tiny models do not need it
        "use_liger_kernel": cuda and importlib.util.find_spec("liger_kernel") is not None,
    }


def _parse(section: str, cls: type, values: dict):
    from trl import TrlParser

    class Parser(TrlParser):
        def error(self, message):  # argparse would print usage and exit; a recipe mistake is a UserError
            raise UserError(re.sub(r"(argument )?--(\w+)(/--[\w-]+)*", rf"{section}.\2", message))

    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in values:
        if key not in names:
            raise UserError(f"unknown recipe key {section}.{key}{_suggest(key, names)}")
    parser = Parser([cls])
    parser.set_defaults_with_config(**{key: _as_arg(value) for key, value in values.items()})
    try:
        (parsed,) = parser.parse_args_into_dataclasses(args=[], look_for_args_file=False)
    except ValueError as e:  # a dataclass's own checks (SFTConfig.__post_init__)
        raise UserError(f"recipe section {section}: {e}") from None
    return parsed


def _as_arg(value):
    """Scalars as the strings argparse converts with the field's type, so `lora.r: 1.5` is an error, not 1.5."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if isinstance(value, int | float) else value


def _suggest(word: str, choices) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    if len(choices) > 10:
        return " (training takes the fields of trl.SFTConfig)"
    return f"; expected one of: {', '.join(choices)}"
