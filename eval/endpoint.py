"""`eval run --endpoint URL`: predictions from a model served behind an OpenAI-compatible API (vLLM, SGLang, TGI,
llama.cpp's server, Ollama), in one of two modes.

- `completions`: the prompt is rendered here, with the chat template and template variables local generation uses
  (eval/generate.py's `Backend.render`), and sent to `/v1/completions`; the server returns raw text, which our parser
  reads, as for local generation. Greedy (temperature 0, no repetition penalty), so a served model scores what the
  same model scores in process. The request asks the server not to add special tokens to the prompt (the template
  writes its own BOS) and not to strip them from the output (a call marker may be one), where it knows those options.
- `chat`: the case's messages and tools go to `/v1/chat/completions`, and the server renders and parses: its own
  `tool_calls` are what is scored, its raw `content` is kept beside them. A turn where the content holds a call our
  parser reads but the server returned none is counted in generation.json (`server_dropped_calls`): the model wrote
  the call and the server's tool-call parser lost it, which is how served dispatch models fail in production.

A chain case runs as a loop, as in local generation: the model's own turn and the case's tool results go back before
the next turn. Cases run `concurrency` at a time. The `openai` client times requests out and retries transient
failures (connection errors, timeouts, 408, 409, 429, 5xx) with exponential backoff; a case the server refuses (400,
422: too long a prompt, say) gets an empty turn and its reason, and the run goes on. Anything else stops the run.

Resuming: each finished case is appended to OUT/predictions.journal.jsonl as it finishes, under a first line naming
the run (endpoint, mode, served model, cases file hash, generation settings). A re-run with the same settings sends
only the cases the journal lacks; once all are done, OUT/predictions.jsonl is written in case order and the journal
removed. The API key is read from the environment (`OPENAI_API_KEY`, or the variable `api_key_env` names) and is
never printed or written.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dispatchtune.atomic import write_text
from dispatchtune.errors import UserError

from .generate import GENERATION, PREDICTIONS, Backend, load_tokenizer, next_turn, recipe_template_kwargs
from .parse import parse_output
from .records import Case, Prediction
from .score import file_hash

MODES = ("completions", "chat")
JOURNAL = "predictions.journal.jsonl"
CONCURRENCY, TIMEOUT_S, MAX_RETRIES = 8, 600.0, 5
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
SERVED = ("endpoint", "mode", "served_model", "server_dropped_calls")  # what a report says of a served run
_DROPPED_EXAMPLES = 20


@dataclass
class Endpoint:
    """Where and how to ask: the server's base URL (`http://host:8000/v1`), the mode, the model name it serves (a
    LoRA adapter served by name too; default: the only model the server lists), and the environment variable that
    holds the API key (default OPENAI_API_KEY; a server without keys needs none)."""

    url: str
    mode: str = "completions"
    served_model: str | None = None
    api_key_env: str | None = None
    concurrency: int = CONCURRENCY
    timeout: float = TIMEOUT_S
    max_retries: int = MAX_RETRIES
    http_client: object = None  # an httpx.Client of your own: proxies, certificates, event hooks

    def client(self):
        try:
            import openai
        except ImportError:
            raise UserError("--endpoint needs the openai client: pip install 'dispatchtune[serve]'") from None
        if self.mode not in MODES:
            raise UserError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.concurrency < 1 or self.timeout <= 0 or self.max_retries < 0:
            raise UserError("--concurrency and --timeout must be positive, --max-retries not negative")
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise UserError(f"--endpoint {public_url(self.url)}: expected an http(s) URL such as "
                            "http://localhost:8000/v1")
        env = self.api_key_env or DEFAULT_KEY_ENV
        key = os.environ.get(env)
        if self.api_key_env and not key:
            raise UserError(f"--api-key-env {env}: that environment variable is not set")
        # A server started without keys accepts any; the client insists on one.
        return openai.OpenAI(base_url=self.url, api_key=key or "none", timeout=self.timeout,
                             max_retries=self.max_retries, http_client=self.http_client), key


def public_url(url: str) -> str:
    """The URL without any user:password part, fit to print and record."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "") if parts.username or parts.password else parts.netloc
    return urlunsplit(parts._replace(netloc=netloc))


