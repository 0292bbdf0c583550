"""`dispatchtune merge`: a LoRA adapter folded into its base behaves like base+adapter, on the tiny models; a full
fine-tune's model is copied (base dtype, stop tokens) and behaves like the trained model."""

import json
from pathlib import Path

import pytest
import torch

from dispatchtune.cli import main
from dispatchtune.families import FAMILIES, resolve_template
from dispatchtune.export import Tolerance
from dispatchtune.export.merge import merge

# The template train saves with the adapter for each family (dispatchtune's tool templates for the ones whose own cannot carry tools).
TRAINING_TEMPLATE = {"qwen3": None, "qwen3.5": None, "llama-3.2": None, "gemma3": "gemma3_tools",
                     "opt": "chatml_tools"}


def make_adapter(base: Path, out: Path, template: str | None = None, dtype=torch.float32) -> Path:
    """A LoRA adapter that changes the outputs (init_lora_weights=False: B is random, not zero), saved with the
    tokenizer carrying the training template, as train writes RUN/adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False,
                        task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        get_peft_model(model, config).save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if template:
        tokenizer.chat_template = resolve_template(template)
    tokenizer.save_pretrained(out)
    return out


def logits(model_dir, text="Dispatch an ambulance to 12 Main Street."):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        return model(**tok(text, return_tensors="pt")).logits[0]


@pytest.mark.parametrize("family", list(TRAINING_TEMPLATE))
def test_merge_matches_base_plus_adapter(tiny_models, tmp_path, family):
    base = tiny_models(family)
    adapter = make_adapter(base, tmp_path / "adapter", TRAINING_TEMPLATE[family])
    out = tmp_path / "merged"
    report = merge(adapter, out)

    assert report["passed"], report["failures"]
    assert json.loads((out / "verify.json").read_text()) == report
    m = report["metrics"]
    assert m["max_rel_err"] < 1e-4 and m["min_cosine"] > 0.99999 and m["top1"] == 1.0
    assert report["dtype"] == "float32" and report["prompts"] >= 1
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    # the adapter changed the model, and the merged model carries that change
    assert not torch.allclose(logits(base), logits(out), atol=1e-3)

    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(adapter).chat_template
    spec = FAMILIES[family]
    eos = GenerationConfig.from_pretrained(out).eos_token_id
    assert tokenizer.convert_tokens_to_ids(spec.end_of_turn) in eos
    assert {tokenizer.convert_tokens_to_ids(t) for t in spec.stop_tokens} <= set(eos)
    assert not list(tmp_path.glob(".merged.partial-*"))


def test_bfloat16_base_is_merged_in_float32_and_saved_in_bfloat16(tiny_models, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tmp_path / "base-bf16"
    AutoModelForCausalLM.from_pretrained(tiny_models("qwen3"), dtype=torch.bfloat16).save_pretrained(base)
    AutoTokenizer.from_pretrained(tiny_models("qwen3")).save_pretrained(base)
    adapter = make_adapter(base, tmp_path / "adapter", dtype=torch.bfloat16)
    report = merge(adapter, tmp_path / "merged")

    assert report["passed"], report["failures"]
    assert report["dtype"] == "bfloat16"
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["dtype"] == "bfloat16"
    assert report["metrics"]["mean_cosine"] > 0.999


def test_sentencepiece_model_of_the_base_is_kept(tiny_models, tmp_path):
    """llama.cpp builds Gemma's vocabulary from tokenizer.model, which transformers 5 no longer saves."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_models("gemma3"), base)
    (base / "tokenizer.model").write_bytes(b"sentencepiece model bytes")
    adapter = make_adapter(base, tmp_path / "adapter", "gemma3_tools")
    assert not (adapter / "tokenizer.model").exists()
    assert merge(adapter, tmp_path / "merged")["passed"]
    assert (tmp_path / "merged" / "tokenizer.model").read_bytes() == b"sentencepiece model bytes"


def test_run_layout_rerun_skips_and_force_redoes(tiny_models, tmp_path, capsys):
    run = tmp_path / "run"
    make_adapter(tiny_models("qwen3"), run / "adapter")
    (run / "run.json").write_text(json.dumps({"model": {"qlora": True}}))

    assert main(["merge", "--run", str(run)]) == 0
    report = json.loads((run / "merged" / "verify.json").read_text())
    assert report["qlora"] is True and report["passed"]
    assert "parity vs base+adapter" in capsys.readouterr().out

    stamp = (run / "merged" / "model.safetensors").stat().st_mtime_ns
    assert main(["merge", "--run", str(run)]) == 0
    assert "(existing)" in capsys.readouterr().out
    assert (run / "merged" / "model.safetensors").stat().st_mtime_ns == stamp

    assert main(["merge", "--run", str(run), "--force"]) == 0
    assert (run / "merged" / "model.safetensors").stat().st_mtime_ns != stamp


