"""Readers for xLAM, Glaive, Hermes, LLaMA-Factory ShareGPT, OpenAI messages and BFCL.

Each format's real-shaped example is written in its on-disk shape and read through auto-detection; then small bad
records check that every failure becomes a `Rejected` with the right reason and field, never a crash.
"""

import json
from pathlib import Path

import pytest

from dispatchtune.data_prep.readers import FORMATS, read_file, reader
from dispatchtune.data_prep.sample import Rejected
from dispatchtune.data_prep.schema_types import annotation_schema, gorilla_schema, xlam_parameters
from dispatchtune.data_prep.validate import validate

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "formats" / "examples.json"


@pytest.fixture(scope="module")
def examples() -> dict:
    if not EXAMPLES.is_file():
        pytest.skip(f"format examples not found at {EXAMPLES}")
    return json.loads(EXAMPLES.read_text(encoding="utf-8"))


def write(path: Path, records: list, jsonl: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in records) if jsonl else json.dumps(records, indent=1)
    path.write_text(text, encoding="utf-8")
    return path


def read(path: Path, fmt: str = "auto") -> list:
    return list(read_file(path, fmt))


def accepted(path: Path, fmt: str, n: int = 2):
    """Reads an n-record file with auto-detection; every record must be accepted as `fmt` and validate."""
    items = read(path)
    assert len(items) == n
    for item in items:
        assert item.rejected is None, item.rejected.describe()
        assert item.sample.meta["format"] == fmt
        validate(item.sample)
    return items[0].sample


def rejected(records: list, fmt: str, tmp_path: Path, jsonl: bool = False) -> Rejected:
    """The rejection of the only record, read with the format forced (a bad record cannot be sniffed)."""
    (item,) = read(write(tmp_path / "bad.json", records, jsonl), fmt)
    assert item.sample is None, "expected a rejection"
    return item.rejected


def call(id_, name, arguments):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


# ---- the examples, read through auto-detection ----


def test_each_example_is_sniffed_by_exactly_one_reader(examples):
    keys = {"xlam": "xlam", "glaive_v2": "glaive", "hermes_v1": "hermes", "llamafactory_sharegpt_tools": "sharegpt",
            "openai_messages": "openai", "bfcl_test": "bfcl", "bfcl_possible_answer": "bfcl"}
    for key, fmt in keys.items():
        assert [name for name in FORMATS if reader(name).sniff(examples[key])] == [fmt], key


def test_xlam(examples, tmp_path):
    sample = accepted(write(tmp_path / "xlam.json", [examples["xlam"]] * 2), "xlam")
    assert sample.messages == [
        {"role": "user", "content": "Where can I find live giveaways for beta access and games?"},
        {"role": "assistant", "content": None, "tool_calls": [
            call("call_0", "live_giveaways_by_type", {"type": "beta"}),
            call("call_1", "live_giveaways_by_type", {"type": "game"}),
        ]},
    ]
    (tool,) = sample.tools
    assert tool["function"]["parameters"] == {
        "type": "object",
        "properties": {"type": {"type": "string", "description": "The type of giveaways to retrieve (e.g., game, "
                                "loot, beta).", "default": "game"}},
        "required": [],  # a default makes it optional
    }
    assert sample.meta == {"id": "0", "tool_names": ["live_giveaways_by_type"], "category": None, "source": str(
        tmp_path / "xlam.json"), "index": 0, "format": "xlam",
        "split_key": "Where can I find live giveaways for beta access and games?"}


def test_xlam_empty_answers_is_an_irrelevance_prompt(examples, tmp_path):
    record = {**examples["xlam"], "answers": "[]"}
    sample = accepted(write(tmp_path / "xlam.json", [record, record]), "xlam")
    assert [m["role"] for m in sample.messages] == ["user"]
    assert sample.meta["category"] == "irrelevance"


