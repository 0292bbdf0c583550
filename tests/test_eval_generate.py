"""eval run on the tiny Qwen3: base, PEFT adapter, fully fine-tuned model and GGUF end to end; batching, chains, stop tokens, user errors."""

import argparse
import json
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dispatchtune.errors import UserError
from dispatchtune.eval import cli, generate
from dispatchtune.eval.generate import Backend, HFBackend, end_of_turn, predict
from dispatchtune.eval.score import iter_cases
from dispatchtune.eval.suite import load_dispatch_suite
from dispatchtune.families import TEMPLATES

CASE_IDS = ("sel-weather-umbrella", "par-currency-three", "none-thanks", "fmt-attendees", "chain-calendar-directions")
MAX_NEW = "6"


@pytest.fixture(scope="module")
def cases_file(tmp_path_factory):
    """Five suite cases (one a chain), each offered only the tools it expects plus web_search: shorter prompts."""
    path = tmp_path_factory.mktemp("cases") / "cases.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for case in load_dispatch_suite():
            if case.id in CASE_IDS:
                wanted = {next(iter(c)) for t in case.turns for c in t.expected} | {"web_search"}
                case.tools = [t for t in case.tools if t["function"]["name"] in wanted]
                f.write(case.to_json() + "\n")
    return path


THINKING_OFF = {"enable_thinking": False}


@pytest.fixture(scope="module")
def adapter(tiny_models, tmp_path_factory):
    """RUN/adapter as train leaves it: a LoRA adapter with random (not zero) B matrices, so that it changes the
    outputs, saved with the tokenizer; RUN/run.json records the recipe's template variables."""
    from peft import LoraConfig, get_peft_model

    base = tiny_models("qwen3")
    run = tmp_path_factory.mktemp("run")
    (run / "run.json").write_text(json.dumps({"recipe": {"model": {"template_kwargs": THINKING_OFF}}}))
    out = run / "adapter"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                               LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", init_lora_weights=False))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def eval_run(*argv) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(["run", *(str(a) for a in argv)]))


