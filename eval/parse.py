"""A model's raw output as tool calls, strictly: whether a model keeps to a call format is itself a metric.

`parse_output(text, tokenizer, prefix)` returns `(calls, None)`, where `[]` is an answer in plain text, or
`(None, reason)` for a malformed output. Text is parsed (`json`, `ast`), never executed.

Which format is accepted:
- A tokenizer whose chat template has a response parser (TRL's `add_response_schema` knows Qwen 2.5/3/3.5 and Llama
  3.1/3.2 among ours): `tokenizer.parse_response` decides, and that template's call format is the only one accepted.
  A call written in another format (say bare JSON from a Qwen model) is malformed, not a text answer.
- Otherwise (no tokenizer; SmolLM2, Gemma 3, OPT and the Hermes-style training templates, which TRL has no parser
  for) the format is read off the text:
  - Hermes: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks, one per call, the body JSON or a
    Python literal (repr); text around the blocks is allowed.
  - JSON: the whole output is one call `{"name": ..., "arguments"|"parameters": {...}}` (Llama 3 writes
    `parameters`) or a list of them (`[]` is no call, as BFCL models answer).
  - Python call syntax, the whole output: `f(a=1)` or `[f(a=1), g(b="x")]` (as BFCL models write), names may be
    dotted, keyword arguments only, each a literal.
  - ReAct (ToolLLaMA): an `Action: name` line, then `Action Input: {json object}` to the end.
  - Anything else is a text answer.
In every format a call is an object with a non-empty string `name` and an arguments object (absent means `{}`) and
no other keys. A leading `<think>...</think>` block is reasoning, not output. Malformed: empty output, an unclosed or
stray `<tool_call>` tag, a body that is neither JSON nor a literal, arguments that are not an object, a call with
other keys, an output shaped like JSON or a call expression that does not parse as one; and with a template's parser,
whatever it refuses and any call (or broken call) in a format other than the template's.

Model text is hostile input like any dataset record: JSON goes through the bounded decode (`bounded_json`: nesting,
integer digits, NaN/Infinity, lone surrogates), Python syntax is parsed only up to `MAX_AST_CHARS`, and every scan is
linear in the text, so one output can only be malformed, never stop the scoring of the others.
"""

from __future__ import annotations

import ast
import json
import re

from dispatchtune import bounded_json
from dispatchtune.data_prep.literal import MAX_AST_CHARS, NOT_LITERAL, python_literal
from dispatchtune.data_prep.sample import ToolCall

Parsed = tuple[list[ToolCall] | None, str | None]

_TAG = re.compile(r"</?tool_call>")
_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
_JSON_START = re.compile(r"\{|\[\s*[{\]]")  # an object, a list of objects, or []
_PY_CALL = re.compile(r"\[?\s*[A-Za-z_][\w.]*\(")  # `name(`, no space: a call expression (or a list of them)
_REACT = re.compile(r"^Action:[ \t]*(\S[^\n]*)\nAction Input:[ \t]*", re.M)


def parse_output(text: str, tokenizer=None, prefix: str = "", *, tools: list[dict] | None = None) -> Parsed:
    """`prefix` is the prompt the text continues (parse_response reads the template's own opening from it; `""`
    works for the templates above). `tools` lets parse_response type Qwen 3.5's untyped XML argument values."""
    if not text.strip():
        return None, "empty output"
    if problem := _unbalanced(text):
        return None, problem
    if tokenizer is not None and _has_response_parser(tokenizer):
        return _by_template(text, tokenizer, prefix, tools)
    return _by_shape(text, prefix)


def _by_shape(text: str, prefix: str = "") -> Parsed:
    """Our own parsers (see the module doc), the format read off the text; its tags are balanced."""
    text, problem = _strip_reasoning(text, prefix)
    if problem:
        return None, problem
    if "<tool_call>" in text:
        return _hermes(text)
    body = text.strip()
    if _JSON_START.match(body):
        try:
            return _json_calls(bounded_json.loads(body))
        except json.JSONDecodeError as e:
            return None, f"not JSON ({e.msg} at char {e.pos})"
    if _PY_CALL.match(body):
        return _python_calls(body)
    if action := _react_action(text):
        return _react(*action)
    if re.search(r"^Action:", text, re.M):
        return None, "an Action: line without an Action Input: line after it"
    return [], None


def _has_response_parser(tokenizer) -> bool:
    """Sets TRL's response template on the tokenizer (a change the caller sees) where TRL knows its chat template."""
    if getattr(tokenizer, "response_template", None):  # set before, by us or by the model's own files
        return True
    from trl.chat_template_utils import add_response_schema  # imported here: trl takes seconds to import

    try:
        add_response_schema(tokenizer)
    except ValueError:  # a template TRL does not know
        return False
    return True


def _by_template(text: str, tokenizer, prefix: str, tools: list[dict] | None) -> Parsed:
    eos = tokenizer.eos_token
    if eos and not text.endswith(eos):
        # Generation strips the end-of-turn token, which for these instruct templates is the tokenizer's eos; Llama's
        # parser needs it to close a call.
        text += eos
    try:
        message = tokenizer.parse_response(text, prefix=prefix, tools=tools)
    except (ValueError, RecursionError) as e:  # RecursionError: its own JSON decode of a deeply nested call
        return None, f"the chat template's parser refuses it: {(str(e).splitlines() or [type(e).__name__])[0]}"
    calls = []
    for raw in message.get("tool_calls") or []:
        try:  # the template parser's own JSON decode has none of our limits
            raw = bounded_json.loads(json.dumps(raw))
        except (ValueError, RecursionError) as e:
            return None, f"a call past the JSON limits: {getattr(e, 'msg', type(e).__name__)}"
        call, problem = _call(raw.get("function") if isinstance(raw, dict) else raw, ("arguments",))
        if problem:
            return None, problem
        calls.append(call)
    content = message.get("content") or ""
    if "<tool_call>" in content:
        return None, "a <tool_call> block the chat template's parser cannot read"
    if not calls:  # a text answer, unless the text is a call (or a broken one) in some other format
        found, problem = _by_shape(content)
        if found:
            return None, f"a call to {found[0].name!r}, not in the format of the model's chat template"
        if problem:
            return None, problem
    return calls, None