def test_xlam_parameter_notation():
    schema = xlam_parameters({
        "ids": {"type": "List[int]", "description": "ids"},
        "limit": {"type": "int, optional", "description": "max"},
        "opts": {"type": "Dict[str, Any]"},
        "ratio": {"type": "float"},
        "flag": {"type": "bool", "default": False},
        "name": {"type": "str, optional", "default": ""},
    })
    assert schema["properties"] == {
        "ids": {"type": "array", "items": {"type": "integer"}, "description": "ids"},
        "limit": {"type": "integer", "description": "max"},
        "opts": {"type": "object"},
        "ratio": {"type": "number"},
        "flag": {"type": "boolean", "default": False},
        "name": {"type": "string", "default": ""},
    }
    assert schema["required"] == ["ids", "opts", "ratio"]
    assert annotation_schema("Optional[str]") == {"type": ["string", "null"]}
    assert annotation_schema("Tuple[float, ...]") == {"type": "array", "items": {"type": "number"}}
    assert annotation_schema("Callable") == {}


def test_glaive(examples, tmp_path):
    sample = accepted(write(tmp_path / "glaive.json", [examples["glaive_v2"]] * 2), "glaive")
    assert sample.messages == [  # the boilerplate system sentence is dropped
        {"role": "user", "content": "I am looking for a book but I can't remember the title. The author's name "
                                    "is George Orwell."},
        {"role": "assistant", "content": None,
         "tool_calls": [call("call_0", "search_books", {"query": "", "author": "George Orwell"})]},
        {"role": "tool", "tool_call_id": "call_0", "name": "search_books",
         "content": '{"results": [{"title": "1984", "author": "George Orwell"}]}'},
        {"role": "assistant", "content": 'I found several books by George Orwell, e.g. "1984".'},
    ]
    assert sample.tool_names == ["search_books"]
    assert sample.tools[0]["function"]["parameters"]["properties"]["author"] == {
        "type": "string", "description": "The author of the book"}


def test_glaive_without_functions_and_with_own_system_text(tmp_path):
    chat = "USER: Hi\n\n\nASSISTANT: Hello! <|endoftext|>\n\n\n"
    records = [
        {"system": "SYSTEM: You are a helpful assistant, with no access to external functions.", "chat": chat},
        {"system": "SYSTEM: You are a pirate.", "chat": chat},
    ]
    items = read(write(tmp_path / "glaive.json", records))
    assert [i.sample.tools for i in items] == [[], []]
    assert items[0].sample.messages == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert items[1].sample.messages[0] == {"role": "system", "content": "You are a pirate."}


