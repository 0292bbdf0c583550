"""The Ollama TEMPLATE of each supported training template renders conversations with tools like the Jinja template.

Rendered with Go's own text/template (what Ollama runs), fed the way Ollama's template.Execute feeds it: system
messages collated into .System, consecutive same-role messages merged (tool results excepted), tools and messages
converted to Ollama's template types, its `json` and `currentDate` functions. A Go renderer written in Python would
test our reading of Go's semantics against itself. Skips where `go` is not installed (`apt-get install golang-go`).

JSON objects are compared as JSON: Ollama writes them with Go's encoding/json (compact, its own key order), the
Jinja templates with Python's json.dumps. Qwen 3.5's XML parameters are compared as a set per call: Ollama ranges over
call arguments in sorted key order, the Jinja template in the order given. Everything else must match byte for byte.
"""

import json
import shutil
import subprocess

import pytest

import re

from dispatchtune.families import FAMILIES, TEMPLATES, template_of
from dispatchtune.tiny_models import build_tokenizer
from dispatchtune.export.modelfile import modelfile_settings, write_modelfile

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="needs Go (apt-get install golang-go)")

# The parts of Ollama's template.Execute and of its template types (template/template.go, api/types.go) that a
# chat prompt goes through, mirrored field for field.
GO_HARNESS = r"""
package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
	"time"
)

type PropertyType []string

func (pt *PropertyType) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		*pt = []string{s}
		return nil
	}
	var a []string
	err := json.Unmarshal(data, &a)
	*pt = a
	return err
}

func (pt PropertyType) MarshalJSON() ([]byte, error) {
	if len(pt) == 1 {
		return json.Marshal(pt[0])
	}
	return json.Marshal([]string(pt))
}

type ToolProperty struct {
	AnyOf       []ToolProperty          `json:"anyOf,omitempty"`
	Type        PropertyType            `json:"type,omitempty"`
	Items       any                     `json:"items,omitempty"`
	Description string                  `json:"description,omitempty"`
	Enum        []any                   `json:"enum,omitempty"`
	Properties  map[string]ToolProperty `json:"properties,omitempty"`
	Required    []string                `json:"required,omitempty"`
}

type templateTool struct {
	Type     string `json:"type"`
	Items    any    `json:"items,omitempty"`
	Function struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		Parameters  struct {
			Type       string                  `json:"type"`
			Defs       any                     `json:"$defs,omitempty"`
			Items      any                     `json:"items,omitempty"`
			Required   []string                `json:"required,omitempty"`
			Properties map[string]ToolProperty `json:"properties"`
		} `json:"parameters"`
	} `json:"function"`
}

type templateArgs map[string]any

func (t templateArgs) String() string {
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateToolCall struct {
	ID       string `json:"id"`
	Function struct {
		Index     int          `json:"index"`
		Name      string       `json:"name"`
		Arguments templateArgs `json:"arguments"`
	} `json:"function"`
}

type templateMessage struct {
	Role       string             `json:"role"`
	Content    string             `json:"content"`
	Thinking   string             `json:"thinking"`
	ToolCalls  []templateToolCall `json:"tool_calls"`
	ToolName   string             `json:"tool_name"`
	ToolCallID string             `json:"tool_call_id"`
}

func main() {
	var in struct {
		Template   string            `json:"template"`
		Messages   []templateMessage `json:"messages"`
		Tools      []templateTool    `json:"tools"`
		Think      bool              `json:"think"`
		IsThinkSet bool              `json:"is_think_set"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	var system []string
	var messages []*templateMessage
	for i := range in.Messages {
		m := &in.Messages[i]
		if m.Role == "system" {
			system = append(system, m.Content)
		}
		if n := len(messages); n > 0 && messages[n-1].Role == m.Role && m.Role != "tool" {
			messages[n-1].Content += "\n\n" + m.Content
		} else {
			messages = append(messages, m)
		}
	}
	funcs := template.FuncMap{
		"json":        func(v any) string { b, _ := json.Marshal(v); return string(b) },
		"currentDate": func(args ...string) string { return time.Now().Format("2006-01-02") },
	}
	tmpl := template.Must(template.New("").Option("missingkey=zero").Funcs(funcs).Parse(in.Template))
	var tools any
	if in.Tools != nil {
		tools = in.Tools
	}
	err := tmpl.Execute(os.Stdout, map[string]any{
		"System": strings.Join(system, "\n\n"), "Messages": messages, "Tools": tools, "Response": "",
		"Think": in.Think, "ThinkLevel": "", "IsThinkSet": in.IsThinkSet,
	})
	if err != nil {
		panic(err)
	}
}
"""

