"""eval run --endpoint against real OpenAI-compatible servers that these tests start on 127.0.0.1 and stop.

Completions mode runs against llama-cpp-python's server (its `[server]` extra) on the tiny Qwen3's GGUF: the same
verdicts as in-process generation on that file, a server killed mid-run and a resume that sends only the missing
cases (counted in the server's own access log), and an API key that the server demands and no file or output holds.
Chat mode runs against llama-cpp-python's server too, whose chat handler renders the GGUF's template with the tools
but parses no calls out of the reply (so its tool_calls are always empty: the "server dropped the call" case), and
against a small scripted server in this file that returns tool_calls, a call left in the content, a transient 503
and a refusal, so that each is scored as such.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dispatchtune.errors import UserError
from dispatchtune.eval import cli
from dispatchtune.eval.api import evaluate
from dispatchtune.eval.endpoint import JOURNAL, Endpoint, openai_messages
from dispatchtune.eval.suite import load_dispatch_suite

pytest.importorskip("openai", reason="pip install 'dispatchtune[serve]'")

CASE_IDS = ("sel-weather-umbrella", "par-currency-three", "none-thanks", "fmt-attendees", "chain-calendar-directions",
            "sel-timer-five", "args-units-weight")
MAX_NEW = 6
KEY = "sk-test-0123456789abcdef"
THINKING_OFF = {"enable_thinking": False}


@pytest.fixture(scope="module")
def cases_file(tmp_path_factory):
    """Suite cases (one a chain), each offered only the tools it expects plus web_search: short prompts."""
    path = tmp_path_factory.mktemp("cases") / "cases.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for case in load_dispatch_suite():
            if case.id in CASE_IDS:
                wanted = {next(iter(c)) for t in case.turns for c in t.expected} | {"web_search"}
                case.tools = [t for t in case.tools if t["function"]["name"] in wanted]
                f.write(case.to_json() + "\n")
    return path


@pytest.fixture(scope="module")
def gguf(tiny_models, tiny_llama_cpp, tmp_path_factory):
    pytest.importorskip("llama_cpp.server.app", reason="pip install 'llama-cpp-python[server]'")
    from dispatchtune.export import llama_cpp_tools

    if tiny_llama_cpp is None:
        pytest.skip("llama.cpp's converter is not set up (scripts/install_export_tools.sh)")
    model = tiny_models("qwen3")
    out = tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf"
    llama_cpp_tools.convert(model, out, "f32", out.with_suffix(".log"))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server in a child process; `requests(path)` counts what it served, from
    its own access log."""

    def __init__(self, gguf: Path, log: Path, port: int | None = None, *extra: str):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "tiny",
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "4096", "--api_key", KEY,
               "--verbose", "false", *extra]
        self.process = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not self._up():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)

    def _up(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=2).is_success
        except httpx.HTTPError:
            return False

    def requests(self, path: str) -> int:
        return sum(f'"POST /v1/{path} HTTP' in line for line in self.log.read_text(errors="replace").splitlines())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def llama_server(gguf, tmp_path):
    servers = []

    def start(*extra, port=None, log="server.log"):
        servers.append(LlamaServer(gguf, tmp_path / log, port, *extra))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def eval_run(*argv) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(["run", *(str(a) for a in argv)]))


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "cases.jsonl").read_text(encoding="utf-8").splitlines()]


