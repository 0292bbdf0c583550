"""Recipes: one YAML file per model, read into dataclasses, with `section.key=value` overrides on the command line.

A recipe has seven sections. `model`, `data`, `run`, `eval` and `export` are the dataclasses below (`eval` and
`export`, and `data`'s prep settings, are read by `dispatchtune run` only); `lora` is PEFT's `LoraConfig` and
`training` is TRL's `SFTConfig`, field for field, so everything PEFT and TRL document can be set there (DoRA with
`lora.use_dora`, rsLoRA with `lora.use_rslora`, `modules_to_save`, `layers_to_transform`, ...). With
`model.finetune=full` every weight trains and the `lora` section, still parsed and checked (so a shared recipe can
switch modes by one override), is not used; train says so. Sections are parsed the way `trl.TrlParser` reads a
`--config` file: the values become argparse defaults, and argparse converts strings with the field's type (PyYAML
reads `1e-4` as a string; here it becomes a float). `LoraConfig`'s union-typed fields are more than argparse can
take, so `lora` goes through pydantic, which converts by the same annotations. A key that is not a field is an error
naming its section and the closest field, rather than TrlParser's silent pass-through.

Defaults that depend on the machine (bf16, gradient checkpointing, Liger, pinned memory) or on the run directory
(output_dir, report_to, run_name) sit beneath the recipe's own `training` values, and LORA_DEFAULTS beneath its `lora`
values, so a recipe states only what it means. Path values expand environment variables
(`run.dir=runs/sweep/$WANDB_RUN_ID` gives each sweep run its own directory).

Values the types allow but training cannot use (a negative learning rate, `lora.r=0`, `training.max_steps=0`, an
unknown dtype...) are refused by `check_values`, here, before any model loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import importlib.util
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dispatchtune.errors import UserError
from dispatchtune.paths import check_output_dir

from . import catalog


@dataclass
class ModelArgs:
    name_or_path: str  # a Hub id, a local directory, or `tiny:<family>` (a tiny random model, built once and cached)
    chat_template: str | None = None  # None: the tokenizer's own; a name in dispatchtune/templates; or a .jinja path
    template_kwargs: dict | None = None  # extra variables for the template (Llama's `date_string`)
    # lora: train a LoRA adapter (the `lora` section); full: train every weight, without PEFT. RUN/adapter then
    # holds the whole model (weights, tokenizer, generation config) and the `lora` section is not used.
    finetune: str = "lora"
    # auto: with lora, the frozen base in bfloat16 where the GPU has it, else float32; with full, float32 (the
    # weights AdamW updates; training.bf16 still computes in bfloat16). Or bfloat16 / float16 / float32.
    dtype: str = "auto"
    attn_implementation: str = "auto"  # auto: flash_attention_2 where CUDA has it (or `kernels`), else sdpa
    qlora: bool = False  # QLoRA: the base loaded in 4-bit NF4 (bitsandbytes, double quantisation, bf16 compute); CUDA
    trust_remote_code: bool = False


FINETUNES = ("lora", "full")
# Our `lora` defaults, beneath the recipe's values (PEFT's own are r=8, alpha 8, no dropout, q_proj/v_proj only).
LORA_DEFAULTS = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}
# LoraConfig fields PEFT fills in itself when it builds or saves the adapter; a recipe setting them would break it.
LORA_RESERVED = ("task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision",
                 "inference_mode")


@dataclass
class DataArgs:
    train: str | None = None  # default RUN/data/train.jsonl
    heldout: str | None = None  # default RUN/data/heldout.jsonl (eval loss when training.eval_strategy is set)
    # `dispatchtune run`'s prep into RUN/data; None leaves prep's own default. No inputs: train on data.train as it is.
    inputs: list[str] | None = None  # input files or globs, relative to the working directory
    heldout_inputs: list[str] | None = None  # files or globs held out whole (a test set made apart), beside inputs
    split_by: str | None = None  # query, tool or category
    heldout_frac: float | None = None
    heldout_tools_in_train: str | None = None  # with split_by tool: strip, drop or keep (see `prep --help`)
    max_tokens: int | None = None  # set: render each sample in the training format (model.chat_template), reject longer
    # Batches of rows of about the same length, in a seeded random order: little padding without packing. (transformers'
    # group_by_length sorts each run of 50 batches longest first, a sweep through the sample kinds that a model
    # trained from scratch at a high learning rate follows instead of learning them all.)
    batch_by_length: bool = False


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


@dataclass
class Recipe:
    path: Path
    model: ModelArgs
    lora: Any  # peft.LoraConfig
    data: DataArgs
    run: RunArgs
    eval: EvalArgs
    export: ExportArgs
    training: Any  # trl.SFTConfig
    training_keys: list[str] = field(default_factory=list)  # the training fields the recipe or our defaults set
    lora_keys: list[str] = field(default_factory=list)  # the same for lora

    @property
    def dir(self) -> Path:
        return Path(self.run.dir)

    @property
    def lora_used(self) -> bool:
        """Whether training uses the `lora` section: with finetune=full it is parsed and checked, then left unused."""
        return self.model.finetune == "lora"

    def to_dict(self) -> dict:
        """The resolved recipe: every field of our sections, and the `lora` and `training` fields set by the
        recipe, its overrides or our defaults (the rest are PEFT's and TRL's defaults of the recorded versions)."""
        training = self.training.to_dict()
        return {
            "path": str(self.path),
            **{name: dataclasses.asdict(getattr(self, name)) for name in OUR_SECTIONS},
            "lora": {k: _plain(getattr(self.lora, k)) for k in self.lora_keys} if self.lora_used else {},
            "training": {k: training[k] for k in self.training_keys},
        }


SECTIONS = {"model": ModelArgs, "lora": None, "data": DataArgs, "run": RunArgs, "eval": EvalArgs,
            "export": ExportArgs, "training": None}
OUR_SECTIONS = [name for name, cls in SECTIONS.items() if cls]


def load_recipe(path: str | Path, overrides: list[str] = (), *, prep_inputs: bool = False) -> Recipe:
    """The recipe at `path` (a file, or a shipped recipe's name) with `section.key=value` overrides applied;
    UserError for any unknown key or bad value. prep_inputs (`dispatchtune run`): data.inputs are prepared into
    RUN/data, where training reads them, so the recipe may set data.inputs or data.train/data.heldout, not both."""
    path = catalog.resolve(path)
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
            raise UserError(f"unknown recipe section {section!r}{_suggest(section, SECTIONS, 'a recipe')}")

    model, data, run, eval_, export = (_parse(s, SECTIONS[s], raw.get(s, {})) for s in OUR_SECTIONS)
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
    for key in ("inputs", "heldout_inputs"):
        if isinstance(getattr(data, key), str):
            setattr(data, key, [getattr(data, key)])
    if isinstance(export.quants, str):  # export.quants=f16,q8_0 as `export gguf --quant` takes it
        export.quants = [q for q in export.quants.split(",") if q]

    from trl import SFTConfig

    training = _machine_defaults(run, raw.get("training", {})) | raw.get("training", {})
    lora = LORA_DEFAULTS | raw.get("lora", {})
    recipe = Recipe(path, model, _parse_lora(lora), data, run, eval_, export, _parse("training", SFTConfig, training),
                    list(training), list(lora))
    check_values(recipe)
    return recipe


def check_values(recipe: Recipe) -> None:
    """Refuse values each field's type allows but training cannot use, naming the key: what would otherwise fail
    as a traceback after the model loaded, or silently train nothing."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    t, lora, model = recipe.training, recipe.lora, recipe.model

    def refuse(key: str, value, expected: str):
        raise UserError(f"{key}={value} is not usable: {expected}")

    if not (math.isfinite(t.learning_rate) and t.learning_rate > 0):
        refuse("training.learning_rate", t.learning_rate, "it must be a positive number")
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(t, key) < 1:
            refuse(f"training.{key}", getattr(t, key), "it must be 1 or more")
    if t.max_steps == 0 or t.max_steps < -1:
        refuse("training.max_steps", t.max_steps, "it must be positive, or -1 to train training.num_train_epochs")
    if t.max_steps == -1 and not (math.isfinite(t.num_train_epochs) and t.num_train_epochs > 0):
        refuse("training.num_train_epochs", t.num_train_epochs, "it must be positive (or set training.max_steps)")
    if recipe.data.batch_by_length and (t.packing or t.train_sampling_strategy != "random"):
        refuse("data.batch_by_length", True, "it orders the batches itself: set training.packing=false and leave "
               f"training.train_sampling_strategy at random (not {t.train_sampling_strategy})")
    reporters = [*INTEGRATION_TO_CALLBACK, "all", "none"]
    for name in t.report_to:
        if name not in reporters:
            refuse("training.report_to", name, f"expected one of {', '.join(reporters)}")
    if lora.r < 1:
        refuse("lora.r", lora.r, "the LoRA rank must be 1 or more")
    if not 0 <= lora.lora_dropout <= 1:
        refuse("lora.lora_dropout", lora.lora_dropout, "a dropout probability is between 0 and 1")
    if model.finetune not in FINETUNES:
        refuse("model.finetune", model.finetune, f"expected one of {', '.join(FINETUNES)}")
    if model.qlora and model.finetune == "full":
        raise UserError("model.qlora=true needs model.finetune=lora: QLoRA trains a LoRA adapter on a frozen 4-bit "
                        "base, whose weights cannot be trained in full")
    dtypes = ("auto", "bfloat16", "float16", "float32")
    if model.dtype not in dtypes:
        refuse("model.dtype", model.dtype, f"expected one of {', '.join(dtypes)}")
    attention = ["auto", "eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
    if model.attn_implementation not in attention and "/" not in model.attn_implementation:  # or a Hub kernel
        refuse("model.attn_implementation", model.attn_implementation,
               f"expected one of {', '.join(attention)}, or a Hub kernel (org/name)")
    check_output_dir(recipe.dir, "run.dir")


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
        "dataloader_pin_memory": cuda,  # pinned memory only speeds up copies to a GPU
    }


def _parse(section: str, cls: type, values: dict):
    from trl import TrlParser

    class Parser(TrlParser):
        def error(self, message):  # argparse would print usage and exit; a recipe mistake is a UserError
            raise UserError(re.sub(r"(argument )?--(\w+)(/--[\w-]+)*", rf"{section}.\2", message))

    names = [f.name for f in dataclasses.fields(cls) if f.init]
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in names:
            raise UserError(f"unknown recipe key {section}.{key}{_suggest(key, names, _owner(cls))}")
        if isinstance(value, list | dict) and not _accepts(hints[key], type(value)):
            # argparse converts only strings: a list or mapping would reach the dataclass as it is
            raise UserError(f"{section}.{key}: invalid {_type_name(hints[key])} value: {value!r}")
    parser = Parser([cls])
    parser.set_defaults_with_config(**{key: _as_arg(value) for key, value in values.items()})
    try:
        (parsed,) = parser.parse_args_into_dataclasses(args=[], look_for_args_file=False)
    except ValueError as e:  # a dataclass's own checks (SFTConfig.__post_init__)
        raise UserError(f"recipe section {section}: {e}") from None
    return parsed


def _parse_lora(values: dict):
    """PEFT's LoraConfig from the `lora` section, converted by its annotations and checked by its own __post_init__."""
    from peft import LoraConfig
    from pydantic import TypeAdapter, ValidationError

    names = [f.name for f in dataclasses.fields(LoraConfig) if f.init and f.name not in LORA_RESERVED]
    for key in values:
        if key == "qlora":
            raise UserError("unknown recipe key lora.qlora; QLoRA is how the base model loads: model.qlora")
        if key in LORA_RESERVED:
            raise UserError(f"lora.{key} is for PEFT to fill in (the adapter is a causal LM's); leave it out")
        if key not in names:
            raise UserError(f"unknown recipe key lora.{key}{_suggest(key, names, 'peft.LoraConfig')}")
    try:
        return TypeAdapter(LoraConfig).validate_python({**values, "task_type": "CAUSAL_LM"})
    except ValidationError as e:
        error = e.errors()[0]
        if not error["loc"]:  # LoraConfig.__post_init__ refused a combination
            raise UserError(f"recipe section lora: {error['msg'].removeprefix('Value error, ')}") from None
        key = f"lora.{error['loc'][0]}"
        kind = error["type"].split("_")[0]
        if len(error["loc"]) == 1 and error["type"].endswith(("_parsing", "_type", "_from_float")):
            raise UserError(f"{key}: invalid {kind} value: {error['input']!r}") from None
        raise UserError(f"{key}: invalid value {error['input']!r} ({error['msg'].lower()})") from None


def _plain(value):
    """A LoraConfig value as JSON has it (PEFT turns target_modules into a set, task_type into an enum)."""
    if isinstance(value, set | frozenset):
        return sorted(value)
    return value.value if isinstance(value, enum.Enum) else value


def _accepts(annotation, kind: type) -> bool:
    """Whether a field annotated `annotation` takes a list (kind list) or a mapping (kind dict)."""
    if annotation is Any:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_accepts(a, kind) for a in typing.get_args(annotation))
    origin = typing.get_origin(annotation) or annotation
    return origin in ((list, tuple, set) if kind is list else (dict,))


def _type_name(annotation) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return getattr(args[0], "__name__", str(args[0]))


def _as_arg(value):
    """Scalars as the strings argparse converts with the field's type, so `lora.r: 1.5` is an error, not 1.5."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if isinstance(value, int | float) else value


def _owner(cls: type) -> str:
    return f"{cls.__module__.split('.')[0]}.{cls.__name__}"


def _suggest(word: str, choices, owner: str) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    if len(choices) > 10:
        return f" (the section takes the fields of {owner})"
    return f"; expected one of: {', '.join(choices)}"