TOOLS = [
    {"type": "function", "function": {
        "name": "dispatch_unit", "description": "Send an emergency unit to a location.",
        "parameters": {"type": "object", "properties": {
            "unit": {"type": "string", "enum": ["ambulance", "fire", "police"], "description": "Unit type"},
            "address": {"type": "string", "description": "Street address"},
            "priority": {"type": "integer", "description": "1 (highest) to 3"}}, "required": ["unit", "address"]}}},
    {"type": "function", "function": {
        "name": "lookup_caller", "description": "Find a caller's record by phone number.",
        "parameters": {"type": "object", "properties": {"phone": {"type": "string"}}, "required": ["phone"]}}},
]
SYSTEM = {"role": "system", "content": "You are a dispatcher. Call a tool when one applies."}
USER = {"role": "user", "content": "A man fell at 12 Main Street and is not moving. Send help!"}


def call(name, arguments, i=0):
    return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": arguments}}


ONE_CALL = {"role": "assistant", "content": "", "tool_calls": [
    call("dispatch_unit", {"unit": "ambulance", "address": "12 Main Street", "priority": 1})]}
TWO_CALLS = {"role": "assistant", "content": "On it.", "tool_calls": [
    call("lookup_caller", {"phone": "555-0100"}), call("dispatch_unit", {"unit": "fire", "address": "3 Elm Road"}, 1)]}


def result(content, i=0, name="dispatch_unit"):
    return {"role": "tool", "tool_call_id": f"call_{i}", "name": name, "content": content}


CONVERSATIONS = {
    "user only": ([USER], None),
    "system, no tools": ([SYSTEM, USER], None),
    "tools": ([USER], TOOLS),
    "system and tools": ([SYSTEM, USER], TOOLS),
    "call and result": ([SYSTEM, USER, ONE_CALL, result('{"eta_minutes": 6}')], TOOLS),
    "call, result, answer, next question": (
        [USER, ONE_CALL, result('{"eta_minutes": 6}'), {"role": "assistant", "content": "An ambulance is 6 min away."},
         {"role": "user", "content": "Thanks. Also a fire at 3 Elm Road."}], TOOLS),
    "result, then the user again": ([USER, ONE_CALL, result('{"error": "no unit free"}'),
                                    {"role": "user", "content": "Try the fire brigade then."}], TOOLS),
    "parallel calls and results": (
        [SYSTEM, USER, TWO_CALLS, result('{"name": "Ann"}', 0, "lookup_caller"), result('{"eta_minutes": 4}', 1)],
        TOOLS),
}

# template -> (tokenizer family whose special tokens it needs, conversations it renders: Llama 3.2 takes one call per
# turn, and its template_kwargs date_string keeps "Today Date" fixed on both sides)
CASES = {
    "qwen3": ("qwen3", None),
    "qwen3.5": ("qwen3.5", None),
    "qwen3.5-think": ("qwen3.5", None),
    "qwen2.5": ("qwen2.5", None),
    "llama-3.2": ("llama-3.2", lambda name: name != "parallel calls and results"),
    "gemma3_tools": ("gemma3", None),
    "chatml_tools": ("smollm2", None),
}
LLAMA_DATE = "26 Jul 2024"


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """The Go harness, compiled once (go run would compile per call)."""
    folder = tmp_path_factory.mktemp("go_harness")
    (folder / "main.go").write_text(GO_HARNESS)
    binary = folder / "render"
    env = {"GOCACHE": str(folder / "cache"), "GOPATH": str(folder / "gopath"), "HOME": str(folder),
           "PATH": "/usr/bin:/bin:/usr/local/go/bin", "GO111MODULE": "off"}
    subprocess.run(["go", "build", "-o", str(binary), str(folder / "main.go")], check=True, env=env)
    return binary