def endpoint_predictions(cases: list[Case], cases_file: Path, out: Path, endpoint: Endpoint, *, model: str | None,
                         adapter: Path | None = None, tokenizer: str | None = None,
                         template_kwargs: dict | None = None, max_new_tokens: int) -> tuple[dict, object]:
    """What `generate_predictions` does, with a server generating: writes OUT/predictions.jsonl and
    OUT/generation.json; returns what generation.json holds and the tokenizer text predictions are parsed with."""
    model, tokenizer = (None if v is None else str(v) for v in (model, tokenizer))
    client, key = endpoint.client()
    redact = _redactor(key)
    try:
        served = endpoint.served_model or model or _only_model(client, endpoint)
        source = _tokenizer_source(model, adapter, tokenizer)
        renderer = _renderer(endpoint.mode, source, adapter, template_kwargs, max_new_tokens)
        # chat mode reads the server's text for calls it dropped with the model's tokenizer, where there is one
        parser = renderer.tokenizer if renderer else (load_tokenizer(source) if source else None)
        kwargs = renderer.template_kwargs if renderer else dict(template_kwargs or {})
        identity = {"endpoint": public_url(endpoint.url), "mode": endpoint.mode, "served_model": served,
                    "cases_sha256": file_hash(cases_file), "max_new_tokens": max_new_tokens,
                    "template_kwargs": kwargs, "tokenizer": source}
        ask = _Asker(client, served, endpoint.mode, renderer, kwargs, max_new_tokens)
        out.mkdir(parents=True, exist_ok=True)
        done, stats = _run(cases, ask, out / JOURNAL, identity, endpoint.concurrency)
    except Exception as e:  # the key must not reach the console through any message
        _reraise_redacted(e, redact)
    predictions = [done[c.id] for c in cases]
    write_text(out / PREDICTIONS, "".join(p.to_json() + "\n" for p in predictions))
    dropped = dropped_calls(cases, predictions, parser) if endpoint.mode == "chat" else None
    report = {
        "model": model, "adapter": None if adapter is None else str(adapter), "gguf": None,
        "tokenizer": identity["tokenizer"], "template_kwargs": kwargs,
        "endpoint": identity["endpoint"], "mode": endpoint.mode, "served_model": served,
        "api_key_env": endpoint.api_key_env or (DEFAULT_KEY_ENV if key else None),
        "cases_file": str(cases_file), "cases_sha256": identity["cases_sha256"],
        "cases": len(cases), "turns": stats["turns"], "concurrency": endpoint.concurrency,
        "max_new_tokens": max_new_tokens, "tokens_generated": stats["tokens"],
        "unfinished_turns": stats["unfinished"], "template_errors": stats["template_errors"],
        "refused_turns": stats["refused"], "resumed_cases": stats["resumed"], "requests": stats["requests"],
        "server_dropped_calls": dropped,
        "wall_s": stats["wall_s"], "cases_per_s": stats["cases_per_s"], "device": "endpoint",
        "python": platform.python_version(),
    }
    write_text(out / GENERATION, json.dumps(report, indent=2) + "\n")
    (out / JOURNAL).unlink(missing_ok=True)
    print(f"eval run: {len(cases)} cases ({stats['resumed']} from an earlier run), {stats['requests']} requests to "
          f"{identity['endpoint']} ({endpoint.mode}, model {served}) in {stats['wall_s']:.1f} s -> {out / PREDICTIONS}")
    if stats["refused"]:
        print(f"  the server refused {stats['refused']} turns (empty predictions; reasons in {out / PREDICTIONS})")
    if dropped and dropped["turns"]:
        print(f"  in {dropped['turns']} turns the model wrote a call that the server returned as text (its tool-call "
              f"parser dropped it): {', '.join(dropped['cases'][:5])}")
    return report, parser


