"""BFCL's Java and JavaScript categories: arguments written as source text, read back as BFCL's checker reads them.

In `simple_java` and `simple_javascript` the model sees every parameter as a string, its description telling the
language type (`This is Java long type parameter in string representation.`), and writes values in that language's
syntax: `"5L"`, `"new ArrayList<>(Arrays.asList(\\"a\\", \\"b\\"))"`, `"{key: 'value'}"`. BFCL's checker converts each
string with the parameter's original type (`bfcl_eval.eval_checker.ast_eval.type_convertor`) and then checks the
value as it checks Python's, except that an int is not taken for a float. The converters here follow BFCL's
regular expressions, quirks included (a Java `char` is never unquoted, array elements are split on every comma, a
text that does not parse stays a string), since agreement with BFCL's numbers is the point; tests/
test_bfcl_agreement.py holds them to BFCL's own code. A value that is not a string fails, as in BFCL.

`function_doc` is BFCL's own rewriting of a category's function docs for the model (its language note on every
description, and the Java/JavaScript types folded into the descriptions); `source_types` keeps the original types
in the case's meta for scoring, where `source_values` converts the decoded calls.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from dispatchtune.data_prep.sample import ToolCall

LANGUAGES = {"java": "Java 8 SDK", "javascript": "JavaScript"}  # category suffix -> BFCL's note
_JSON = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}
_JAVA = {"byte": int, "short": int, "integer": int, "float": float, "double": float, "long": int, "boolean": bool,
         "char": str, "Array": list, "ArrayList": list, "HashMap": dict, "Hashtable": dict, "Queue": list,
         "Stack": list, "String": str, "any": str}
_JS = {"String": str, "integer": int, "float": float, "Bigint": int, "Boolean": bool, "dict": dict, "array": list,
       "any": str}
_NESTED = {"java": ("Array", "ArrayList"), "javascript": ("array",)}
_INT = re.compile(r"^-?\d+$")


def language(category: str) -> str | None:
    """`java` or `javascript` for BFCL's categories of those languages, else None (Python)."""
    suffix = category.rsplit("_", 1)[-1]
    return suffix if suffix in LANGUAGES else None


def function_doc(functions: list[dict], category: str) -> list[dict]:
    """The function docs as BFCL shows them to the model (`utils._func_doc_language_specific_pre_processing`)."""
    functions = copy.deepcopy(functions)
    lang = language(category)
    note = f" Note that the provided function is in {LANGUAGES.get(lang, 'Python 3')} syntax."
    for function in functions:
        if not isinstance(function, dict) or not isinstance(function.get("parameters"), dict):
            continue
        function["description"] = str(function.get("description", "")) + note
        if lang is None:
            continue
        name = LANGUAGES[lang].split()[0]
        for value in (function["parameters"].get("properties") or {}).values():
            kind = value.get("type")
            value["description"] = value.get("description", "") + (
                f" This parameter can be of any type of {name} object in string representation." if kind == "any"
                else f" This is {name} {kind} type parameter in string representation.")
            if kind in _NESTED[lang] and isinstance(value.get("items"), dict):
                value["description"] += (f" The list elements are of type {value['items'].get('type')}; they are "
                                         "not in string representation.")
                del value["items"]
            if lang == "javascript" and kind == "dict" and "properties" in value:
                value["description"] += (" The dictionary entries have the following schema; they are not in string "
                                         f"representation. {json.dumps(value['properties'])}")
                del value["properties"]
            value["type"] = "string"
    return functions


def source_types(functions: list[dict]) -> dict[str, dict]:
    """Function name -> {"properties": {param: {"type", "items"?}}, "required"}: the original types scoring needs."""
    out = {}
    for function in functions:
        params = function.get("parameters") or {}
        props = {}
        for param, spec in (params.get("properties") or {}).items():
            props[param] = {"type": spec.get("type")}
            if isinstance(spec.get("items"), dict):
                props[param]["items"] = {"type": spec["items"].get("type")}
        out.setdefault(function["name"], {"properties": props, "required": list(params.get("required") or [])})
    return out