def predictions(out):
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def base_run(tiny_models, cases_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    assert eval_run("--model", tiny_models("qwen3"), "--cases", cases_file, "--out", out,
                    "--batch-size", 4, "--max-new-tokens", MAX_NEW) == 0
    return out


@pytest.fixture(scope="module")
def adapter_run(tiny_models, cases_file, adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapter_run")
    assert eval_run("--model", tiny_models("qwen3"), "--adapter", adapter, "--cases", cases_file, "--out", out,
                    "--batch-size", 5, "--max-new-tokens", MAX_NEW) == 0
    return out


def test_base_run_writes_predictions_generation_and_scores(base_run, cases_file):
    rows = predictions(base_run)
    assert [r["id"] for r in rows] == list(CASE_IDS)
    chain = rows[CASE_IDS.index("chain-calendar-directions")]
    assert len(chain["turns"]) == 2 and all("text" in t for t in chain["turns"])
    assert all(isinstance(r["text"], str) for r in rows if r is not chain)
    info = json.loads((base_run / "generation.json").read_text())
    assert info["cases"] == 5 and info["turns"] == 6 and info["batch_size"] == 4 and info["adapter"] is None
    assert info["cases_sha256"] and info["tokens_generated"] > 0 and info["cases_per_s"] > 0
    assert info["tokenizer"] == info["model"]
    report = json.loads((base_run / "report.json").read_text())  # eval score ran on what was written
    assert report["overall"]["cases"] == 5


def test_adapter_batched_equals_one_by_one(tiny_models, cases_file, adapter, adapter_run, base_run, tmp_path):
    assert eval_run("--model", tiny_models("qwen3"), "--adapter", adapter, "--cases", cases_file, "--out", tmp_path,
                    "--batch-size", 1, "--max-new-tokens", MAX_NEW) == 0
    batched = predictions(adapter_run)
    assert predictions(tmp_path) == batched  # greedy, and left padding changes nothing
    assert batched != predictions(base_run)  # the adapter is applied
    info = json.loads((adapter_run / "generation.json").read_text())
    assert info["adapter"] == str(adapter) and info["tokenizer"] == str(adapter)  # the adapter's template renders
    assert info["template_kwargs"] == THINKING_OFF  # as training rendered (run.json)


def test_a_fully_fine_tuned_adapter_dir_runs_as_the_model(cases_file, adapter, adapter_run, tmp_path):
    """RUN/adapter of model.finetune=full holds the model itself: with no --model, it runs as it is. Here it is the
    LoRA fixture folded into its base, so it must predict what base + adapter predicted."""
    from peft import PeftModel

    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    full = tmp_path / "run" / "adapter"
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).merge_and_unload() \
        .save_pretrained(full)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(full)
    (tmp_path / "run" / "run.json").write_text(json.dumps({"recipe": {"model": {"template_kwargs": THINKING_OFF}}}))

    out = tmp_path / "out"
    assert eval_run("--adapter", full, "--cases", cases_file, "--out", out, "--batch-size", 5,
                    "--max-new-tokens", MAX_NEW) == 0
    assert predictions(out) == predictions(adapter_run)
    info = json.loads((out / "generation.json").read_text())
    assert info["model"] == info["adapter"] == info["tokenizer"] == str(full)
    assert info["template_kwargs"] == THINKING_OFF


def test_template_variables_reach_the_prompt(tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models("qwen3"))
    case = chain_case()
    assert not Backend(tokenizer, "t", 8).render(case, case.messages).endswith("</think>\n\n")
    assert Backend(tokenizer, "t", 8, THINKING_OFF).render(case, case.messages).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    llama = AutoTokenizer.from_pretrained(tiny_models("llama-3.2"))
    prompt = Backend(llama, "t", 8, {"date_string": "26 Jul 2024"}).render(case, case.messages)
    assert "Today Date: 14 Mar 2025" in prompt  # the case's own date wins over the recipe's


def test_limit_runs_the_first_cases_and_leaves_scoring_out(tiny_models, cases_file, tmp_path, capsys):
    assert eval_run("--model", tiny_models("qwen3"), "--cases", cases_file, "--out", tmp_path, "--limit", 2,
                    "--max-new-tokens", 2) == 0
    assert [r["id"] for r in predictions(tmp_path)] == list(CASE_IDS[:2])
    assert not (tmp_path / "report.json").exists() and "not scored" in capsys.readouterr().out


class Scripted(Backend):
    """A backend that answers from a script and records the prompts it was given."""

    def __init__(self, tokenizer, outputs):
        super().__init__(tokenizer, "scripted", max_new_tokens=8)
        self.outputs, self.prompts = list(outputs), []

    def generate(self, prompts):
        self.prompts += prompts
        return [(self.outputs.pop(0), 3, True) for _ in prompts]


def chain_case():
    return next(c for c in load_dispatch_suite() if c.id == "chain-calendar-directions")


def test_chain_feeds_the_models_calls_and_the_cases_results_back(tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models("qwen3"))
    call = '<tool_call>\n{"name": "list_calendar_events", "arguments": {"date": "2025-03-17"}}\n</tool_call>'
    backend = Scripted(tokenizer, [call, "Take line 9."])
    [prediction], stats = predict([chain_case()], backend, batch_size=4)
    assert prediction.turns == [{"text": call}, {"text": "Take line 9."}]
    first, second = backend.prompts
    assert second.startswith(first)  # the conversation goes on from turn 0's prompt
    assert '{"name": "list_calendar_events", "arguments": {"date": "2025-03-17"}}' in second[len(first):]
    assert "<tool_response>" in second and "5 Avenue Anatole France" in second
    assert stats == {"turns": 2, "tokens": 6, "unfinished": 0, "template_errors": 0}

    # a turn without a (well-formed) call goes back as text
    backend = Scripted(tokenizer, ["I will look.", "ok"])
    predict([chain_case()], backend, batch_size=1)
    assert "I will look.<|im_end|>" in backend.prompts[1]


def test_a_template_that_refuses_a_later_turn_ends_the_chain(tiny_models):
    # Gemma 3's own template raises on tool messages: turn 1 cannot be rendered, so it counts as no output.
    tokenizer = AutoTokenizer.from_pretrained(tiny_models("gemma3"))
    [prediction], stats = predict([chain_case()], Scripted(tokenizer, ["first"]), batch_size=1)
    assert prediction.turns == [{"text": "first"}, {"text": ""}] and stats["template_errors"] == 1


@pytest.mark.parametrize("family, marker", [
    ("qwen3", "<|im_end|>"), ("qwen3.5", "<|im_end|>"), ("llama-3.2", "<|eot_id|>"), ("gemma3", "<end_of_turn>"),
    ("smollm2", "<|im_end|>"),
])
def test_end_of_turn_is_read_from_the_template(tiny_models, family, marker):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models(family))
    assert end_of_turn(tokenizer, tokenizer.chat_template) == marker


class FixedModel(torch.nn.Module):
    """Stands in for the model: `generate` appends the same scripted tokens to every prompt."""

    def __init__(self, continuation):
        super().__init__()
        self.continuation = torch.tensor([continuation])

    def generate(self, input_ids, **kwargs):
        return torch.cat([input_ids, self.continuation.expand(len(input_ids), -1)], dim=1)


def test_generation_stops_on_the_end_of_turn_and_strips_the_rest(tiny_models):
    backend = HFBackend(str(tiny_models("qwen3")), None, str(tiny_models("qwen3")), max_new_tokens=8)
    tok = backend.tokenizer
    assert backend.stop_ids == set(tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]))
    assert backend.config.do_sample is False and backend.config.stop_strings is None
    body = tok.encode("<tool_call>\nHi", add_special_tokens=False)
    for stop in ("<|im_end|>", "<|endoftext|>", None):  # None: ran out of tokens
        tail = tok.convert_tokens_to_ids([stop, "<|endoftext|>", "x"]) if stop else []  # what follows is dropped
        backend.model = FixedModel(body + tail)
        [(text, tokens, ended)] = backend.generate(["prompt"])
        assert text == "<tool_call>\nHi" and ended == (stop is not None)
        assert tokens == len(body) + (stop is not None)


