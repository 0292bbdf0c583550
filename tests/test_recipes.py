"""Recipes, accelerate configs and the sweep parse and say what they mean; no model is loaded."""

import re
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig

from dispatchtune.cli import main
from dispatchtune.errors import UserError
from dispatchtune.families import resolve_template
from dispatchtune.train.catalog import shipped
from dispatchtune.train.config import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
REAL = [p for p in RECIPES if p.stem not in ("tiny", "demo")]  # built locally, not from the Hub
EXPECTED = {"opt-350m", "smollm2-360m", "qwen3-0.6b", "qwen3-1.7b", "qwen3.5-4b", "llama-3.2-1b", "llama-3.2-3b",
            "gemma-3-1b", "tiny", "demo"}


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
    assert recipe.lora.r >= 8 and recipe.lora.lora_alpha >= recipe.lora.r and not recipe.model.qlora
    assert t.output_dir == f"runs/{path.stem}/checkpoints" and recipe.data.train == f"runs/{path.stem}/data/train.jsonl"
    assert t.report_to == [] and t.bf16 is False  # no wandb project set; this CPU machine has no bf16
    # the QLoRA variant is an override, documented at the top of each recipe
    assert "model.qlora=true" in path.read_text()
    assert load_recipe(path, ["model.qlora=true"]).model.qlora is True


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
    assert recipe.lora.r == 8 and recipe.lora.target_modules == {"q_proj", "v_proj"}  # PEFT keeps a set
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
    ("lora: {rank: 8}", None, "unknown recipe key lora.rank .the section takes the fields of peft.LoraConfig."),
    ("training: {learnig_rate: 1.0e-4}", None, "key training.learnig_rate; did you mean 'learning_rate'?"),
    ("trainer: {x: 1}", None, "unknown recipe section 'trainer'"),
    ("", "lora.lora_alhpa=3", "unknown recipe key lora.lora_alhpa; did you mean 'lora_alpha'?"),
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


def test_a_full_finetune_checks_but_does_not_record_the_lora_section():
    """model.finetune=full trains without PEFT: the shipped recipes' lora sections switch off with one override, a
    misspelt lora key is still refused, and run.json's recipe does not list LoRA settings that were not used."""
    recipe = load_recipe("tiny", ["model.finetune=full"])
    assert not recipe.lora_used and recipe.to_dict()["lora"] == {} and recipe.to_dict()["model"]["finetune"] == "full"
    assert load_recipe("tiny").to_dict()["lora"]["r"] == 8
    with pytest.raises(UserError, match="unknown recipe key lora.rank"):
        load_recipe("tiny", ["model.finetune=full", "lora.rank=8"])
    with pytest.raises(UserError, match="model.qlora=true needs model.finetune=lora"):
        load_recipe("tiny", ["model.finetune=full", "model.qlora=true"])


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
    recipe_path = command[command.index("--recipe") + 1]  # a shipped recipe's name
    fixed = [c for c in command if "=" in c]
    for key, spec in sweep["parameters"].items():
        for value in spec.get("values", [spec.get("min"), spec.get("max")]):
            recipe = load_recipe(recipe_path, [*fixed, f"{key}={value}"])  # what the agent's command line does
            section, name = key.split(".")
            got = getattr(getattr(recipe, section), name)
            got = sorted(got) if isinstance(got, set) else got  # PEFT keeps target_modules as a set
            value = sorted(yaml.safe_load(value)) if isinstance(got, list) else value
            assert got == (yaml.safe_load(value) if isinstance(value, str) else value)
    assert recipe.training.report_to == ["wandb"]


def test_sweep_script_is_valid_bash():
    import subprocess

    subprocess.run(["bash", "-n", str(ROOT / "scripts/sweep.sh")], check=True)


