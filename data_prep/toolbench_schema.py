"""What the three ToolBench readers share: ToolBench's naming, its tools as JSON Schema, its traces as messages.

Answer files, ToolLLaMA records and ToolEval answers are three serialisations of the same kind of trace. Each reader
only turns its own serialisation into ToolBench's legacy OpenAI turns (`{"role", "content", "function_call"}`,
`role: "function"` results, a closing `Finish` call) and hands them to `trace_chat`, so the rules for calls, results,
thoughts and `Finish` live here once. Query files carry raw RapidAPI descriptions instead of functions: `api_tool`
builds them the way ToolBench built the functions of its answer files, so an API looks the same in a query prompt
and in a training trace.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from .readers._chat import Chat, need, tool_list
from .sample import Rejected, Sample, ToolCall, function_tool, parse_arguments

FINISH = "Finish"  # ToolBench's pseudo-tool that ends a trace: an answer or a give-up, never a real call
RESERVED = {"from", "class", "return", "false", "true", "id", "and"}
DESCRIPTION_MAX = 256  # ToolBench cuts API and parameter descriptions here
NAME_MAX = 64  # OpenAI's limit on function names; ToolBench keeps the last 64 characters
TYPES = {"NUMBER": "integer", "STRING": "string", "BOOLEAN": "boolean"}  # anything else is a string

# ToolBench's character class is `[^\u4e00-\u9fa5^a-z^A-Z^0-9^_]`: besides ASCII letters, digits and `_` it keeps CJK
# ideographs and (a slip in the class) `^`. Reproduced as is, so names match the answer files' function names.
_NOT_NAME = re.compile(r"[^\u4e00-\u9fa5^a-zA-Z0-9_]")
_UNDERSCORES = re.compile(r"_{2,}")
TOOLS_INTRO = "You have access of the following tools:"
SERVICE_INTRO = 'This is the subfunction for tool "{}", you can use this tool.'
_SERVICE = re.compile(r'This is the subfunction for tool "([^"]+)"')
_GROUP = re.compile(r"(?<![A-Za-z0-9])(G[123](?:_(?:instruction|category|tool))?)(?![A-Za-z0-9])")


def toolbench_name(name: str) -> str:
    """A tool, API or parameter name as ToolBench writes it in function names (`1 Day / Chart` -> `get_1_day_chart`)."""
    name = _UNDERSCORES.sub("_", _NOT_NAME.sub("_", name)).lower().strip("_")
    if name[:1].isdigit():
        name = "get_" + name
    return f"is_{name}" if name in RESERVED else name


def function_name(api_name: str, tool_name: str) -> str:
    return f"{toolbench_name(api_name)}_for_{toolbench_name(tool_name)}"[-NAME_MAX:]


@lru_cache(maxsize=1 << 16)
def service_of(description: str) -> str | None:
    """The RapidAPI service (ToolBench's "tool") of a function, from the description ToolBench writes for every
    function of its answer files, ToolLLaMA records and query files (`api_tool`); None for other tools. Cached: the
    same APIs are described in many samples."""
    match = _SERVICE.match(description)
    return match[1] if match else None


def api_tool(api: Any, field: str) -> dict:
    """A query file's `api_list` entry as a tool, with ToolBench's function name, description text and schema."""
    tool = toolbench_name(need(api, "tool_name", str, field))
    api_name = need(api, "api_name", str, field)
    name = function_name(api_name, tool)
    description = SERVICE_INTRO.format(tool)
    text = str(api.get("api_description") or "").strip()
    if text:
        description += f'The description of this function is: "{text.replace(api_name, name)[:DESCRIPTION_MAX]}"'
    properties, required = {}, []
    for key in ("required_parameters", "optional_parameters"):
        for k, param in enumerate(need(api, key, list, field)):
            at = f"{field}.{key}[{k}]"
            pname = toolbench_name(need(param, "name", str, at))
            properties[pname] = {
                "type": TYPES.get(param.get("type"), "string"),
                "description": str(param.get("description") or "")[:DESCRIPTION_MAX],
                **_default(param.get("default")),
            }
            if key == "required_parameters":
                required.append(pname)
    return function_tool(name, description, {"type": "object", "properties": properties, "required": required})


def function_tools(functions: Any, field: str) -> list[dict]:
    """ToolBench's function list (answer files, ToolLLaMA, ToolEval) as tools, without the `Finish` pseudo-tool."""
    return [t for t in tool_list(functions, field, _schema) if t["function"]["name"] != FINISH]


def _schema(parameters: dict) -> dict:
    """ToolBench's parameters are JSON Schema plus two keys of its own. `optional` is dropped: not being required
    says it. `example_value` is what ToolBench's converter named the query files' RapidAPI `default`, so it goes back
    to `default` (a standard annotation, which validators ignore): the same API then has the same schema in a query
    prompt and in a trace, and the value stays visible, as it was to the model that made the traces, whose calls
    often reuse it. Dropping it would leave those calls unexplained."""
    properties = parameters.get("properties") or {}
    if not isinstance(properties, dict) or not all(isinstance(p, dict) for p in properties.values()):
        raise ValueError("properties must map names to schemas")
    return {k: v for k, v in parameters.items() if k != "optional"} | {"properties": {
        name: {k: v for k, v in p.items() if k != "example_value"} | _default(p.get("example_value"))
        for name, p in properties.items()
    }}


def _default(value: Any) -> dict:
    return {} if value in ("", None) else {"default": value}


def finish_answer(arguments: Any, field: str) -> str:
    """The final answer a `Finish` call gives; a give-up, or a Finish without an answer, rejects the trace."""
    args = parse_arguments(arguments, field)
    kind = args.get("return_type")
    if kind == "give_up_and_restart":
        raise Rejected("give_up", "Finish(return_type=give_up_and_restart)", f"{field}.return_type")
    if kind != "give_answer":
        raise Rejected("bad_arguments", f"return_type is {kind!r}, not give_answer or give_up_and_restart",
                       f"{field}.return_type")
    answer = args.get("final_answer")
    if not isinstance(answer, (str, type(None))):
        raise Rejected("bad_arguments", f"final_answer is a {type(answer).__name__}, not text", f"{field}.final_answer")
    if not (answer or "").strip():
        raise Rejected("give_up", "Finish(give_answer) with no final_answer", f"{field}.final_answer")
    return answer


def trace_chat(turns: Iterable[tuple[str, Any]]) -> Chat:
    """Canonical messages from legacy turns given as `(field, turn)`, the field naming the turn in its source.

    A `function_call` becomes one tool call, a `role: "function"` turn its result. `Finish(give_answer)` becomes the
    final assistant content and must end the trace; a trace that never reaches it has no answer to learn and is
    rejected as a give-up. Assistant text right before a call is that step's thought (ToolBench sometimes writes it
    as a turn of its own): it becomes the call turn's content, and at `Finish` the final answer replaces it, so each
    step is one assistant turn. Keys other than role, content, name and function_call are dropped (DFS marks its
    retry prompts `valid: false`; they stay user turns, as ToolLLaMA trained them).
    """
    chat, thoughts, answered = Chat(), [], False
    for field, turn in turns:
        if answered:
            raise Rejected("bad_shape", "the trace goes on after its Finish call", field)
        role = need(turn, "role", str, field)
        content = turn.get("content")
        if content is not None and not isinstance(content, str):
            raise Rejected("bad_shape", f"content must be text, got {type(content).__name__}", f"{field}.content")
        if role == "assistant":
            thoughts += [content] if content else []
            call = turn.get("function_call")
            if call is None:
                continue
            name = need(call, "name", str, f"{field}.function_call")
            at = f"{field}.function_call.arguments"
            if name == FINISH:
                chat.assistant(finish_answer(call.get("arguments", {}), at))
                answered = True
            else:
                chat.assistant("\n\n".join(thoughts), [ToolCall(name, parse_arguments(call.get("arguments", {}), at))])
            thoughts = []
            continue
        if thoughts:  # assistant text that no call follows: a turn of its own
            chat.assistant("\n\n".join(thoughts))
            thoughts = []
        if role == "function":
            chat.result(content, field, name=turn.get("name"))
        elif role == "user":
            chat.user(content, f"{field}.content")
        elif role == "system":
            chat.system(system_prompt(content) if isinstance(content, str) else content, f"{field}.content")
        else:
            raise Rejected("bad_shape", f"unknown role {role!r}", f"{field}.role")
    if not answered:
        raise Rejected("give_up", "the trace ends without a Finish call, so it has no final answer")
    return chat


def system_prompt(text: str) -> str:
    """ToolBench's AutoGPT prompt cut to the RapidAPI tools it introduces (`1.transitaires: <description>`).

    The rest is ReAct and DFS boilerplate ("ALWAYS call Finish", "I give up and restart", Thought/Action format) that
    no longer holds once Finish is the final answer and calls are the template's own tool calls; the other readers
    drop their formats' boilerplate (Hermes, Glaive) for the same reason. The tool descriptions are information the
    function list does not carry, so they stay."""
    _, found, tools = text.partition(TOOLS_INTRO)
    return (found + tools).strip() if found else text


def toolbench_sample(chat: Chat, tools: list[dict], *, id: Any, query: str, source: str, query_id: Any = None,
                     **extra: Any) -> Sample:
    """The sample with ToolBench's meta. `split_key` is the bare query text: it is the one key the same query has in
    query files, answer files (whose user turn wraps it in `\\n...\\nBegin!\\n`), ToolLLaMA ids and ToolEval answers,
    so a held-out query keeps all of its traces out of training. `category` is the ToolBench group (`G1`, or the
    ToolEval test set `G1_instruction`) named in the file's path, None where the path names none."""
    sample = chat.sample(tools, id=id, category=group_of(source))
    sample.meta.update(query_id=None if query_id is None else str(query_id), split_key=query.strip(), **extra)
    return sample


def group_of(source: str) -> str | None:
    groups = _GROUP.findall(Path(source).as_posix())
    return groups[-1] if groups else None
