"""A tiny model trained until it reproduces a handful of samples exactly scores every case of them AST 1.0 through
transformers (base + adapter, or the fully fine-tuned model), the merged model and the GGUF f16 file.

The samples are the shapes a dispatch model must get right: one call, parallel calls, a text answer without a call,
and a two-step chain whose second call passes on a value only the first call's result holds. Training on exactly
these samples and evaluating on their held-out cases (`eval.heldout`: one per assistant turn, plus the chain case,
whose second turn sees the model's own first call and the sample's tool result) checks that every stage renders,
masks, stops and parses a conversation the same way: a token trained in one context and generated in another, an end
of turn the generation does not stop on, or a call format the parser misreads, each costs a case.

Random weights: the tiny models know nothing, so they memorise, and in full (`model.finetune=full`): a LoRA adapter on
random weights does not learn them (on tiny:qwen3 at rate 1e-2, r=32, the loss stays near 5.5 for 80 steps). Packing
puts all samples in one row, so a step is one pass over them; about a minute per family on two cores.
"""

import json
from collections import Counter
from pathlib import Path

import huggingface_hub.constants
import pytest

from dispatchtune.data_prep.sample import Sample, function_tool, read_jsonl
from dispatchtune.eval import evaluate
from dispatchtune.eval.heldout import heldout_cases
from dispatchtune.eval.records import write_cases
from dispatchtune.export.gguf import export_gguf
from dispatchtune.export.merge import merge
from dispatchtune.train.config import load_recipe
from dispatchtune.train.sft import train
from test_export_gguf import _tools_missing

pytestmark = pytest.mark.slow

WEATHER = function_tool("get_weather", "Current weather in a city.",
                        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
ORDER = function_tool("find_order", "Look up an order by its number.",
                      {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]})
CUSTOMER = function_tool("get_customer", "Look up a customer by id.",
                         {"type": "object", "properties": {"customer_id": {"type": "string"}},
                          "required": ["customer_id"]})


def call(id_: str, name: str, **arguments) -> dict:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


def result(id_: str, name: str, content: dict) -> dict:
    return {"role": "tool", "tool_call_id": id_, "name": name, "content": json.dumps(content)}


SAMPLES = {
    "single": Sample([
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call("c1", "get_weather", city="Paris")]},
    ], [WEATHER]),
    "parallel": Sample([
        {"role": "user", "content": "Weather in Tokyo and in Lima, please."},
        {"role": "assistant", "content": "", "tool_calls": [call("c1", "get_weather", city="Tokyo"),
                                                            call("c2", "get_weather", city="Lima")]},
    ], [WEATHER]),
    "no_call": Sample([
        {"role": "user", "content": "Thank you, that is all for now."},
        {"role": "assistant", "content": "You're welcome, have a great day!"},
    ], [WEATHER, ORDER]),
    "chain": Sample([
        {"role": "user", "content": "Who placed order 4417?"},
        {"role": "assistant", "content": "", "tool_calls": [call("c1", "find_order", order_id="4417")]},
        result("c1", "find_order", {"order_id": "4417", "customer_id": "C-7731", "status": "shipped"}),
        {"role": "assistant", "content": "", "tool_calls": [call("c2", "get_customer", customer_id="C-7731")]},
        result("c2", "get_customer", {"customer_id": "C-7731", "name": "Alice Martin"}),
        {"role": "assistant", "content": "Order 4417 was placed by Alice Martin."},
    ], [ORDER, CUSTOMER]),
}

FAMILIES = {
    # Llama 3.2's template refuses an assistant turn with more than one call ("only supports single tool-calls"),
    # so it trains and is scored without the parallel sample.
    "llama-3.2": {"samples": ["single", "no_call", "chain"],
                  "overrides": ["model.template_kwargs={date_string: 26 Jul 2024}"]},
    "qwen3": {"samples": list(SAMPLES), "overrides": []},
}


@pytest.fixture(scope="module")
def env(tiny_models, tiny_llama_cpp):
    """`tiny:<family>` resolves to the session's tiny models; no network, no wandb; llama.cpp's converter knows the
    tiny tokenizers (tests/llama_cpp_tiny.py)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISPATCHTUNE_TINY_CACHE", str(tiny_models("qwen3").parent))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mp.setenv("WANDB_MODE", "disabled")
        yield


def ast_verdicts(out: Path) -> dict[str, bool]:
    return {row["id"]: row["ast_match"] for row in map(json.loads, (out / "cases.jsonl").read_text().splitlines())}


@pytest.mark.parametrize("family", ["llama-3.2", "qwen3"])
def test_memorised_samples_score_ast_1_everywhere(env, tiny_models, tmp_path, family):
    tiny_models(family)  # built into the cache `tiny:` reads
    spec = FAMILIES[family]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(SAMPLES[name].line_and_key()[0] + "\n" for name in spec["samples"]))
    cases = tmp_path / "cases.jsonl"
    counts = write_cases(heldout_cases(read_jsonl(data), skipped := Counter()), cases)
    assert counts["chain"] == 1 and not skipped, counts

    run = tmp_path / "run"
    recipe = load_recipe("tiny", [
        f"run.dir={run}", f"model.name_or_path=tiny:{family}", f"data.train={data}", f"data.heldout={data}",
        "model.finetune=full", "training.learning_rate=3e-3", "training.max_steps=60", "training.max_length=2048",
        "training.save_strategy=no", "training.logging_steps=10", *spec["overrides"]])
    info = train(recipe)
    assert info["metrics"]["last_loss"] < 0.05, info["metrics"]

    def score(name: str, **model) -> dict[str, bool]:
        evaluate(cases=cases, out=tmp_path / "eval" / name, max_new_tokens=96, **model)
        return ast_verdicts(tmp_path / "eval" / name)

    every_case = {json.loads(line)["id"]: True for line in cases.read_text().splitlines()}
    assert score("adapter", model=info["model"]["resolved"], adapter=run / "adapter") == every_case

    report = merge(run / "adapter", run / "merged", run_dir=run)
    assert report["passed"], report["failures"]
    assert score("merged", model=str(run / "merged")) == every_case

    if missing := _tools_missing():
        pytest.skip(f"transformers and the merged model score 1.0; no GGUF export here: {missing}")
    gguf = export_gguf(run / "merged", run / "gguf", ["f16"], name=family, run_dir=run)
    assert gguf["passed"], gguf["files"]
    assert score("gguf-f16", model=str(run / "merged"), gguf=run / "gguf" / f"{family}-f16.gguf") == every_case