def dropped_calls(cases: list[Case], predictions: list[Prediction], tokenizer=None) -> dict:
    """Chat turns where the server returned no `tool_calls` but its content parses as calls: `{"turns", "cases"}`."""
    turns, ids = 0, []
    for case, prediction in zip(cases, predictions):
        hit = False
        for turn in prediction.turns:
            if turn.get("calls") == [] and turn.get("text"):
                calls, _ = parse_output(turn["text"], tokenizer, tools=case.tools)
                if calls:
                    turns += 1
                    hit = True
        if hit and len(ids) < _DROPPED_EXAMPLES:
            ids.append(case.id)
    return {"turns": turns, "cases": ids}


# ---- one request ----

class _Asker:
    """One turn of one case, asked of the server: returns (the turn's prediction, the messages that continue the
    conversation, tokens generated, whether it ended)."""

    def __init__(self, client, served: str, mode: str, renderer: Backend | None, template_kwargs: dict,
                 max_new_tokens: int):
        self.client, self.served, self.mode, self.renderer = client, served, mode, renderer
        self.template_kwargs, self.max_new_tokens = template_kwargs, max_new_tokens
        self.requests = 0
        self._lock = threading.Lock()

    def __call__(self, case: Case, k: int, conversation: list[dict]) -> tuple[dict, list[dict], int, bool]:
        with self._lock:
            self.requests += 1
        if self.mode == "chat":
            return self._chat(case, k, conversation)
        return self._completion(case, k, conversation)

    def _completion(self, case: Case, k: int, conversation: list[dict]):
        prompt = self.renderer.render(case, conversation)
        stop = [self.renderer.end_of_turn] if self.renderer.end_of_turn else None
        response = self.client.completions.create(
            model=self.served, prompt=prompt, max_tokens=self.max_new_tokens, temperature=0, stop=stop,
            extra_body={"add_special_tokens": False, "skip_special_tokens": False, "repeat_penalty": 1.0,
                        "top_k": 1})
        choice = response.choices[0]
        text, marked = self.renderer.cut(choice.text or "")
        ended = choice.finish_reason == "stop" or marked
        more = next_turn(case, k, text, self.renderer.tokenizer, prompt) if k + 1 < len(case.turns) else []
        return {"text": text}, more, _tokens(response), ended

    def _chat(self, case: Case, k: int, conversation: list[dict]):
        extra = {"chat_template_kwargs": self.template_kwargs} if self.template_kwargs else None
        response = self.client.chat.completions.create(
            model=self.served, messages=openai_messages(conversation), tools=case.tools or None, temperature=0,
            max_tokens=self.max_new_tokens, extra_body=extra)
        choice = response.choices[0]
        message = choice.message
        calls = [{"name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls or []]
        turn = {"calls": calls, "text": message.content or ""}
        more = []
        if k + 1 < len(case.turns):
            results = case.turns[k].results
            said = {"role": "assistant", "content": message.content or ""}
            if calls:  # call i takes result i's id, as in local generation
                said["tool_calls"] = [
                    {"id": results[i].get("tool_call_id") if i < len(results) else f"call_{k}_{i}", "type": "function",
                     "function": {"name": c["name"], "arguments": c["arguments"]}} for i, c in enumerate(calls)]
            more = [said, *results]
        return turn, more, _tokens(response), choice.finish_reason in ("stop", "tool_calls")


def openai_messages(messages: list[dict]) -> list[dict]:
    """Our messages in the API's shape: call arguments as JSON text, calls and tool results with ids."""
    out, pending = [], []
    for n, message in enumerate(messages):
        message = dict(message)
        if message.get("tool_calls"):
            calls = []
            for i, call in enumerate(message["tool_calls"]):
                fn = call.get("function", call)
                arguments = fn.get("arguments", {})
                calls.append({"id": call.get("id") or f"call_{n}_{i}", "type": "function",
                              "function": {"name": fn.get("name"), "arguments": arguments if isinstance(arguments, str)
                                           else json.dumps(arguments, ensure_ascii=False)}})
            message["tool_calls"] = calls
            pending = [c["id"] for c in calls]
        elif message.get("role") == "tool" and not message.get("tool_call_id"):
            message["tool_call_id"] = pending.pop(0) if pending else f"call_{n}"
        out.append(message)
    return out


def _tokens(response) -> int:
    usage = getattr(response, "usage", None)
    return getattr(usage, "completion_tokens", 0) or 0


# ---- the run ----

def _run(cases: list[Case], ask: _Asker, journal: Path, identity: dict, concurrency: int) -> tuple[dict, dict]:
    """Every case without a prediction in the journal, `concurrency` at a time, each appended to the journal as it
    finishes; returns id -> prediction for all cases and the counts for generation.json."""
    import openai
    from tqdm import tqdm

    stats = dict.fromkeys(("turns", "tokens", "unfinished", "template_errors", "refused"), 0)
    done, earlier = _resume(journal, identity, {c.id for c in cases})
    for key, value in earlier.items():
        stats[key] = stats.get(key, 0) + value
    stats["resumed"] = len(done)
    todo = [c for c in cases if c.id not in done]
    stop = threading.Event()
    start = time.perf_counter()
    bar = tqdm(total=len(cases), initial=len(done), desc="eval run", unit="case", file=sys.stderr)
    if not done:
        write_text(journal, json.dumps({"journal": identity}) + "\n")
    with open(journal, "a", encoding="utf-8") as log:
        def keep(future) -> None:
            prediction, counts = future.result()
            done[prediction.id] = prediction
            log.write(json.dumps({"prediction": json.loads(prediction.to_json()), "stats": counts},
                                 ensure_ascii=False) + "\n")
            log.flush()
            for key, value in counts.items():
                stats[key] = stats.get(key, 0) + value
            bar.update(1)

        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="eval-endpoint")
        running = {pool.submit(_case, case, ask, stop) for case in todo}
        failed = None
        try:
            while running and failed is None:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:  # every case that finished is kept, even beside one that failed
                    if future.exception() is None:
                        keep(future)
                    elif failed is None:
                        failed = future
            if failed is not None:
                # No new request starts; those in flight end (answered or failed), and what they answered is kept.
                stop.set()
                for future in wait(running).done:
                    if not future.cancelled() and future.exception() is None:
                        keep(future)
                failed.result()
        except openai.APIError as e:
            raise UserError(f"{_describe(e)}; {len(done)} of {len(cases)} cases are saved in {journal}, and "
                            "re-running the same command sends only the rest") from None
        finally:
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            bar.close()
    wall = time.perf_counter() - start
    stats["requests"] = ask.requests
    stats["wall_s"] = round(wall, 3)
    stats["cases_per_s"] = round(len(todo) / wall, 3) if wall and todo else None
    return done, stats


class _Stopped(Exception):
    """The run stopped (an error or Ctrl-C elsewhere): a case still queued or mid-chain gives up."""


def _case(case: Case, ask: _Asker, stop: threading.Event) -> tuple[Prediction, dict]:
    """One case, turn after turn; a turn the server refuses, or the template cannot render, ends it with empty turns."""
    import openai
    from jinja2 import TemplateError

    conversation, turns = list(case.messages), []
    counts = {"turns": 0, "tokens": 0, "unfinished": 0, "template_errors": 0, "refused": 0}
    for k in range(len(case.turns)):
        if stop.is_set():
            raise _Stopped
        try:
            turn, more, tokens, ended = ask(case, k, conversation)
        except TemplateError as e:
            if k == 0:
                raise UserError(f"the chat template refuses case {case.id!r}: {e}") from None
            counts["template_errors"] += 1
            turns += [{"text": ""}] * (len(case.turns) - k)
            break
        except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
            counts["refused"] += 1
            turns += [{"text": "", "error": _describe(e)}] * (len(case.turns) - k)
            break
        turns.append(turn)
        counts["turns"] += 1
        counts["tokens"] += tokens
        counts["unfinished"] += not ended
        conversation += more
    return Prediction(case.id, turns), counts


def _resume(journal: Path, identity: dict, ids: set[str]) -> tuple[dict[str, Prediction], dict]:
    """The predictions an earlier run of the same settings journaled, and its counts; a journal of other settings is
    the user's to move. A torn last line (the process died writing it) is ignored."""
    if not journal.is_file():
        return {}, {}
    lines = journal.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0])["journal"] if lines else None
    except (ValueError, KeyError, TypeError):
        header = None
    if header is None:
        return {}, {}
    if header != identity:
        changed = sorted(k for k in identity if header.get(k) != identity[k])
        raise UserError(f"{journal} holds an unfinished run with other settings ({', '.join(changed)}); re-run with "
                        "those, or remove the file (or pick another --out) to start afresh")
    done, stats, kept = {}, {}, lines[:1]
    for line in lines[1:]:
        try:
            record = json.loads(line)
            prediction = Prediction.from_line(record["prediction"])
        except (ValueError, KeyError, TypeError):
            continue
        if prediction.id in ids and prediction.id not in done:
            done[prediction.id] = prediction
            kept.append(line)
            for key, value in record.get("stats", {}).items():
                stats[key] = stats.get(key, 0) + value
    write_text(journal, "\n".join(kept) + "\n")  # without the torn line, so appending starts on a fresh one
    return done, stats