def predictions(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def local_run(tiny_models, gguf, cases_file, tmp_path_factory):
    """In-process generation on the same GGUF, the reference."""
    out = tmp_path_factory.mktemp("local")
    assert eval_run("--model", tiny_models("qwen3"), "--gguf", gguf, "--cases", cases_file, "--out", out,
                    "--max-new-tokens", MAX_NEW, "--template-kwargs", json.dumps(THINKING_OFF)) == 0
    return out


def assert_no_key(out: Path, *texts: str) -> None:
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    for text in texts:
        assert KEY not in text


def test_completions_mode_gives_the_in_process_verdicts(tiny_models, cases_file, local_run, llama_server, tmp_path,
                                                        monkeypatch, capsys):
    server = llama_server()
    monkeypatch.setenv("TINY_KEY", KEY)
    out = tmp_path / "served"
    assert eval_run("--endpoint", server.url, "--api-key-env", "TINY_KEY", "--model", tiny_models("qwen3"),
                    "--served-model", "tiny", "--cases", cases_file, "--out", out, "--max-new-tokens", MAX_NEW,
                    "--template-kwargs", json.dumps(THINKING_OFF), "--concurrency", 3) == 0
    assert rows(out) == rows(local_run)  # every verdict and reason, case by case
    assert predictions(out) == predictions(local_run)
    info = json.loads((out / "generation.json").read_text())
    assert info["endpoint"] == server.url and info["mode"] == "completions" and info["served_model"] == "tiny"
    assert info["api_key_env"] == "TINY_KEY" and info["turns"] == 8 and info["requests"] == 8
    assert server.requests("completions") == 8 and not (out / JOURNAL).exists()
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["endpoint"] == server.url and report["meta"]["served_model"] == "tiny"
    captured = capsys.readouterr()
    assert_no_key(out, captured.out, captured.err)


def test_kill_mid_run_then_resume_sends_only_the_missing_cases(tiny_models, cases_file, local_run, llama_server,
                                                               tmp_path, monkeypatch, capsys):
    import httpx

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = llama_server(log="first.log")
    answered = []

    def kill_after_two(response):  # runs in the client as each response arrives: the kill lands between requests
        answered.append(response.url)
        if len(answered) == 2:
            response.read()  # the hook runs once the headers are in: the body must be too, before the kill
            server.stop()

    out = tmp_path / "served"
    endpoint = Endpoint(server.url, served_model="tiny", concurrency=1, max_retries=1, timeout=20,
                        http_client=httpx.Client(event_hooks={"response": [kill_after_two]}))
    common = dict(model=tiny_models("qwen3"), cases=cases_file, out=out, max_new_tokens=MAX_NEW,
                  template_kwargs=THINKING_OFF)
    with pytest.raises(UserError, match=r"2 of 7 cases are saved in .*journal.*re-running"):
        evaluate(endpoint=endpoint, **common)
    assert not (out / "predictions.jsonl").exists()
    journal = (out / JOURNAL).read_text(encoding="utf-8").splitlines()
    assert len(journal) == 3 and KEY not in "".join(journal)

    again = llama_server(port=server.port, log="second.log")
    report = evaluate(endpoint=Endpoint(again.url, served_model="tiny", concurrency=2), **common)
    first_two = {json.loads(line)["prediction"]["id"] for line in journal[1:]}
    missing_turns = sum(2 if i == "chain-calendar-directions" else 1 for i in CASE_IDS if i not in first_two)
    assert again.requests("completions") == missing_turns
    info = json.loads((out / "generation.json").read_text())
    assert info["resumed_cases"] == 2 and info["requests"] == missing_turns and info["turns"] == 8
    assert predictions(out) == predictions(local_run) and rows(out) == rows(local_run)
    assert report["overall"]["cases"] == 7 and not (out / JOURNAL).exists()
    captured = capsys.readouterr()
    assert_no_key(out, captured.out, captured.err)


def test_a_journal_of_other_settings_is_not_resumed(tiny_models, cases_file, tmp_path):
    out = tmp_path / "served"
    out.mkdir()
    other = {"endpoint": "http://elsewhere/v1", "mode": "completions"}
    (out / JOURNAL).write_text(json.dumps({"journal": other}) + "\n")
    with pytest.raises(UserError, match="other settings .*endpoint"):
        evaluate(model=tiny_models("qwen3"), cases=cases_file, out=out, max_new_tokens=MAX_NEW,
                 endpoint=Endpoint("http://127.0.0.1:9/v1", served_model="x", max_retries=0))


def test_a_wrong_key_is_one_line_without_the_key(tiny_models, cases_file, llama_server, tmp_path, monkeypatch):
    server = llama_server()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-123456")
    with pytest.raises(UserError, match="refused the API key") as e:
        evaluate(model=tiny_models("qwen3"), cases=cases_file, out=tmp_path / "out", max_new_tokens=MAX_NEW,
                 endpoint=Endpoint(server.url, served_model="tiny", max_retries=0))
    assert "sk-wrong-key-123456" not in str(e.value)


def test_chat_mode_scores_the_servers_tool_calls_and_keeps_its_text(tiny_models, cases_file, llama_server, tmp_path,
                                                                    monkeypatch):
    """llama-cpp-python's default chat handler renders the GGUF's template with the tools but parses no calls:
    every turn holds the server's (empty) tool_calls and its content, and is scored on the former."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = llama_server()
    out = tmp_path / "chat"
    report = evaluate(cases=cases_file, out=out, max_new_tokens=MAX_NEW,
                      endpoint=Endpoint(server.url, mode="chat", concurrency=2))  # the served name from /v1/models
    assert server.requests("chat/completions") == 8
    turns = [t for p in predictions(out) for t in p.get("turns", [p])]
    assert len(turns) == 8 and all(t["calls"] == [] and isinstance(t["text"], str) for t in turns)
    assert any(t["text"] for t in turns)
    by_id = {r["id"]: r for r in rows(out)}
    assert by_id["none-thanks"]["ast_match"] and not by_id["sel-weather-umbrella"]["ast_match"]
    info = json.loads((out / "generation.json").read_text())
    assert info["served_model"] == "tiny" and info["mode"] == "chat" and info["model"] is None
    assert report["meta"]["mode"] == "chat"


# ---- a scripted server, for what the tiny model cannot be made to do ----

class Scripted(http.server.BaseHTTPRequestHandler):
    """Chat completions answered by the last user message: `script[text]` is a list of replies, used in turn (a
    number is an HTTP status to fail with); every request body is kept in `seen`."""

    script: dict = {}
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"body": body, "auth": self.headers.get("Authorization")})
        last = body["messages"][-1]
        key = last["content"] if last["role"] == "user" else f"after {last['name']}"
        replies = type(self).script[key]
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if isinstance(reply, int):
            self.send_response(reply)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps({"error": {"message": f"status {reply}"}}).encode())
            return
        content, calls = reply
        message = {"role": "assistant", "content": content, "tool_calls": [
            {"id": f"srv_{i}", "type": "function", "function": {"name": n, "arguments": a}}
            for i, (n, a) in enumerate(calls)] or None}
        data = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                           "choices": [{"index": 0, "message": message,
                                        "finish_reason": "tool_calls" if calls else "stop"}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Scripted.seen = []
    yield server, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_chat_mode_against_a_scripted_server(scripted, tmp_path, monkeypatch, capsys):
    _, url = scripted
    cases = {c.id: c for c in load_dispatch_suite()}
    chosen = [cases[i] for i in ("sel-weather-umbrella", "par-currency-three", "none-thanks", "fmt-attendees",
                                 "chain-calendar-directions")]
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(c.to_json() + "\n" for c in chosen), encoding="utf-8")
    user = {c.id: c.messages[-1]["content"] for c in chosen}
    chain = cases["chain-calendar-directions"]
    first, second = (next(iter(t.expected[0])) for t in chain.turns)
    right = {k: v[0] for k, v in next(iter(chain.turns[0].expected[0].values())).items()}
    weather = next(iter(cases["sel-weather-umbrella"].turns[0].expected[0].items()))
    Scripted.script = {
        # a transient failure first, then the right call
        user["sel-weather-umbrella"]: [503, ("", [(weather[0], json.dumps({k: v[0] for k, v in weather[1].items()}))])],
        # the model wrote the call, the server's parser left it in the text
        user["par-currency-three"]: [('<tool_call>\n{"name": "convert_currency", "arguments": {"amount": 1}}\n'
                                      '</tool_call>', [])],
        user["none-thanks"]: [("You're welcome!", [])],
        user["fmt-attendees"]: [400],  # refused: an empty turn, and the run goes on
        user["chain-calendar-directions"]: [("", [(first, json.dumps(right))])],
        f"after {first}": [("", [(second, "{not json")])],  # a malformed call from the server
    }
    monkeypatch.setenv("SCRIPTED_KEY", KEY)
    out = tmp_path / "out"
    report = evaluate(cases=path, out=out, endpoint=Endpoint(url, mode="chat", served_model="my-adapter",
                                                             api_key_env="SCRIPTED_KEY", max_retries=2))
    by_id = {r["id"]: r for r in rows(out)}
    assert by_id["sel-weather-umbrella"]["ast_match"] is True
    assert by_id["par-currency-three"]["ast_match"] is False and by_id["none-thanks"]["ast_match"] is True
    assert "empty output" in by_id["fmt-attendees"]["reason"]
    assert "turn 1" in by_id["chain-calendar-directions"]["reason"]
    assert "does not decode" in by_id["chain-calendar-directions"]["reason"]
    info = json.loads((out / "generation.json").read_text())
    assert info["server_dropped_calls"] == {"turns": 1, "cases": ["par-currency-three"]}
    assert info["refused_turns"] == 1 and report["meta"]["server_dropped_calls"]["turns"] == 1
    # what the server saw: the adapter's name, the key, the tools, and on the chain's second turn the model's own
    # call (with the id of the case's tool result) followed by that result
    assert {s["body"]["model"] for s in Scripted.seen} == {"my-adapter"}
    assert {s["auth"] for s in Scripted.seen} == {f"Bearer {KEY}"}
    assert sum(s["body"]["messages"][-1].get("content") == user["sel-weather-umbrella"] for s in Scripted.seen) == 2
    follow = next(s["body"] for s in Scripted.seen if s["body"]["messages"][-1]["role"] == "tool")
    said, result = follow["messages"][-2:]
    assert said["tool_calls"][0]["function"] == {"name": first, "arguments": json.dumps(right)}
    assert said["tool_calls"][0]["id"] == result["tool_call_id"] == chain.turns[0].results[0]["tool_call_id"]
    assert [t["function"]["name"] for t in follow["tools"]] == [t["function"]["name"] for t in chain.tools]
    captured = capsys.readouterr()
    assert "dropped" in captured.out
    assert_no_key(out, captured.out, captured.err)


def test_messages_in_the_apis_shape():
    call = {"function": {"name": "f", "arguments": {"a": 1}}}
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "name": "f", "content": "{}"}]
    shaped = openai_messages(messages)
    sent = shaped[1]["tool_calls"][0]
    assert sent["function"]["arguments"] == '{"a": 1}' and sent["type"] == "function"
    assert shaped[2]["tool_call_id"] == sent["id"] and "id" not in call  # the case's own messages are left as they are


def test_endpoint_user_errors(tiny_models, cases_file, tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    base = ["--cases", cases_file, "--out", tmp_path / "o"]
    with pytest.raises(UserError, match="--api-key-env NO_SUCH_KEY"):
        eval_run("--endpoint", "http://127.0.0.1:9/v1", "--api-key-env", "NO_SUCH_KEY", *base)
    with pytest.raises(UserError, match="go with --endpoint"):
        eval_run("--model", tiny_models("qwen3"), "--served-model", "x", *base)
    with pytest.raises(UserError, match="one of them"):
        eval_run("--endpoint", "http://127.0.0.1:9/v1", "--gguf", tmp_path / "x.gguf", "--model", "m", *base)
    with pytest.raises(UserError, match="pass --model"):
        eval_run("--endpoint", "http://127.0.0.1:9/v1", "--served-model", "x", *base)
    with pytest.raises(UserError, match="http"):
        eval_run("--endpoint", "localhost:8000", "--mode", "chat", "--served-model", "x", *base)
    with pytest.raises(UserError, match="server failed"):  # nothing listens there
        eval_run("--endpoint", "http://127.0.0.1:9/v1", "--mode", "chat", "--served-model", "x", "--max-retries", 0,
                 *base)
    assert os.environ.get("NO_SUCH_KEY") is None