def test_hermes(examples, tmp_path):
    sample = accepted(write(tmp_path / "hermes.json", [examples["hermes_v1"]] * 2), "hermes")
    assert sample.messages == [  # the system turn only described the tag protocol: dropped, its tools kept
        {"role": "user", "content": "Book flights from Los Angeles ... flexible cancellation."},
        {"role": "assistant", "content": None, "tool_calls": [
            call("call_0", "search_flights", {"departure_city": "Los Angeles", "flexible_cancellation": True})]},
        {"role": "tool", "tool_call_id": "call_0", "name": "search_flights", "content": '{"flights":[]}'},
        {"role": "assistant", "content": "Here are the available flight options ..."},
    ]
    on_disk = sample.to_record()["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert on_disk == '{"departure_city": "Los Angeles", "flexible_cancellation": true}'
    assert sample.tools[0]["function"]["parameters"]["required"] == ["departure_city"]
    assert sample.meta["id"] == "753d8365-0e54-43b1-9514-3f9b819fd31c"
    assert sample.meta["category"] == "E-commerce Platforms"


def test_hermes_parallel_calls_pair_results_by_name(examples, tmp_path):
    tools = "[{'type': 'function', 'function': {'name': 'a', 'parameters': {'type': 'object', 'properties': {}}}}, " \
            "{'type': 'function', 'function': {'name': 'b', 'parameters': {'type': 'object', 'properties': {}}}}]"
    record = {"conversations": [
        {"from": "system", "value": f"Tools: <tools> </tools>\n<tools>\n{tools}\n</tools>"},
        {"from": "human", "value": "do both"},
        {"from": "gpt", "value": "<tool_call>\n{'arguments': {}, 'name': 'a'}\n</tool_call>\n"
                                 '<tool_call>\n{"arguments": {}, "name": "b"}\n</tool_call>'},
        {"from": "tool", "value": '<tool_response>\n{"name": "b", "content": "B"}\n</tool_response>\n'
                                  "<tool_response>\n{'name': 'a', 'content': {'x': None}}\n</tool_response>"},
        {"from": "gpt", "value": "done"},
    ]}
    sample = accepted(write(tmp_path / "hermes.json", [record] * 2), "hermes")
    assert [len(m.get("tool_calls", [])) for m in sample.messages] == [0, 2, 0, 0, 0]
    assert sample.messages[2:4] == [
        {"role": "tool", "tool_call_id": "call_1", "name": "b", "content": "B"},
        {"role": "tool", "tool_call_id": "call_0", "name": "a", "content": '{"x":null}'},
    ]


def test_sharegpt(examples, tmp_path):
    sample = accepted(write(tmp_path / "sharegpt.json", [examples["llamafactory_sharegpt_tools"]] * 2), "sharegpt")
    assert sample.messages == [
        {"role": "user", "content": "I need to calculate the area of a rectangle. The length is 5 units and the "
                                    "breadth is 3 units."},
        {"role": "assistant", "content": None,
         "tool_calls": [call("call_0", "calculate_area", {"shape": "rectangle", "dimensions": [5, 3]})]},
        {"role": "tool", "tool_call_id": "call_0", "name": "calculate_area", "content": '{"area": 15}'},
        {"role": "assistant", "content": "The area of the rectangle with length 5 units and breadth 3 units is 15 "
                                         "square units."},
    ]
    assert sample.tools[0]["function"]["parameters"]["required"] == ["shape", "dimensions"]


def test_sharegpt_parallel_calls_with_string_arguments_and_system(tmp_path):
    tools = [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}]
    record = {"system": "Be brief.", "tools": json.dumps(tools), "conversations": [
        {"from": "human", "value": "twice"},
        {"from": "function_call", "value": json.dumps([{"name": "f", "arguments": '{"x": 1}'},
                                                       {"name": "f", "arguments": {"x": 2}}])},
        {"from": "observation", "value": json.dumps([{"y": 1}, "two"])},
        {"from": "gpt", "value": "1 and two"},
    ]}
    sample = accepted(write(tmp_path / "sharegpt.json", [record] * 2), "sharegpt")
    assert sample.messages[0] == {"role": "system", "content": "Be brief."}
    assert sample.messages[2]["tool_calls"] == [call("call_0", "f", {"x": 1}), call("call_1", "f", {"x": 2})]
    assert [(m["tool_call_id"], m["content"]) for m in sample.messages[3:5]] == [("call_0", '{"y":1}'),
                                                                              ("call_1", "two")]


def test_openai(examples, tmp_path):
    sample = accepted(write(tmp_path / "openai.jsonl", [examples["openai_messages"]] * 2, jsonl=True), "openai")
    assert sample.messages == [
        {"role": "user", "content": "I need to calculate the area of a rectangle. The length is 5 units and the "
                                    "breadth is 3 units."},
        {"role": "assistant", "content": None,
         "tool_calls": [call("call_1", "calculate_area", {"shape": "rectangle", "dimensions": [5, 3]})]},
        {"role": "tool", "tool_call_id": "call_1", "name": "calculate_area", "content": '{"area": 15}'},
        {"role": "assistant", "content": "The area is 15 square units."},
    ]
    assert sample.tools == examples["openai_messages"]["tools"]


def test_openai_legacy_shape_and_bare_tools_as_json_string(tmp_path):
    record = {
        "tools": json.dumps([{"name": "f", "description": "d", "parameters": {"type": "object", "properties": {}}}]),
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "", "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": "ok"},
            {"role": "assistant", "content": "done"},
        ],
    }
    sample = accepted(write(tmp_path / "openai.jsonl", [record] * 2, jsonl=True), "openai")
    assert sample.messages[1:3] == [
        {"role": "assistant", "content": None, "tool_calls": [call("call_0", "f", {})]},
        {"role": "tool", "tool_call_id": "call_0", "name": "f", "content": "ok"},
    ]
    assert sample.tools == [{"type": "function", "function": {
        "name": "f", "description": "d", "parameters": {"type": "object", "properties": {}, "required": []}}}]