def test_failed_parity_check_leaves_no_output(tiny_models, tmp_path, monkeypatch, capsys):
    import dispatchtune.export.merge

    impossible = Tolerance(max_rel_err=0.0, min_mean_cosine=1.1, min_top1=1.0)
    monkeypatch.setitem(dispatchtune.export.merge.TOLERANCES, "float32", impossible)
    adapter = make_adapter(tiny_models("llama-3.2"), tmp_path / "adapter")
    code = main(["merge", "--adapter", str(adapter), "--out", str(tmp_path / "merged")])

    assert code == 1
    assert "parity check FAILED" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no output, no staging directory


def make_full_model(base: Path, out: Path) -> Path:
    """RUN/adapter of model.finetune=full: the whole model, every weight moved off the base, in float32, saved with
    the tokenizer as train saves it (generation config as the base had it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def test_full_finetune_is_copied_in_the_bases_dtype_and_verified(tiny_models, tmp_path, capsys):
    """The copy takes the dtype of the base run.json names (bfloat16 here, trained in float32), gains the stop
    tokens, and is checked against the trained model's float32 logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    base = tmp_path / "base-bf16"
    AutoModelForCausalLM.from_pretrained(tiny_models("llama-3.2"), dtype=torch.bfloat16).save_pretrained(base)
    AutoTokenizer.from_pretrained(tiny_models("llama-3.2")).save_pretrained(base)
    run = tmp_path / "run"
    full = make_full_model(base, run / "adapter")
    (run / "run.json").write_text(json.dumps({"model": {"name_or_path": str(base), "finetune": "full"}}))

    assert main(["merge", "--run", str(run)]) == 0
    assert "parity vs the trained model" in capsys.readouterr().out
    report = json.loads((run / "merged" / "verify.json").read_text())
    assert report["passed"] and report["finetune"] == "full" and report["dtype"] == "bfloat16"
    assert report["base"] == str(base) and "vs the trained model" in report["check"]
    assert report["metrics"]["mean_cosine"] > 0.999
    assert json.loads((run / "merged" / "config.json").read_text())["dtype"] == "bfloat16"
    assert not (run / "merged" / "adapter_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(run / "merged")
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(full).chat_template
    eos = GenerationConfig.from_pretrained(run / "merged").eos_token_id
    assert {tokenizer.convert_tokens_to_ids(t) for t in FAMILIES["llama-3.2"].stop_tokens} <= set(eos)


def test_full_finetune_without_a_known_base_keeps_its_dtype(tiny_models, tmp_path):
    """merge --adapter on a full fine-tune's directory, no run.json: the copy is exact, float32 as trained."""
    full = make_full_model(tiny_models("qwen3"), tmp_path / "adapter")
    report = merge(full, tmp_path / "merged")
    assert report["passed"] and report["base"] is None and report["dtype"] == "float32"
    assert report["metrics"]["max_rel_err"] == 0.0 and report["metrics"]["top1"] == 1.0
    assert torch.equal(logits(full), logits(tmp_path / "merged"))
    assert not torch.allclose(logits(tiny_models("qwen3")), logits(tmp_path / "merged"), atol=1e-3)


def test_user_mistakes_are_one_line_errors(tiny_models, tmp_path, capsys):
    base = tiny_models("qwen3")
    adapter = make_adapter(base, tmp_path / "adapter")
    assert main(["merge", "--adapter", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")]) == 2
    assert "adapter_config.json not found" in capsys.readouterr().err
    assert main(["merge", "--adapter", str(adapter)]) == 2
    assert "--adapter needs --out" in capsys.readouterr().err

    # a pre-quantised base (a bnb-4bit upload): merging into it would bake in its rounding
    quantised = tmp_path / "base-4bit"
    quantised.mkdir()
    config = json.loads((base / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantised / "config.json").write_text(json.dumps(config))
    (quantised / "model.safetensors").symlink_to(base / "model.safetensors")
    assert main(["merge", "--adapter", str(adapter), "--out", str(tmp_path / "m"), "--base", str(quantised)]) == 2
    assert "full-precision original" in capsys.readouterr().err

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "stray.txt").write_text("not ours")
    assert main(["merge", "--adapter", str(adapter), "--out", str(tmp_path / "m")]) == 2
    assert "--force" in capsys.readouterr().err
