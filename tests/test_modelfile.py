"""The Ollama TEMPLATE of each supported training template renders conversations with tools like the Jinja template.

Rendered with Go's own text/template (what Ollama runs), fed the way Ollama's template.Execute feeds it: system
messages collated into .System, consecutive same-role messages merged (tool results excepted), tools and messages
converted to Ollama's template types, its `json` and `currentDate` functions. A Go renderer written in Python would
test our reading of Go's semantics against itself. Skips where `go` is not installed (`apt-get install golang-go`).

JSON objects are compared as JSON: Ollama writes them with Go's encoding/json (compact, its own key order), the
Jinja templates with Python's json.dumps. Everything between them must match byte for byte.
"""

import json
import shutil
import subprocess

import pytest

from dispatchtune.tiny_models import build_tokenizer
from dispatchtune.export.modelfile import go_template, modelfile, template_name
from dispatchtune.train.mask import resolve_template

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


def tokenizer_with(template_name_, family):
    tokenizer = build_tokenizer(family)
    if template_name_ in ("gemma3_tools", "chatml_tools"):
        tokenizer.chat_template = resolve_template(template_name_)
    return tokenizer


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
    assert template_name(tokenizer.chat_template) == name
    template = go_template(tokenizer, {"date_string": LLAMA_DATE})
    for label, (messages, tools) in CONVERSATIONS.items():
        if keep and not keep(label):
            continue
        expected = jinja_text(tokenizer, messages, tools)
        got = render_go(harness, template, messages, tools)
        assert canonical_json(got) == canonical_json(expected), f"{name}: {label}"


def test_qwen3_thinking_off_prefills_the_empty_think_block(harness):
    tokenizer = tokenizer_with("qwen3", "qwen3")
    messages, tools = CONVERSATIONS["system and tools"]
    expected = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False,
                                             enable_thinking=False)
    got = render_go(harness, go_template(tokenizer), messages, tools, think=False, is_think_set=True)
    assert canonical_json(got) == canonical_json(expected)


def test_modelfile_has_template_stops_and_dispatch_defaults():
    tokenizer = tokenizer_with("qwen3", "qwen3")
    text = modelfile("run-q4_k_m.gguf", tokenizer, ["<|im_end|>", "<|endoftext|>"], num_ctx=8192)
    lines = text.splitlines()
    assert lines[0] == "FROM ./run-q4_k_m.gguf"
    assert text.count('TEMPLATE """') == 1 and "{{ .Function.Name }}" in text and "$.Tools" in text
    assert 'PARAMETER stop "<|im_end|>"' in lines and 'PARAMETER stop "<|endoftext|>"' in lines
    assert "PARAMETER temperature 0" in lines and "PARAMETER num_ctx 8192" in lines


def test_unknown_template_gets_no_template_rather_than_a_guess():
    tokenizer = build_tokenizer("qwen3")
    tokenizer.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    assert go_template(tokenizer) is None
    text = modelfile("m-f16.gguf", tokenizer, ["<|im_end|>"])
    assert 'TEMPLATE """' not in text and "# No TEMPLATE" in text