def test_bfcl(examples, tmp_path):
    sample = accepted(write(tmp_path / "BFCL_v4_simple_python.json", [examples["bfcl_test"]] * 2, jsonl=True), "bfcl")
    assert sample.messages == [{"role": "user", "content": "Find the area of a triangle with a base of 10 units "
                                                           "and height of 5 units."}]
    params = sample.tools[0]["function"]["parameters"]
    assert params["type"] == "object" and params["required"] == ["base", "height"]
    assert params["properties"]["base"] == {"type": "integer", "description": "The base of the triangle."}
    assert {k: sample.meta[k] for k in ("id", "category")} == {"id": "simple_python_0", "category": "simple_python"}


def test_bfcl_types_names_and_category(tmp_path):
    record = {
        "id": "live_parallel_multiple_3-2-1",
        "question": [[{"role": "system", "content": "sys"}, {"role": "user", "content": "first turn"}],
                     [{"role": "user", "content": "second turn"}]],
        "function": [{"name": "math.stats", "description": "", "parameters": {"type": "dict", "properties": {
            "ratio": {"type": "float"},
            "point": {"type": "tuple", "items": {"type": "float"}},
            "value": {"type": "any", "description": "anything"},
            "options": {"type": "dict", "properties": {"depth": {"type": "integer"}}},
            "names": {"type": "array", "items": {"type": "String"}},
        }, "required": ["ratio"]}}],
    }
    sample = accepted(write(tmp_path / "bfcl.json", [record] * 2, jsonl=True), "bfcl")
    assert sample.messages == [{"role": "system", "content": "sys"}, {"role": "user", "content": "first turn"}]
    assert sample.tool_names == ["math.stats"]
    assert sample.tools[0]["function"]["parameters"] == {"type": "object", "properties": {
        "ratio": {"type": "number"},
        "point": {"type": "array", "items": {"type": "number"}},
        "value": {"description": "anything"},
        "options": {"type": "object", "properties": {"depth": {"type": "integer"}}},
        "names": {"type": "array", "items": {"type": "string"}},
    }, "required": ["ratio"]}
    assert sample.meta["category"] == "live_parallel_multiple"
    assert gorilla_schema({"type": "dict"}) == {"type": "object"}


# ---- bad input ----


def test_python_repr_where_json_is_expected(tmp_path):
    openai = {"messages": [{"role": "user", "content": "q"},
                           {"role": "assistant", "tool_calls": [call("c1", "f", "{'a': 1}")]}], "tools": []}
    r = rejected([openai], "openai", tmp_path, jsonl=True)
    assert (r.reason, r.field) == ("python_repr", "messages[1].tool_calls[0].function.arguments")

    sharegpt = {"tools": "[]", "conversations": [{"from": "human", "value": "q"},
                                                 {"from": "function_call", "value": "{'name': 'f', 'arguments': {}}"}]}
    r = rejected([sharegpt], "sharegpt", tmp_path)
    assert (r.reason, r.field) == ("python_repr", "conversations[1].value")

    sharegpt = {"tools": "[{'name': 'f'}]", "conversations": [{"from": "human", "value": "q"}]}
    r = rejected([sharegpt], "sharegpt", tmp_path)
    assert (r.reason, r.field) == ("python_repr", "tools")


def test_arguments_that_do_not_parse(examples, tmp_path):
    glaive = {**examples["glaive_v2"], "chat": "USER: q\n\n\nASSISTANT: <functioncall> "
                                               "{\"name\": \"search_books\", \"arguments\": '{\"query\": }'}"}
    r = rejected([glaive], "glaive", tmp_path)
    assert (r.reason, r.field) == ("bad_arguments", "chat.turns[1].functioncall.arguments")

    hermes = json.loads(json.dumps(examples["hermes_v1"]))
    hermes["conversations"][2]["value"] = "<tool_call>\n{'arguments': {'departure_city': }, 'name': 'x'}\n</tool_call>"
    r = rejected([hermes], "hermes", tmp_path)
    assert (r.reason, r.field) == ("bad_arguments", "conversations[2].value.tool_call[0]")

    xlam = {**examples["xlam"], "answers": '[{"name": "live_giveaways_by_type", "arguments": "{\\"type\\": "}]'}
    r = rejected([xlam], "xlam", tmp_path)
    assert (r.reason, r.field) == ("bad_arguments", "answers[0].function.arguments")

    openai = {"messages": [{"role": "user", "content": "q"},
                           {"role": "assistant", "tool_calls": [call("c1", "f", '{"a": 1')]}]}
    assert rejected([openai], "openai", tmp_path, jsonl=True).reason == "bad_arguments"


