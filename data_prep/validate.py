"""Checks a `Sample` must pass before any stage uses it; a failure raises `Rejected` naming the field.

Nothing is repaired here: readers normalise their format, this module only judges the result.
"""

from __future__ import annotations

from .sample import Rejected, Sample, ToolCall, tool_name

_TYPES = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def validate(sample: Sample) -> None:
    schemas = _check_tools(sample.tools)
    _check_messages(sample.messages, schemas)


def _check_tools(tools) -> dict[str, dict]:
    if not isinstance(tools, list):
        raise Rejected("bad_tools", f"a {type(tools).__name__}, not a list", "tools")
    schemas: dict[str, dict] = {}
    for i, tool in enumerate(tools):
        field = f"tools[{i}]"
        name = tool_name(tool)
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise Rejected("bad_tools", 'not of the form {"type": "function", "function": {...}}', field)
        if not isinstance(name, str) or not name:
            raise Rejected("bad_tools", "the function has no name", field)
        params = tool["function"].get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict) or params.get("type", "object") != "object":
            raise Rejected("bad_tools", "parameters must be a JSON schema of type object", f"{field}.parameters")
        if name in schemas:
            raise Rejected("bad_tools", f"the tool {name!r} is listed twice", field)
        _check_schema(params, f"{field}.function.parameters")
        schemas[name] = params
    return schemas


def _check_schema(schema: dict, field: str) -> None:
    """The keywords `validate_value` reads have the shapes JSON Schema gives them, at every level: `properties` an
    object, `required` a list of names, `type` a name or a list of names, `enum` a list. (Other keywords, and
    subschemas that are not objects, constrain nothing here.)"""
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise Rejected("bad_tools", f"properties must be an object, got {type(props).__name__}", f"{field}.properties")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise Rejected("bad_tools", "required must be a list of parameter names", f"{field}.required")
    kind = schema.get("type")
    if kind is not None and not isinstance(kind, str) and not (
            isinstance(kind, list) and all(isinstance(k, str) for k in kind)):
        raise Rejected("bad_tools", "type must be a type name or a list of them", f"{field}.type")
    if "enum" in schema and not isinstance(schema["enum"], list):
        raise Rejected("bad_tools", f"enum must be a list, got {type(schema['enum']).__name__}", f"{field}.enum")
    for key, sub in props.items():
        if isinstance(sub, dict):
            _check_schema(sub, f"{field}.properties.{key}")
    if isinstance(schema.get("items"), dict):
        _check_schema(schema["items"], f"{field}.items")


def _check_messages(messages, schemas: dict[str, dict]) -> None:
    if not isinstance(messages, list) or not messages:
        raise Rejected("role_order", "no messages", "messages")
    pending: dict[str, str] = {}  # id -> name of calls awaiting a result
    prev = None
    for i, m in enumerate(messages):
        field = f"messages[{i}]"
        role = m.get("role") if isinstance(m, dict) else None
        content = m.get("content") if isinstance(m, dict) else None
        if content is not None and not isinstance(content, str):
            raise Rejected("bad_shape", f"content must be a string, got {type(content).__name__}", f"{field}.content")
        if role == "tool":
            _check_result(m, pending, field)
        elif pending:
            raise Rejected("unanswered_call", f"calls {sorted(pending)} get no result before this {role} turn", field)
        if role == "system":
            if i != 0:
                raise Rejected("role_order", "a system message after the first turn", field)
        elif role == "user":
            if prev not in (None, "system", "assistant", "tool"):
                raise Rejected("role_order", f"a user turn after a {prev} turn", field)
            if not content:
                raise Rejected("role_order", "an empty user turn", field)
        elif role == "assistant":
            if prev not in ("user", "tool"):
                raise Rejected("role_order", f"an assistant turn after a {prev or 'nothing'}", field)
            calls = m.get("tool_calls") or []
            if not calls and not content:
                raise Rejected("role_order", "an assistant turn with neither content nor tool calls", field)
            for k, raw in enumerate(calls):
                call = ToolCall.from_message(raw, f"{field}.tool_calls[{k}]")
                _check_call(call, schemas, f"{field}.tool_calls[{k}]")
                if not call.id or call.id in pending:
                    raise Rejected("bad_shape", "each tool call needs a unique id", f"{field}.tool_calls[{k}].id")
                pending[call.id] = call.name
        elif role != "tool":
            raise Rejected("role_order", f"unknown role {role!r}", f"{field}.role")
        prev = role
    if not any(m.get("role") == "user" for m in messages):
        raise Rejected("role_order", "no user turn", "messages")


def _check_result(m: dict, pending: dict[str, str], field: str) -> None:
    call_id = m.get("tool_call_id")
    if call_id not in pending:
        raise Rejected("orphan_tool_result", f"tool_call_id {call_id!r} answers no pending call", f"{field}.tool_call_id")
    name = pending.pop(call_id)
    if m.get("name") != name:
        raise Rejected("orphan_tool_result", f"name {m.get('name')!r} but call {call_id!r} is {name!r}", f"{field}.name")
    if not isinstance(m.get("content"), str):
        raise Rejected("bad_shape", "a tool result needs string content", f"{field}.content")


def _check_call(call: ToolCall, schemas: dict[str, dict], field: str) -> None:
    if call.name not in schemas:
        raise Rejected("unknown_tool", f"{call.name!r} is not among the tools", f"{field}.function.name")
    validate_value(call.arguments, schemas[call.name], f"{field}.function.arguments")


def validate_value(value, schema: dict, field: str) -> None:
    """Required keys present, declared types right, enums respected, recursively; undeclared keys are refused."""
    if not isinstance(schema, dict):
        return
    types = schema.get("type")
    types = [types] if isinstance(types, str) else types if isinstance(types, list) else []
    if types and not any(_is_type(value, t) for t in types):
        raise Rejected("schema_violation", f"{value!r:.60} is not of type {'/'.join(types)}", field)
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        raise Rejected("schema_violation", f"{value!r:.60} is not one of {schema['enum']!r:.120}", field)
    if isinstance(value, dict) and ("properties" in schema or "required" in schema):  # shapes: see _check_schema
        props = schema.get("properties") or {}
        for key in schema.get("required") or []:
            if key not in value:
                raise Rejected("schema_violation", f"the required argument {key!r} is missing", field)
        for key, v in value.items():
            if key in props:
                validate_value(v, props[key], f"{field}.{key}")
            elif not schema.get("additionalProperties", False):
                raise Rejected("schema_violation", f"{key!r} is not a parameter of the tool", f"{field}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for k, v in enumerate(value):
            validate_value(v, schema["items"], f"{field}[{k}]")


def _is_type(value, name) -> bool:
    py = _TYPES.get(name) if isinstance(name, str) else None
    if py is None:
        return True  # a type JSON Schema does not define: not ours to judge
    if isinstance(value, bool) and name != "boolean":
        return False
    return isinstance(value, py)