def render_go(harness, template, messages, tools, **flags):
    ollama_messages = [
        {**m, "content": m.get("content") or "",
         "tool_calls": [{"function": c["function"]} for c in m.get("tool_calls", [])]} for m in messages]
    data = {"template": template, "messages": ollama_messages, "tools": tools, **flags}
    return subprocess.run([str(harness)], input=json.dumps(data), capture_output=True, text=True, check=True).stdout


_XML_CALL = re.compile(r"(<function=[^>\n]*>\n)((?:<parameter=[^>\n]*>\n.*?\n</parameter>\n)*)(</function>)", re.S)
_XML_PARAMETER = re.compile(r"<parameter=[^>\n]*>\n.*?\n</parameter>\n", re.S)


def canonical(text: str) -> str:
    """canonical_json, and each XML call's parameters in sorted order."""
    return canonical_json(_XML_CALL.sub(
        lambda m: m.group(1) + "".join(sorted(_XML_PARAMETER.findall(m.group(2)))) + m.group(3), text))


def canonical_json(text: str) -> str:
    """Every JSON object in `text` rewritten compact with sorted keys; the text around them untouched."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i] == "{":
            try:
                obj, end = decoder.raw_decode(text, i)
            except ValueError:
                pass
            else:
                out.append(json.dumps(obj, sort_keys=True, separators=(",", ":")))
                i = end
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def tokenizer_with(template_name, family):
    tokenizer = build_tokenizer(family)
    tokenizer.chat_template = TEMPLATES[template_name].text()
    return tokenizer


def go_template(tokenizer, template_kwargs=None):
    return modelfile_settings(tokenizer, [tokenizer.eos_token_id], None, template_kwargs=template_kwargs).template


def jinja_text(tokenizer, messages, tools):
    text = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False,
                                         date_string=LLAMA_DATE)
    # Ollama leaves the beginning-of-sequence token to llama.cpp, which adds it as the GGUF says (add_bos).
    bos = tokenizer.bos_token
    if bos and tokenizer.add_bos_token and text.startswith(bos):
        text = text[len(bos):]
    return text


@pytest.mark.parametrize("name", CASES)
def test_go_template_renders_like_the_training_template(harness, name):
    family, keep = CASES[name]
    tokenizer = tokenizer_with(name, family)
    assert template_of(tokenizer.chat_template).name == name
    template = go_template(tokenizer, {"date_string": LLAMA_DATE})
    for label, (messages, tools) in CONVERSATIONS.items():
        if keep and not keep(label):
            continue
        expected = jinja_text(tokenizer, messages, tools)
        got = render_go(harness, template, messages, tools)
        assert canonical(got) == canonical(expected), f"{name}: {label}"


def test_every_family_that_exports_gguf_has_a_checked_ollama_template():
    for family in FAMILIES.values():
        if family.gguf_refused is None:
            assert family.training_template.name in CASES, family.name
            assert family.training_template.call_format is not None, family.name


def test_qwen3_thinking_off_prefills_the_empty_think_block(harness):
    tokenizer = tokenizer_with("qwen3", "qwen3")
    messages, tools = CONVERSATIONS["system and tools"]
    expected = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False,
                                             enable_thinking=False)
    got = render_go(harness, go_template(tokenizer), messages, tools, think=False, is_think_set=True)
    assert canonical_json(got) == canonical_json(expected)


@pytest.mark.parametrize("name, think, flags, thinking_kwargs", [
    ("qwen3.5", "<think>\n\n</think>\n\n", {}, {}),
    ("qwen3.5", "<think>\n\n</think>\n\n", {"think": False, "is_think_set": True}, {"enable_thinking": False}),
    ("qwen3.5", "<think>\n", {"think": True, "is_think_set": True}, {"enable_thinking": True}),
    ("qwen3.5-think", "<think>\n", {}, {}),
    ("qwen3.5-think", "<think>\n\n</think>\n\n", {"think": False, "is_think_set": True}, {"enable_thinking": False}),
    ("qwen3.5-think", "<think>\n", {"think": True, "is_think_set": True}, {"enable_thinking": True}),
])
def test_qwen3_5_think_flag_is_enable_thinking(harness, name, think, flags, thinking_kwargs):
    tokenizer = tokenizer_with(name, "qwen3.5")
    messages, tools = CONVERSATIONS["call and result"]
    expected = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False,
                                             **thinking_kwargs)
    got = render_go(harness, go_template(tokenizer), messages, tools, **flags)
    assert expected.endswith(think) and canonical(got) == canonical(expected)


def test_qwen3_5_xml_values_are_written_as_the_template_writes_them(harness):
    tokenizer = tokenizer_with("qwen3.5", "qwen3.5")
    arguments = {"address": "12 Main Street", "priority": 1, "urgent": True, "unit": None, "tags": ["a", "b"],
                 "where": {"lat": 48.5}}
    messages = [USER, {"role": "assistant", "content": "", "tool_calls": [call("dispatch_unit", arguments)]},
                result('{"eta_minutes": 6}')]
    expected = jinja_text(tokenizer, messages, TOOLS)
    got = render_go(harness, go_template(tokenizer), messages, TOOLS)
    # lists differ only in Python's ", " separator; everything else byte for byte
    assert canonical(got) == canonical(expected).replace('["a", "b"]', '["a","b"]')
    assert "<parameter=urgent>\nTrue\n</parameter>" in got and "<parameter=unit>\nNone\n</parameter>" in got


def modelfile(tmp_path, tokenizer, stop_ids, **kwargs):
    settings = modelfile_settings(tokenizer, stop_ids, kwargs.pop("max_positions", None), **kwargs)
    return write_modelfile(tmp_path / "run-q4_k_m.gguf", settings).read_text()


def test_qwen3_5_modelfile_names_ollamas_parser_for_xml_calls(tmp_path):
    tokenizer = tokenizer_with("qwen3.5-think", "qwen3.5")
    lines = modelfile(tmp_path, tokenizer, [tokenizer.eos_token_id]).splitlines()
    assert lines[1].startswith('TEMPLATE """') and "PARSER qwen3.5" in lines
    assert not any(line.startswith("PARSER") for line in modelfile(tmp_path, tokenizer_with("qwen3", "qwen3"), [0])
                   .splitlines())


def test_modelfile_has_template_stops_and_dispatch_defaults(tmp_path):
    tokenizer = tokenizer_with("qwen3", "qwen3")
    text = modelfile(tmp_path, tokenizer, tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]),
                     max_positions=40960)
    lines = text.splitlines()
    assert lines[0] == "FROM ./run-q4_k_m.gguf"
    assert text.count('TEMPLATE """') == 1 and "{{ .Function.Name }}" in text and "$.Tools" in text
    assert 'PARAMETER stop "<|im_end|>"' in lines and 'PARAMETER stop "<|endoftext|>"' in lines
    assert "PARAMETER temperature 0" in lines and "PARAMETER num_ctx 8192" in lines


def test_unknown_template_gets_no_template_rather_than_a_guess(tmp_path, capsys):
    tokenizer = build_tokenizer("qwen3")
    tokenizer.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    assert go_template(tokenizer) is None
    text = modelfile(tmp_path, tokenizer, tokenizer.convert_tokens_to_ids(["<|im_end|>"]))
    assert 'TEMPLATE """' not in text and "# No TEMPLATE" in text and "PARSER" not in text
    assert "no TEMPLATE" in capsys.readouterr().err
