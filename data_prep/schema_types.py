"""Type names of other formats -> JSON Schema, so every tool reaches the chat template as proper JSON Schema.

xLAM writes Python annotations (`str`, `List[int]`, `Dict[str, Any]`, `str, optional`) and BFCL writes Gorilla names
(`dict`, `float`, `tuple`, `any`, and Java names such as `String` or `HashMap` in its Java categories). Both resolve
through the one table below; a name it does not know (`Any`, `Callable`, a class name) constrains nothing, which is
what JSON Schema says by leaving `type` out.
"""

from __future__ import annotations

import re

from dispatchtune.bounded_json import MAX_DEPTH

_JSON_TYPES = {
    **dict.fromkeys(("str", "string", "char"), "string"),
    **dict.fromkeys(("int", "integer", "long", "short", "byte", "bigint"), "integer"),
    **dict.fromkeys(("float", "double", "number"), "number"),
    **dict.fromkeys(("bool", "boolean"), "boolean"),
    **dict.fromkeys(("list", "array", "tuple", "set", "sequence", "arraylist", "queue", "stack"), "array"),
    **dict.fromkeys(("dict", "object", "mapping", "hashmap", "hashtable"), "object"),
    **dict.fromkeys(("none", "nonetype", "null"), "null"),
}

_OPTIONAL_SUFFIX = re.compile(r",\s*optional\s*$", re.IGNORECASE)
_NAME = re.compile(r"[\w.]*")  # `List`, `typing.Dict`


def json_type(name: str) -> str | None:
    """The JSON Schema type for a type name of any format, or None when the name constrains nothing (`any`)."""
    return _JSON_TYPES.get(name.strip().lower())


def gorilla_schema(schema: dict) -> dict:
    """A BFCL (Gorilla) parameter schema with its type names mapped, recursively through properties and items."""
    out = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            value = json_type(value)
            if value is None:  # `any`
                continue
        elif key == "properties" and isinstance(value, dict):
            value = {k: gorilla_schema(v) if isinstance(v, dict) else v for k, v in value.items()}
        elif key == "items" and isinstance(value, dict):
            value = gorilla_schema(value)
        out[key] = value
    return out


def xlam_parameters(params: dict) -> dict:
    """xLAM's `{name: {"type", "description", "default"?}}` as an object schema.

    A parameter is required unless its type carries the `, optional` suffix or it has a `default`.
    Raises ValueError naming the parameter whose spec is not an object.
    """
    properties, required = {}, []
    for name, spec in params.items():
        if not isinstance(spec, dict):
            raise ValueError(f"parameter {name!r} is a {type(spec).__name__}, not an object")
        annotation = spec.get("type", "")
        optional = isinstance(annotation, str) and bool(_OPTIONAL_SUFFIX.search(annotation))
        prop = annotation_schema(_OPTIONAL_SUFFIX.sub("", annotation)) if isinstance(annotation, str) else {}
        prop.update({k: v for k, v in spec.items() if k != "type"})
        properties[name] = prop
        if not optional and "default" not in spec:
            required.append(name)
    return {"type": "object", "properties": properties, "required": required}


def annotation_schema(annotation: str) -> dict:
    """A Python annotation as a schema: `List[int]` -> array of integer, `Optional[str]` -> string or null.
    Raises ValueError for an annotation nested deeper than JSON may be (MAX_DEPTH)."""
    text = annotation.replace(" ", "").replace(",...]", "]")  # `Tuple[int, ...]` is `Tuple[int]` here
    schema, end = _parse(text, 0)
    return schema if end == len(text) else {}  # text the grammar does not cover: constrain nothing


def _parse(text: str, pos: int, depth: int = 0) -> tuple[dict, int]:
    """Parses `Name[arg, ...] | ...` from `pos`; returns the schema and the position after it."""
    if depth > MAX_DEPTH:
        raise ValueError(f"a type annotation nested more than {MAX_DEPTH} levels deep")
    members = []
    while True:
        m = _NAME.match(text, pos)
        name, pos, args = m.group(), m.end(), []
        if text[pos : pos + 1] == "[":
            while True:
                arg, pos = _parse(text, pos + 1, depth + 1)
                args.append(arg)
                if text[pos : pos + 1] != ",":
                    break
            pos += text[pos : pos + 1] == "]"  # left short of the end when unbalanced, so the caller sees it
        members.append(_generic(name, args))
        if text[pos : pos + 1] != "|":
            break
        pos += 1
    return (_union(members) if len(members) > 1 else members[0]), pos


def _generic(name: str, args: list[dict]) -> dict:
    lowered = name.lower()
    if lowered in ("union", "optional"):
        return _union(args + [{"type": "null"}] if lowered == "optional" else args)
    kind = json_type(name.rsplit(".", 1)[-1]) if name else None
    schema = {"type": kind} if kind else {}
    if kind == "array" and args and args[0] and all(a == args[0] for a in args):
        schema["items"] = args[0]
    return schema


def _union(members: list[dict]) -> dict:
    """One `type` list when every member is a bare type; `anyOf` when some carry more; nothing when one is Any."""
    if not members or not all(members):
        return {}
    if all(list(m) == ["type"] for m in members):
        types = list(dict.fromkeys(t for m in members for t in _as_list(m["type"])))
        return {"type": types[0] if len(types) == 1 else types}
    return {"anyOf": members}


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]