class NotSourceText:
    """An argument that should have been source text and was another JSON value: no type accepts it (as in BFCL)."""

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        return f"{self.value!r} (not a string of source text)"


def schemas(lang: str, types: dict[str, dict]) -> dict[str, dict]:
    """Function name -> parameter schema in the Python types BFCL's converters produce, for the checker."""
    table = _JAVA if lang == "java" else _JS
    out = {}
    for name, spec in types.items():
        props = {}
        for param, t in spec["properties"].items():
            props[param] = {"type": _JSON[table.get(t["type"], str)]}
            if t["type"] in _NESTED[lang]:
                props[param]["items"] = {"type": _JSON[table.get((t.get("items") or {}).get("type"), str)]}
        out[name] = {"properties": props, "required": spec["required"]}
    return out


def source_values(lang: str, types: dict[str, dict], calls: list[ToolCall] | None) -> list[ToolCall] | None:
    """The calls with each argument's source text converted as BFCL converts it for the parameter's type."""
    if calls is None:
        return None
    table = _JAVA if lang == "java" else _JS
    converted = []
    for call in calls:
        props = types.get(call.name, {}).get("properties", {})
        args = {}
        for param, value in call.arguments.items():
            t = props.get(param)
            if t is None:
                args[param] = value  # not in the schema: the check names it
            elif type(value) is not str:
                args[param] = NotSourceText(value)
            elif t["type"] not in table:
                args[param] = value  # a type BFCL has no converter for
            else:
                nested = (t.get("items") or {}).get("type") if t["type"] in _NESTED[lang] else None
                args[param] = convert(lang, value, t["type"], nested)
        converted.append(ToolCall(call.name, args, call.id))
    return converted


def convert(lang: str, value: str, kind: str, nested: str | None = None) -> Any:
    """One value's source text as BFCL's converter for `lang` reads it; text that does not parse stays a string."""
    return _java(value, kind, nested) if lang == "java" else _js(value, kind, nested)


# ---- Java (bfcl_eval's java_type_converter) ----

def _java(value: str, kind: str, nested: str | None = None) -> Any:
    if kind in ("byte", "short", "integer"):
        return int(value) if _INT.match(value) else value
    if kind == "float":
        return float(value[:-1]) if re.match(r"^-?\d+(\.\d+)?([eE][+-]?\d+)?[fF]$", value) else value
    if kind == "double":
        return float(value) if re.match(r"^-?\d+(\.\d+)?([eE][+-]?\d+)?$", value) else value
    if kind == "long":
        return int(value[:-1]) if re.match(r"^-?\d+[lL]$", value) else value
    if kind == "boolean":
        return value == "true" if value in ("true", "false") else value
    if kind == "ArrayList":
        return _java_arraylist(value, nested)
    if kind == "Array":
        match = re.search(r"new\s+\w+\[\]\s*\{(.*?)\}", value)
        if not match:
            return value
        parts = [x.strip() for x in match.group(1).split(",") if x.strip()]
        return [_java(x, nested) if nested else _java_value(x) for x in parts]
    if kind == "HashMap":
        return _java_hashmap(value)
    return str(value)  # char (BFCL's pattern for a quoted char never matches), String, any


def _java_element(text: str, nested: str | None) -> Any:
    if nested in ("char", "String"):
        return text[1:-1]
    return _java(text, nested) if nested else _java_value(text)


def _java_arraylist(value: str, nested: str | None) -> Any:
    match = re.search(r"new\s+ArrayList<\w*>\(Arrays\.asList\((.+?)\)\)", value)
    if match:
        return [_java_element(x.strip(), nested) for x in match.group(1).split(",")]
    match = re.search(r"new\s+ArrayList<\w*>\(\)\s*\{\{\s*(.+?)\s*\}\}", value, re.DOTALL)
    if match:
        return [_java_element(x.strip(), nested) for x in re.findall(r"add\((.+?)\)", match.group(1))]
    return [] if re.search(r"new\s+ArrayList<\w*>\(\)", value) else value