def test_a_plain_text_end_of_turn_stops_as_a_string(tiny_models, tmp_path):
    # chatml_tools on OPT: the turn ends in a plain-text <|im_end|>, then </s>; the text stops before the marker
    tokenizer = AutoTokenizer.from_pretrained(tiny_models("opt"))
    tokenizer.chat_template = TEMPLATES["chatml_tools"].text()
    tokenizer.save_pretrained(tmp_path)
    backend = HFBackend(str(tiny_models("opt")), None, str(tmp_path), max_new_tokens=8)
    assert backend.end_of_turn == "<|im_end|>" and backend.config.stop_strings == ["<|im_end|>"]
    assert tokenizer.eos_token_id in backend.stop_ids
    generated = tokenizer.encode("Hello<|im_end|>", add_special_tokens=False)
    backend.model = FixedModel(generated)
    assert backend.generate(["prompt"]) == [("Hello", len(generated), True)]


def test_gguf_gives_the_same_predictions_as_transformers(tiny_models, tiny_llama_cpp, cases_file, adapter,
                                                         adapter_run, tmp_path):
    pytest.importorskip("llama_cpp")
    from dispatchtune.export import llama_cpp_tools

    if tiny_llama_cpp is None:
        pytest.skip("llama.cpp's converter is not set up (scripts/install_export_tools.sh)")
    from peft import PeftModel

    merged = tmp_path / "merged"
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_models("qwen3")), adapter).merge_and_unload() \
        .save_pretrained(merged)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(merged)
    gguf = tmp_path / "model-f32.gguf"
    llama_cpp_tools.convert(merged, gguf, "f32", tmp_path / "convert.log")
    assert eval_run("--model", merged, "--gguf", gguf, "--cases", cases_file, "--out", tmp_path / "gguf",
                    "--max-new-tokens", MAX_NEW, "--template-kwargs", json.dumps(THINKING_OFF)) == 0
    assert predictions(tmp_path / "gguf") == predictions(adapter_run)
    info = json.loads((tmp_path / "gguf" / "generation.json").read_text())
    assert info["gguf"] == str(gguf) and info["device"] == "llama.cpp"


def test_gguf_without_llama_cpp_says_what_to_install(tiny_models, cases_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails as if it were not installed
    with pytest.raises(UserError, match="pip install llama-cpp-python"):
        eval_run("--model", tiny_models("qwen3"), "--gguf", tmp_path / "x.gguf", "--cases", cases_file,
                 "--out", tmp_path / "out")


def test_the_backend_is_closed_when_generation_fails(tiny_models, cases_file, tmp_path, monkeypatch):
    closed = []

    class Failing(Scripted):
        def generate(self, prompts):
            raise RuntimeError("out of memory")

        def close(self):
            closed.append(True)

    tokenizer = AutoTokenizer.from_pretrained(tiny_models("qwen3"))
    monkeypatch.setattr(generate, "load_backend", lambda *args: Failing(tokenizer, []))
    with pytest.raises(RuntimeError, match="out of memory"):
        eval_run("--model", tiny_models("qwen3"), "--cases", cases_file, "--out", tmp_path / "out")
    assert closed == [True] and not (tmp_path / "out").exists()


def test_a_corrupt_run_json_is_named(tiny_models, cases_file, tmp_path):
    (tmp_path / "run" / "adapter").mkdir(parents=True)
    (tmp_path / "run" / "run.json").write_text("{truncated")
    with pytest.raises(UserError, match=f"{tmp_path / 'run' / 'run.json'} is not JSON"):
        eval_run("--model", tiny_models("qwen3"), "--tokenizer", tmp_path / "run" / "adapter", "--cases", cases_file,
                 "--out", tmp_path / "out")


def test_user_errors(tiny_models, cases_file, tmp_path):
    model = tiny_models("qwen3")
    with pytest.raises(UserError, match="no such file"):
        eval_run("--model", model, "--cases", tmp_path / "none.jsonl", "--out", tmp_path / "out")
    with pytest.raises(UserError, match="holds the cases file"):
        eval_run("--model", model, "--cases", cases_file, "--out", cases_file.parent)
    with pytest.raises(UserError, match="neither a PEFT adapter .* nor a fully fine-tuned model"):
        eval_run("--model", model, "--adapter", tmp_path, "--cases", cases_file, "--out", tmp_path / "out")
    with pytest.raises(UserError, match="no chat template"):
        eval_run("--model", tiny_models("opt"), "--cases", cases_file, "--out", tmp_path / "out")
    with pytest.raises(SystemExit):  # argparse: not a JSON object
        eval_run("--model", model, "--cases", cases_file, "--out", tmp_path / "out", "--template-kwargs", "[1]")
    with pytest.raises(UserError, match="must be positive"):
        eval_run("--model", model, "--cases", cases_file, "--out", tmp_path / "out", "--batch-size", 0)
    assert len(list(iter_cases(cases_file))) == len(CASE_IDS)
