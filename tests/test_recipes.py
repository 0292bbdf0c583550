"""Recipes, accelerate configs and the sweep parse and say what they mean; no model is loaded."""

from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig

from dispatchtune.errors import UserError
from dispatchtune.train.config import load_recipe
from dispatchtune.train.mask import resolve_template

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
REAL = [p for p in RECIPES if p.stem != "tiny"]
EXPECTED = {"opt-350m", "smollm2-360m", "qwen3-0.6b", "qwen3-1.7b", "qwen3.5-4b", "llama-3.2-1b", "llama-3.2-3b",
            "gemma-3-1b", "tiny"}


def test_every_target_has_a_recipe():
    assert {p.stem for p in RECIPES} == EXPECTED


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.stem)
def test_real_recipe_parses_with_its_hub_id(path):
    recipe = load_recipe(path)
    assert recipe.model.name_or_path.count("/") == 1  # a Hub id, loaded by nobody here
    assert recipe.model.dtype == "auto" and not recipe.model.trust_remote_code
    resolve_template(recipe.model.chat_template)  # the named template exists
    t = recipe.training
    assert t.num_train_epochs == 1 and t.max_length >= 2048 and 5e-5 <= t.learning_rate <= 5e-4
    assert recipe.lora.r >= 8 and recipe.lora.alpha >= recipe.lora.r and not recipe.lora.qlora
    assert t.output_dir == f"runs/{path.stem}/checkpoints" and recipe.data.train == f"runs/{path.stem}/data/train.jsonl"
    assert t.report_to == [] and t.bf16 is False  # no wandb project set; this CPU machine has no bf16
    # the QLoRA variant is an override, documented at the top of each recipe
    assert "lora.qlora=true" in path.read_text()
    assert load_recipe(path, ["lora.qlora=true"]).lora.qlora is True


def test_packing_is_on_except_where_the_model_cannot_pack():
    for path in REAL:
        t = load_recipe(path).training
        # Qwen3.5's linear-attention layers need causal-conv1d to pack; OPT's attention ignores packed position ids.
        assert t.packing == (path.stem not in ("qwen3.5-4b", "opt-350m")), path.stem
        if t.packing:
            assert t.packing_strategy == "bfd"


def test_tiny_recipe_is_cpu_friendly():
    recipe = load_recipe(ROOT / "recipes/tiny.yaml")
    assert recipe.model.name_or_path == "tiny:qwen3" and recipe.model.dtype == "float32"
    assert recipe.training.bf16 is False and recipe.training.report_to == []


def test_overrides_are_coerced_to_the_field_type(tmp_path):
    recipe = load_recipe(ROOT / "recipes/qwen3-0.6b.yaml", [
        "training.learning_rate=1e-4", "lora.r=8", "training.bf16=false", "lora.target_modules=[q_proj,v_proj]",
        "training.eval_strategy=no", "model.template_kwargs={enable_thinking: true}", "run.dir=" + str(tmp_path),
        "training.max_length=none", "run.wandb_project=p",
    ])
    t = recipe.training
    assert t.learning_rate == 1e-4 and isinstance(t.learning_rate, float)
    assert recipe.lora.r == 8 and recipe.lora.target_modules == ["q_proj", "v_proj"]
    assert t.bf16 is False and t.eval_strategy == "no" and t.max_length is None
    assert recipe.model.template_kwargs == {"enable_thinking": True}
    assert t.output_dir == f"{tmp_path}/checkpoints" and recipe.data.heldout == f"{tmp_path}/data/heldout.jsonl"
    assert t.report_to == ["wandb"] and recipe.to_dict()["training"]["learning_rate"] == 1e-4


def test_yaml_strings_become_numbers(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: {name_or_path: tiny:qwen3}\ntraining: {learning_rate: 1e-4, num_train_epochs: 2}\n")
    assert yaml.safe_load(path.read_text())["training"]["learning_rate"] == "1e-4"  # what PyYAML does
    t = load_recipe(path).training
    assert t.learning_rate == 1e-4 and t.num_train_epochs == 2


@pytest.mark.parametrize("text, override, message", [
    ("lora: {rank: 8}", None, "unknown recipe key lora.rank; expected one of: r, alpha, dropout"),
    ("training: {learnig_rate: 1.0e-4}", None, "key training.learnig_rate; did you mean 'learning_rate'?"),
    ("trainer: {x: 1}", None, "unknown recipe section 'trainer'"),
    ("", "lora.alhpa=3", "unknown recipe key lora.alhpa; did you mean 'alpha'?"),
    ("", "training.xyzzy=1", "unknown recipe key training.xyzzy"),
    ("", "lora.r=1.5", "lora.r: invalid int value: '1.5'"),
    ("", "training.learning_rate=fast", "training.learning_rate: invalid float value: 'fast'"),
    ("", "learning_rate=1", "is not section.key=value"),
])
def test_recipe_mistakes_name_the_key(tmp_path, text, override, message):
    path = tmp_path / "r.yaml"
    path.write_text("model: {name_or_path: tiny:qwen3}\n" + text + "\n")
    with pytest.raises(UserError, match=message.replace("?", r"\?").replace("[", r"\[")):
        load_recipe(path, [override] if override else [])


def test_missing_recipe_file(tmp_path):
    with pytest.raises(UserError, match="recipe file .*nope.yaml not found"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name, kind", [("single_gpu", "NO"), ("ddp", "MULTI_GPU"), ("fsdp", "FSDP"),
                                        ("deepspeed_zero2", "DEEPSPEED")])
def test_accelerate_configs(name, kind):
    path = ROOT / "recipes/accelerate" / f"{name}.yaml"
    config = ClusterConfig.from_yaml_file(path)  # accelerate's own loader: rejects unknown keys
    assert config.distributed_type == kind and config.mixed_precision == "no"  # the recipe decides precision
    raw = yaml.safe_load(path.read_text())
    if kind == "FSDP":
        fsdp = raw["fsdp_config"]
        assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert "fsdp_use_orig_params" not in fsdp  # obsolete in FSDP2 (always the original parameters)
        assert fsdp["fsdp_activation_checkpointing"] is False  # the recipe's gradient checkpointing does it
    if kind == "DEEPSPEED":
        assert raw["deepspeed_config"]["zero_stage"] == 2


def test_sweep_parameters_are_valid_overrides():
    sweep = yaml.safe_load((ROOT / "recipes/sweeps/qwen3-0.6b-lora.yaml").read_text())
    assert sweep["method"] == "bayes"
    assert sweep["metric"] == {"name": "eval/tool_call_score", "goal": "maximize"}
    command = sweep["command"]
    assert command[-1] == "${args_no_hyphens}"
    recipe_path = ROOT / command[command.index("--recipe") + 1]
    fixed = [c for c in command if "=" in c]
    for key, spec in sweep["parameters"].items():
        for value in spec.get("values", [spec.get("min"), spec.get("max")]):
            recipe = load_recipe(recipe_path, [*fixed, f"{key}={value}"])  # what the agent's command line does
            section, name = key.split(".")
            got = getattr(getattr(recipe, section), name)
            assert got == (yaml.safe_load(value) if isinstance(value, str) else value)
    assert recipe.training.report_to == ["wandb"]


def test_sweep_script_is_valid_bash():
    import subprocess

    subprocess.run(["bash", "-n", str(ROOT / "scripts/sweep.sh")], check=True)