def _java_hashmap(value: str) -> Any:
    match = re.search(r"new\s+HashMap<.*?>\s*\(\)\s*\{\s*\{?\s*(.*?)\s*\}?\s*\}", value, re.DOTALL)
    if match:
        puts = match.group(1)
        if not puts.strip():
            return {}
        return {k: _java_value(v.strip()) for k, v in re.findall(r"put\(\"(.*?)\",\s*(.*?)\)", puts)}
    return {} if re.search(r"new\s+HashMap<.*?>\s*\(\)", value) else value


def _java_value(text: str) -> Any:
    """An element without a declared type: boolean, "string", 5L, 1.5f, a number, else the text."""
    if text in ("true", "false"):
        return text == "true"
    if text.startswith('"') and text.endswith('"'):
        return text[1:-1]
    if re.match(r"^-?\d+[lL]$", text):
        return int(text[:-1])
    if re.match(r"^-?\d+(\.\d+)?([eE][+-]?\d+)?[fF]$", text):
        return float(text[:-1])
    return _number(text)


# ---- JavaScript (bfcl_eval's js_type_converter) ----

def _js(value: str, kind: str, nested: str | None = None) -> Any:
    if kind == "String":
        quoted = len(value) >= 1 and value[0] == value[-1] and value[0] in "\"'"
        return value[1:-1] if quoted else value
    if kind == "integer":
        return int(value) if _INT.match(value) else value
    if kind == "float":
        return float(value) if re.match(r"^-?\d+(\.\d+)?$", value) else value
    if kind == "Bigint":
        return int(value[:-1]) if re.match(r"^-?\d+n$", value) else value
    if kind == "Boolean":
        return value == "true" if value in ("true", "false") else value
    if kind == "dict":
        return _js_dict(value)
    if kind == "array":
        return _js_array(value, nested)
    if kind == "any":
        return str(value)
    raise ValueError(f"no JavaScript type {kind!r}")  # as BFCL: an array of it stays text


def _js_array(code: str, nested: str | None = None) -> Any:
    code = code.strip()
    try:
        rows = re.match(r"\[\s*\[.*?\]\s*(,\s*\[.*?\]\s*)*\]|\bnew\s+Array\(\s*\[.*?\]\s*(,\s*\[.*?\]\s*)*\)", code)
        if rows:
            out = []
            for i, inner in enumerate(re.findall(r"\[(.*?)\]", rows.group(0))):
                inner = inner.strip()
                if i == 0 and inner.startswith("["):
                    inner = inner[1:]
                out.append([_js_value(e.strip()) for e in inner.split(",")])
            return out
        match = re.match(r"\[(.*?)\]|\bnew\s+Array\((.*?)\)", code)
        if not match:
            return code
        body = match.group(1) if match.group(1) is not None else match.group(2)
        elements = body.strip().split(",") if body is not None and body.strip() else []
        if nested:
            # BFCL passes "String" as the nested type of a quoted element, which the scalar conversion ignores
            return [_js(e.strip(), nested) for e in elements]
        return [_js_value(e.strip()) for e in elements]
    except Exception:  # BFCL returns the text for anything its parse trips over
        return code


def _js_dict(code: str) -> Any:
    code = code.strip()
    if code == "{}":
        return {}
    match = re.match(r"\{(.*?)\}", code)
    if not match:
        return code
    try:
        out = {}
        for key, value in re.findall(r"([^:]+):\s*(.*?)(?:,\s*(?=[^,]+:)|$)", match.group(1)):
            key, value = key.strip().strip("'\""), value.strip()
            if value.startswith("[") and value.endswith("]"):
                out[key] = _js_array(value)
            elif value.startswith("{") and value.endswith("}"):
                out[key] = _js_dict(value)
            else:
                out[key] = _js_value(value.strip("'\""))
        return out
    except Exception:  # as BFCL: the text, when the parse trips
        return code


def _js_value(text: str) -> Any:
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    if len(text) >= 1 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return _number(text)


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text