UNKNOWN_CALL = {  # one tool `t`, one call to `nope`
    "xlam": {"id": 1, "query": "q", "tools": json.dumps([{"name": "t", "description": "", "parameters": {}}]),
             "answers": json.dumps([{"name": "nope", "arguments": {}}])},
    "glaive": {"system": 'SYSTEM: You are a helpful assistant with access to the following functions. Use them if '
                         'required -\n{"name": "t", "parameters": {}}\n',
               "chat": 'USER: q\n\n\nASSISTANT: <functioncall> {"name": "nope", "arguments": \'{}\'} <|endoftext|>'},
    "hermes": {"conversations": [
        {"from": "system", "value": "<tools>\n[{'type': 'function', 'function': {'name': 't'}}]\n</tools>"},
        {"from": "human", "value": "q"},
        {"from": "gpt", "value": "<tool_call>\n{'arguments': {}, 'name': 'nope'}\n</tool_call>"}]},
    "sharegpt": {"tools": json.dumps([{"name": "t"}]), "conversations": [
        {"from": "human", "value": "q"}, {"from": "function_call", "value": '{"name": "nope", "arguments": {}}'}]},
    "openai": {"tools": [{"type": "function", "function": {"name": "t"}}], "messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [call("c1", "nope", "{}")]}]},
}


@pytest.mark.parametrize("fmt", sorted(UNKNOWN_CALL))
def test_call_to_unknown_tool_is_kept_by_the_reader_and_rejected_by_validate(fmt, tmp_path):
    (item,) = read(write(tmp_path / "unknown.json", [UNKNOWN_CALL[fmt]]), fmt)
    assert item.rejected is None, item.rejected.describe()
    assert item.sample.tool_names == ["t"]
    with pytest.raises(Rejected) as e:
        validate(item.sample)
    assert (e.value.reason, e.value.field) == ("unknown_tool", "messages[1].tool_calls[0].function.name")


def test_records_of_the_wrong_shape(examples, tmp_path):
    r = rejected([{"conversation": []}], "openai", tmp_path, jsonl=True)
    assert (r.reason, r.field) == ("bad_shape", "messages")

    hermes = json.loads(json.dumps(examples["hermes_v1"]))
    del hermes["conversations"][1]["value"]
    r = rejected([hermes], "hermes", tmp_path)
    assert (r.reason, r.field) == ("bad_shape", "conversations[1].value")

    # a stray non-object in an otherwise good array: rejected with its index, the file goes on
    items = read(write(tmp_path / "xlam.json", [examples["xlam"], 7, examples["xlam"]]))
    assert [(i.index, i.rejected and i.rejected.reason) for i in items] == [(0, None), (1, "bad_shape"), (2, None)]

    r = rejected([{**examples["xlam"], "tools": '[{"name": "t", "parameters": {"p": "str"}}]'}], "xlam", tmp_path)
    assert (r.reason, r.field) == ("bad_tools", "tools[0].parameters")


def test_results_that_answer_no_call(examples, tmp_path):
    glaive = {**examples["glaive_v2"], "chat": "USER: q\n\n\nFUNCTION RESPONSE: {}\n\n\nASSISTANT: a"}
    r = rejected([glaive], "glaive", tmp_path)
    assert (r.reason, r.field) == ("orphan_tool_result", "chat.turns[1]")

    openai = {"messages": [{"role": "user", "content": "q"},
                           {"role": "assistant", "tool_calls": [call("c1", "f", {})]},
                           {"role": "tool", "tool_call_id": "c2", "content": "x"}]}
    r = rejected([openai], "openai", tmp_path, jsonl=True)
    assert (r.reason, r.field) == ("orphan_tool_result", "messages[2]")


def test_bfcl_possible_answer_file_is_refused_with_a_pointer_to_eval(examples, tmp_path):
    answer = examples["bfcl_possible_answer"]
    items = read(write(tmp_path / "possible_answer.json", [answer, {**answer, "id": "simple_python_1"}], jsonl=True))
    assert len(items) == 2
    for item in items:
        assert item.sample is None and item.rejected.reason == "bad_shape"
        assert "dispatchtune eval score --format bfcl --answers" in item.rejected.message