def _strip_reasoning(text: str, prefix: str) -> tuple[str, str | None]:
    """The text after a leading reasoning block; the prompt may have opened it (thinking templates end in <think>)."""
    opened = prefix.rfind("<think>") > prefix.rfind("</think>")
    if not (opened or text.lstrip().startswith("<think>")):
        return text, None
    _, closed, rest = text.partition("</think>")
    return (rest, None) if closed else ("", "a <think> block that is never closed")


def _unbalanced(text: str) -> str | None:
    tags = _TAG.findall(text)
    for i, tag in enumerate(tags):
        if tag != ("<tool_call>" if i % 2 == 0 else "</tool_call>"):
            return f"a stray {tag} tag"
    return "an unclosed <tool_call> tag" if len(tags) % 2 else None


def _hermes(text: str) -> Parsed:
    calls = []
    for body in _BLOCK.findall(text):
        body = body.strip()
        try:
            value = bounded_json.loads(body)
        except bounded_json.JSONLimitError as e:
            return None, f"a <tool_call> body past the JSON limits: {e.msg}"
        except json.JSONDecodeError as e:
            value = python_literal(body)
            if value is NOT_LITERAL:
                return None, f"a <tool_call> body that is neither JSON nor a Python literal ({e.msg}): {body[:60]!r}"
        call, problem = _call(value, ("arguments",))
        if problem:
            return None, problem
        calls.append(call)
    return calls, None


def _json_calls(value) -> Parsed:
    calls = []  # `[]` is no call, as BFCL models answer
    for item in value if isinstance(value, list) else [value]:
        call, problem = _call(item, ("arguments", "parameters"))
        if problem:
            return None, problem
        calls.append(call)
    return calls, None


def _call(obj, argument_keys: tuple[str, ...]) -> tuple[ToolCall | None, str | None]:
    """One call object: a non-empty string name, arguments an object under one of `argument_keys`, nothing else."""
    if not isinstance(obj, dict):
        return None, f"a call must be an object, not {type(obj).__name__}"
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return None, f"a call without a function name: {json.dumps(obj, ensure_ascii=False)[:60]}"
    extra = set(obj) - {"name", *argument_keys}
    present = [k for k in argument_keys if k in obj]
    if extra or len(present) > 1:
        return None, f"the call to {name!r} has unexpected keys: {', '.join(sorted(extra) or present)}"
    arguments = obj[present[0]] if present else {}
    if not isinstance(arguments, dict):
        return None, f"the arguments of {name!r} are a {type(arguments).__name__}, not an object"
    return ToolCall(name, arguments), None


def _python_calls(text: str) -> Parsed:
    """`f(a=1)` or `[f(a=1), g()]`: read with `ast`, every argument a literal; nothing is evaluated."""
    if len(text) > MAX_AST_CHARS:
        return None, f"a call expression of {len(text):,} characters, over the {MAX_AST_CHARS:,} read as Python"
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        return None, f"not a call expression ({type(e).__name__})"
    nodes = tree.elts if isinstance(tree, (ast.List, ast.Tuple)) else [tree]
    if not nodes:
        return None, "an empty list of calls"
    calls = []
    for node in nodes:
        name = _dotted(node.func) if isinstance(node, ast.Call) else None
        if name is None:
            return None, f"not a function call: {ast.unparse(node)[:60]!r}"
        if node.args or any(k.arg is None for k in node.keywords):
            return None, f"the call to {name!r} passes positional or ** arguments; only keywords name a parameter"
        arguments = {}
        for k in node.keywords:
            try:  # literal_eval of a node only reads constants; JSON round trip: tuples -> lists, no sets or bytes
                arguments[k.arg] = bounded_json.loads(json.dumps(ast.literal_eval(k.value)))
            except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
                return None, f"the argument {k.arg!r} of {name!r} is not a literal: {ast.unparse(k.value)[:40]!r}"
        calls.append(ToolCall(name, arguments))
    return calls, None


def _dotted(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := _dotted(node.value)):
        return f"{base}.{node.attr}"
    return None


def _react_action(text: str) -> tuple[str, str] | None:
    """Name and input of the first line `Action: name` (name not blank) followed by a line `Action Input: ...` (the
    input runs to the end of the text). The name is taken greedily to its line's end and trimmed after: a lazy name
    followed by optional blanks rescanned each line's blanks at every character."""
    if m := _REACT.search(text):
        return m.group(1).rstrip(" \t"), text[m.end():]
    return None


def _react(name: str, arguments: str) -> Parsed:
    try:
        value = bounded_json.loads(arguments.strip() or "{}")
    except json.JSONDecodeError as e:
        return None, f"an Action Input that is not JSON ({e.msg} at char {e.pos})"
    call, problem = _call({"name": name, "arguments": value}, ("arguments",))
    return ([call], None) if call else (None, problem)