def test_shipped_recipes_resolve_by_name_and_a_path_still_works(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # names do not depend on the working directory
    assert set(shipped()) == EXPECTED
    recipe = load_recipe("qwen3-0.6b")
    assert recipe.path.read_text() == (ROOT / "recipes/qwen3-0.6b.yaml").read_text()
    assert recipe.run.dir == "runs/qwen3-0.6b"
    own = tmp_path / "mine.yaml"
    own.write_text("model: {name_or_path: tiny:qwen3}\n")
    assert load_recipe(own).path == own and load_recipe("mine.yaml").model.name_or_path == "tiny:qwen3"
    with pytest.raises(UserError, match="recipe name qwen9 not found; pass a YAML path or a shipped recipe: "
                                        "demo, gemma-3-1b, .*qwen3-0.6b, .*tiny"):
        load_recipe("qwen9")
    assert main(["recipes"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed[:-1]] == sorted(EXPECTED)
    assert listed[sorted(EXPECTED).index("qwen3-0.6b")].startswith("qwen3-0.6b     Qwen3-0.6B (Qwen/Qwen3-0.6B)")


def test_lora_is_peft_lora_config_field_for_field():
    from peft import LoraConfig

    recipe = load_recipe("tiny", ["lora.use_dora=true", "lora.use_rslora=true", "lora.modules_to_save=[lm_head]",
                                  "lora.target_modules=[q_proj,v_proj]", "lora.layers_to_transform=[0]",
                                  "lora.init_lora_weights=gaussian", "lora.lora_dropout=1e-1"])
    lora = recipe.lora
    assert isinstance(lora, LoraConfig) and lora.task_type == "CAUSAL_LM"
    assert lora.use_dora and lora.use_rslora and lora.modules_to_save == ["lm_head"] and lora.layers_to_transform == [0]
    assert lora.init_lora_weights == "gaussian" and lora.lora_dropout == 0.1 and lora.r == 8  # the recipe's r
    assert recipe.to_dict()["lora"] == {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1,
                                        "target_modules": ["q_proj", "v_proj"], "use_dora": True, "use_rslora": True,
                                        "modules_to_save": ["lm_head"], "layers_to_transform": [0],
                                        "init_lora_weights": "gaussian"}
    bare = load_recipe("tiny", ["lora.r=4"])  # our defaults beneath the recipe's values: all-linear, not PEFT's
    assert bare.lora.target_modules == "all-linear" and bare.lora.r == 4


# Values each field's type allows but training cannot use: refused by load_recipe, before any model is loaded.
BAD_VALUES = [
    ("training.learning_rate=-1e-4", "training.learning_rate=-0.0001 is not usable: it must be a positive number"),
    ("training.learning_rate=nan", "training.learning_rate=nan is not usable"),
    ("training.learning_rate=inf", "training.learning_rate=inf is not usable"),
    ("lora.r=0", "lora.r=0 is not usable: the LoRA rank must be 1 or more"),
    ("lora.r=-8", "lora.r=-8 is not usable"),
    ("lora.r=[1,2]", r"lora.r: invalid int value: \[1, 2\]"),
    ("lora.lora_dropout=1.5", "lora.lora_dropout=1.5 is not usable: a dropout probability is between 0 and 1"),
    ("lora.lora_dropout=-0.1", "lora.lora_dropout=-0.1 is not usable"),
    ("lora.lora_dropout=nan", "lora.lora_dropout=nan is not usable"),
    ("training.per_device_train_batch_size=0", "training.per_device_train_batch_size=0 is not usable: it must be 1"),
    ("training.per_device_train_batch_size=[1,2]", r"training.per_device_train_batch_size: invalid int value: \[1, 2"),
    ("training.gradient_accumulation_steps=0", "training.gradient_accumulation_steps=0 is not usable"),
    ("training.max_steps=0", "training.max_steps=0 is not usable: it must be positive, or -1 to train"),
    ("training.num_train_epochs=0", "training.num_train_epochs=0.0 is not usable"),
    ("model.dtype=float8", "model.dtype=float8 is not usable: expected one of auto, bfloat16, float16, float32"),
    ("model.dtype=[float32]", r"model.dtype: invalid str value: \['float32'\]"),
    ("model.attn_implementation=fastest", "model.attn_implementation=fastest is not usable: expected one of auto, "
                                          "eager, .*sdpa"),
    ("training.report_to=wandbb", "training.report_to=wandbb is not usable: expected one of .*wandb"),
    ("lora.bias=some", r"lora.bias: invalid value 'some' \(input should be 'none', 'all' or 'lora_only'\)"),
    ("lora.use_dora=maybe", "lora.use_dora: invalid bool value: 'maybe'"),
    ("lora.layers_to_transform=[0]", "recipe section lora: `layers_to_transform` cannot be used when "
                                     "`target_modules` is a str"),
    ("lora.task_type=SEQ_CLS", "lora.task_type is for PEFT to fill in"),
    ("lora.qlora=true", "unknown recipe key lora.qlora; QLoRA is how the base model loads: model.qlora"),
    ("lora.alpha=16", "unknown recipe key lora.alpha; did you mean 'lora_alpha'"),
]


@pytest.mark.parametrize("override, message", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_recipe_values_are_one_line_and_exit_2_before_any_model_loads(override, message, capsys, monkeypatch):
    import transformers

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_loading)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_loading)
    assert main(["train", "--recipe", "tiny", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dispatchtune train: error: "), err
    assert re.search(message, err[0]), err[0]


def test_run_dir_must_be_a_directory_it_can_create(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(UserError, match=f"run.dir {afile} is a file, not a directory"):
        load_recipe("tiny", [f"run.dir={afile}"])
    with pytest.raises(UserError, match=f"run.dir {afile}/run cannot be created: {afile} is a file"):
        load_recipe("tiny", [f"run.dir={afile}/run"])
