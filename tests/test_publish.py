"""`dispatchtune publish` with the real huggingface_hub client against a local stand-in for the Hub.

The stand-in implements the endpoints the client calls for `create_repo` + `create_commit` (learned by recording
its requests): repo creation, preupload (safetensors/GGUF marked LFS, as the Hub does), the LFS batch API, the LFS
upload itself and the NDJSON commit. Xet is switched off (HF_HUB_DISABLE_XET): its CAS protocol is huggingface_hub's
business, and the LFS path exercises the same create_commit call. Every request is recorded, to check the files
that arrive and where the token went.
"""

import base64
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from dispatchtune.cli import main

TOKEN = "hf_dispatchtuneTestToken0123456789"
LFS_SUFFIXES = (".safetensors", ".gguf")


class FakeHub:
    def __init__(self):
        self.requests: list[dict] = []
        self.lfs: dict[str, bytes] = {}  # oid -> uploaded bytes
        self.commits: list[list[dict]] = []  # NDJSON lines of each commit
        self.created: list[dict] = []
        self.validated: list[str] = []
        self.refuse: dict[str, int] = {}  # a fragment of a request's path -> the HTTP status to answer it with
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status=200, data=None):
                body = json.dumps(data if data is not None else {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                hub.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                     "body": body})
                parts = self.path.split("?")[0].strip("/").split("/")
                for fragment, status in hub.refuse.items():
                    if fragment in self.path:
                        return self._reply(status, {"error": f"refused with {status}"})
                if self.path == "/api/repos/create":
                    hub.created.append(json.loads(body))
                    repo = json.loads(body)
                    return self._reply(200, {"url": f"{hub.url}/{repo['organization']}/{repo['name']}"})
                if self.path == "/api/validate-yaml":  # the client checks README.md's metadata before committing
                    content = json.loads(body)["content"]
                    hub.validated.append(content)
                    front = yaml.safe_load(content.split("---")[1]) if content.startswith("---") else None
                    ok = isinstance(front, dict)
                    return self._reply(200 if ok else 400, {"errors": [] if ok else [{"message": "bad metadata"}]})
                if parts[:2] == ["api", "models"] and parts[4:5] == ["preupload"]:
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [
                        {"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                         "shouldIgnore": False} for f in files]})
                if self.path.endswith(".git/info/lfs/objects/batch"):
                    objects = json.loads(body)["objects"]
                    return self._reply(200, {"transfer": "basic", "objects": [
                        {"oid": o["oid"], "size": o["size"],
                         "actions": {"upload": {"href": f"{hub.url}/lfs-upload/{o['oid']}"}}} for o in objects]})
                if parts[0] == "lfs-upload" and self.command == "PUT":
                    hub.lfs[parts[1]] = body
                    return self._reply(200)
                if parts[:2] == ["api", "models"] and parts[4:5] == ["commit"]:
                    hub.commits.append([json.loads(line) for line in body.decode().splitlines() if line])
                    return self._reply(200, {"commitUrl": f"{hub.url}/{parts[2]}/{parts[3]}/commit/abc",
                                             "commitOid": "a" * 40, "pullRequestUrl": None})
                return self._reply(404, {"error": f"not implemented: {self.command} {self.path}"})

            do_GET = do_POST = do_PUT = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def uploaded(self) -> dict[str, bytes]:
        """Path in repo -> content of the last commit (inline files and LFS pointers resolved)."""
        files = {}
        for line in self.commits[-1]:
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                files[value["path"]] = self.lfs[value["oid"]]
        return files


@pytest.fixture
def hub():
    server = FakeHub()
    yield server
    server.server.shutdown()


@pytest.fixture
def run_dir(tmp_path):
    """A finished run as earlier stages leave it: adapter (+ PEFT's stub README), run.json, verified merged and
    gguf outputs, and an eval report. Small stand-in files: publish only moves them."""
    run = tmp_path / "run"
    from dispatchtune.tiny_models import build_tokenizer
    from dispatchtune.families import resolve_template

    adapter = run / "adapter"
    adapter.mkdir(parents=True)
    tokenizer = build_tokenizer("gemma3")
    tokenizer.chat_template = resolve_template("gemma3_tools")
    tokenizer.save_pretrained(adapter)
    (adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "base_model_name_or_path": "google/gemma-3-1b-it", "r": 16, "lora_alpha": 32,
        "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}))
    (adapter / "adapter_model.safetensors").write_bytes(os.urandom(4096))
    (adapter / "README.md").write_text("PEFT stub card")
    (run / "run.json").write_text(json.dumps({
        "recipe": {"model": {"name_or_path": "google/gemma-3-1b-it", "chat_template": "gemma3_tools"},
                   "lora": {"r": 16, "alpha": 32, "qlora": False}, "training": {"learning_rate": 0.0002}},
        "model": {"name_or_path": "google/gemma-3-1b-it", "qlora": False},
        "data": {"train": {"samples": 1200, "tool_calls": 1500, "trained_tokens": 90000}},
        "metrics": {"first_loss": 2.5, "last_loss": 0.4, "steps": 300},
        "versions": {"transformers": "5.23.0", "peft": "0.21.2"}}))
    merged = run / "merged"
    merged.mkdir()
    (merged / "model.safetensors").write_bytes(os.urandom(8192))
    (merged / "config.json").write_text("{}")
    (merged / "verify.json").write_text(json.dumps({
        "passed": True, "prompts": 3, "dtype": "bfloat16",
        "metrics": {"max_rel_err": 0.02, "mean_cosine": 0.9999, "top1": 0.99, "positions": 900}}))
    gguf = run / "gguf"
    gguf.mkdir()
    (gguf / "run-q4_k_m.gguf").write_bytes(b"GGUF" + os.urandom(2048))
    (gguf / "run-q4_k_m.Modelfile").write_text("FROM ./run-q4_k_m.gguf\n")
    (gguf / "verify.json").write_text(json.dumps({"passed": True, "files": [
        {"file": "run-q4_k_m.gguf", "quant": "q4_k_m", "size_mb": 0.8, "passed": True, "greedy": None,
         "logits": {"max_rel_err": 0.4, "mean_cosine": 0.96, "top1": 0.7, "positions": 900}}]}))
    return run


def publish_cli(run, hub_url, *args, token=TOKEN):
    """The real CLI in a fresh process: HF_ENDPOINT and HF_HUB_DISABLE_XET are read when huggingface_hub loads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update(HF_ENDPOINT=hub_url, HF_HUB_DISABLE_XET="1", HF_HOME=str(run.parent / "hf_home"),
               HF_HUB_DISABLE_TELEMETRY="1")
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "dispatchtune", "publish", "--run", str(run), *args],
                          env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])


def test_publish_uploads_adapter_card_and_extras_with_the_token_only_in_authorization(hub, run_dir):
    result = publish_cli(run_dir, hub.url, "--repo", "acme/dispatch-gemma", "--private", "--include", "merged,gguf",
                         "--dataset", "acme/dispatch-calls")
    assert result.returncode == 0, result.stderr

    assert hub.created == [{"name": "dispatch-gemma", "organization": "acme", "visibility": "private",
                            "type": "model"}]
    files = hub.uploaded()
    adapter = run_dir / "adapter"
    assert files["adapter_model.safetensors"] == (adapter / "adapter_model.safetensors").read_bytes()  # via LFS
    assert files["adapter_config.json"] == (adapter / "adapter_config.json").read_bytes()
    assert "tokenizer.json" in files
    assert files["merged/model.safetensors"] == (run_dir / "merged" / "model.safetensors").read_bytes()
    assert files["gguf/run-q4_k_m.gguf"] == (run_dir / "gguf" / "run-q4_k_m.gguf").read_bytes()
    assert {"merged/verify.json", "gguf/verify.json", "gguf/run-q4_k_m.Modelfile"} <= set(files)
    card = files["README.md"].decode()
    assert card == (run_dir / "publish" / "README.md").read_text()  # the card, not PEFT's stub
    assert "PEFT stub" not in card

    # The token travels in Authorization headers to the Hub API, nowhere else: not in bodies, URLs, other
    # headers, the LFS upload (its URL is pre-signed), the card, or the output.
    carried = [r for r in hub.requests if r["headers"].get("authorization") == f"Bearer {TOKEN}"]
    assert {r["path"].split("/")[1] for r in carried} >= {"api"}
    for r in hub.requests:
        elsewhere = {k: v for k, v in r["headers"].items() if k.lower() != "authorization"}
        assert TOKEN not in r["path"] and TOKEN.encode() not in r["body"] and TOKEN not in json.dumps(elsewhere)
        if r["path"].startswith("/lfs-upload/"):
            assert "authorization" not in {k.lower() for k in r["headers"]}
    assert TOKEN not in result.stdout + result.stderr
    assert not any(TOKEN.encode() in p.read_bytes() for p in run_dir.rglob("*") if p.is_file())


def test_card_metadata_format_usage_and_evidence(hub, run_dir):
    eval_dir = run_dir / "eval"
    assert publish_cli(run_dir, hub.url, "--repo", "acme/dispatch-gemma", "--include", "gguf",
                       "--dataset", "acme/dispatch-calls", "--license", "gemma").returncode == 0
    card = (run_dir / "publish" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "google/gemma-3-1b-it" and front["library_name"] == "peft"
    assert {"tool-calling", "function-calling", "dispatchtune", "lora", "gguf"} <= set(front["tags"])
    assert front["datasets"] == ["acme/dispatch-calls"] and front["license"] == "gemma"
    assert "<tool_call>" in card and "`gemma3_tools`" in card and "```jinja" in card
    assert "PeftModel.from_pretrained" in card and "ollama create" in card and "llama-server" in card
    assert "Not evaluated." in card and not eval_dir.exists()
    assert "| run-q4_k_m.gguf | 0.8 MB |" in card and "0.96000" in card
    assert "1200 samples, 1500 tool calls, 90000 trained tokens" in card and "2.500 -> 0.400" in card
    assert "merged/" not in card  # not included this time


def test_dry_run_writes_the_card_lists_files_and_sends_nothing(hub, run_dir, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    code = main(["publish", "--run", str(run_dir), "--repo", "acme/x", "--include", "merged", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and hub.requests == []
    assert (run_dir / "publish" / "README.md").is_file()
    assert "adapter_model.safetensors" in out and "merged/model.safetensors" in out and "README.md" in out
    assert "gguf/" not in out


def test_refusals(hub, run_dir, capsys, tmp_path):
    result = publish_cli(run_dir, hub.url, "--repo", "acme/x", token=None)
    assert result.returncode == 2 and "HF_TOKEN" in result.stderr and hub.requests == []

    (run_dir / "gguf" / "verify.json").write_text(json.dumps({"passed": False}))
    assert main(["publish", "--run", str(run_dir), "--repo", "acme/x", "--include", "gguf", "--dry-run"]) == 2
    assert "not a verified output" in capsys.readouterr().err
    assert main(["publish", "--run", str(run_dir), "--repo", "nope", "--dry-run"]) == 2
    assert main(["publish", "--run", str(tmp_path / "empty"), "--repo", "acme/x", "--dry-run"]) == 2
    assert "holds no adapter (nor a fully fine-tuned model)" in capsys.readouterr().err


def test_card_with_eval_reports_uses_the_eval_comparison_table(run_dir):
    from dispatchtune.export.card import model_card

    summary = {"cases": 10, "metrics": {"ast_match": {"n": 10, "passed": 9, "rate": 0.9, "ci95": [0.6, 0.98]}}}
    for name, rate in (("base", 0.3), ("adapter", 0.9)):
        report = {"meta": {"name": name, "cases_sha256": "0" * 64}, "overall": summary,
                  "categories": {"simple": summary}, "predictions": {}}
        report["overall"] = {"cases": 10, "metrics": {"ast_match": {**summary["metrics"]["ast_match"], "rate": rate}}}
        (run_dir / "eval" / name).mkdir(parents=True)
        (run_dir / "eval" / name / "report.json").write_text(json.dumps(report))
    card = model_card(run_dir, "acme/x", include=[], datasets=[], license=None)
    assert "Not evaluated" not in card and "### AST match by category" in card
    assert "30.0%" in card and "90.0%" in card
    assert "license: other" in card and "the base model's" in card


def test_a_full_finetune_publishes_the_model_and_the_card_says_so(run_dir, capsys, monkeypatch):
    """model.finetune=full: RUN/adapter holds the whole model; it goes to the repo root, loadable without PEFT."""
    adapter = run_dir / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        (adapter / name).unlink()
    (adapter / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    (adapter / "generation_config.json").write_text("{}")
    (adapter / "model.safetensors").write_bytes(os.urandom(4096))
    info = json.loads((run_dir / "run.json").read_text())
    info["model"]["finetune"] = "full"
    info["recipe"]["lora"] = {}
    (run_dir / "run.json").write_text(json.dumps(info))
    verify = json.loads((run_dir / "merged" / "verify.json").read_text())
    (run_dir / "merged" / "verify.json").write_text(json.dumps({**verify, "finetune": "full"}))
    monkeypatch.delenv("HF_TOKEN", raising=False)

    assert main(["publish", "--run", str(run_dir), "--repo", "acme/x", "--include", "merged", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "  model.safetensors  " in out and "  config.json  " in out and "merged/model.safetensors" in out
    card = (run_dir / "publish" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "transformers" and "lora" not in front["tags"]
    assert "A full fine-tune (every weight trained) of `google/gemma-3-1b-it`" in card
    assert "LoRA" not in card and "PeftModel" not in card
    assert 'model = AutoModelForCausalLM.from_pretrained("acme/x")\n' in card
    assert "| fine-tuning | full: every weight trained |" in card
    assert "A copy in the base's dtype (bfloat16)" in card and "The chat template saved with the model" in card
    assert "Merged model vs the trained model on 3 rendered prompts" in card


@pytest.mark.parametrize("where, status, message", [
    ("/api/repos/create", 401, "the Hub refused the token (401 Unauthorized: expired, revoked or mistyped); log in "
                               "again with `hf auth login` or set HF_TOKEN"),
    ("/commit/", 403, "the token may not write to acme/x (403 Forbidden: refused with 403); use a token with write"),
    ("/preupload", 400, "the Hub refused publishing to acme/x (400: refused with 400); nothing was committed"),
])
def test_every_hub_refusal_is_one_line_without_the_token(hub, run_dir, where, status, message):
    hub.refuse[where] = status
    result = publish_cli(run_dir, hub.url, "--repo", "acme/x")
    err = [line for line in result.stderr.strip().splitlines() if not re.search(r"\d+%\|", line)]  # upload bars
    assert result.returncode == 2 and len(err) == 1, result.stderr
    assert err[0].startswith("dispatchtune publish: error: ") and message in err[0], err[0]
    assert TOKEN not in result.stdout + result.stderr


def test_an_unreachable_hub_is_one_line(run_dir, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = publish_cli(run_dir, url, "--repo", "acme/x")
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1, result.stderr
    assert f"cannot reach the Hub at {url} (" in err[0] and "check the connection (or HF_ENDPOINT)" in err[0]