def _tokenizer_source(model: str | None, adapter: Path | None, tokenizer: str | None) -> str | None:
    """As local generation picks it: `tokenizer`, else the adapter's, else the model's."""
    if tokenizer is not None:
        return tokenizer
    if adapter is not None and (adapter / "tokenizer_config.json").is_file():
        return str(adapter)
    return model


def _renderer(mode: str, source: str | None, adapter: Path | None, template_kwargs: dict | None,
              max_new_tokens: int) -> Backend | None:
    """Completions mode renders prompts as local generation does: with the template of the tokenizer at `source`
    and training's template variables (from run.json beside the adapter or tokenizer)."""
    if mode != "completions":
        return None
    if source is None:
        raise UserError("--mode completions renders the prompts here: pass --model (or --tokenizer) with the chat "
                        "template the served model was trained on")
    if template_kwargs is None:
        template_kwargs = recipe_template_kwargs(Path(str(adapter or source)))
    return Backend(load_tokenizer(source), source, max_new_tokens, template_kwargs)


def _only_model(client, endpoint: Endpoint) -> str:
    names = [m.id for m in client.models.list().data]
    if len(names) != 1:
        raise UserError(f"{public_url(endpoint.url)} serves {len(names)} models ({', '.join(names[:10])}); "
                        "pick one with --served-model")
    return names[0]


def _describe(e: Exception) -> str:
    status = getattr(e, "status_code", None)
    message = str(getattr(e, "message", None) or e).splitlines()[0] if str(e) else type(e).__name__
    if status in (401, 403):
        return f"the server refused the API key ({status}: {message}); set it in OPENAI_API_KEY or --api-key-env"
    if status == 404:
        return f"the server has no such model or route (404: {message}); check --served-model and --endpoint"
    return f"the server failed ({type(e).__name__}{f' {status}' if status else ''}: {message})"


def _redactor(key: str | None):
    return (lambda text: text.replace(key, "***")) if key and len(key) >= 4 else (lambda text: text)


def _reraise_redacted(e: Exception, redact) -> None:
    if isinstance(e, UserError):
        raise UserError(redact(str(e))) from None
    if redact(str(e)) != str(e):
        raise RuntimeError(f"{type(e).__name__}: {redact(str(e))}") from None
    raise e
