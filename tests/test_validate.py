import copy

import pytest

from dispatchtune.data_prep.sample import Rejected, Sample, ToolCall, function_tool
from dispatchtune.data_prep.validate import validate

WEATHER = function_tool("get_weather", "Weather now", {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city"],
})


def good() -> Sample:
    return Sample(
        messages=[
            {"role": "system", "content": "You dispatch."},
            {"role": "user", "content": "Weather in Tokyo and Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                ToolCall("get_weather", {"city": "Tokyo"}, "call_0").to_message(),
                ToolCall("get_weather", {"city": "Paris", "days": 2}, "call_1").to_message()]},
            {"role": "tool", "tool_call_id": "call_0", "name": "get_weather", "content": "21C"},
            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "15C"},
            {"role": "assistant", "content": "Tokyo 21C, Paris 15C."},
        ],
        tools=[WEATHER],
    )


def test_good_sample_passes():
    validate(good())


def _broken(edit):
    s = good()
    edit(s)
    with pytest.raises(Rejected) as e:
        validate(s)
    return e.value


@pytest.mark.parametrize("edit,reason,field", [
    (lambda s: s.messages[2]["tool_calls"][0]["function"].update(name="get_time"), "unknown_tool", "messages[2].tool_calls[0].function.name"),
    (lambda s: s.messages[2]["tool_calls"][0]["function"].update(arguments={}), "schema_violation", "messages[2].tool_calls[0].function.arguments"),
    (lambda s: s.messages[2]["tool_calls"][1]["function"]["arguments"].update(days="2"), "schema_violation", "messages[2].tool_calls[1].function.arguments.days"),
    (lambda s: s.messages[2]["tool_calls"][1]["function"]["arguments"].update(days=True), "schema_violation", "messages[2].tool_calls[1].function.arguments.days"),
    (lambda s: s.messages[2]["tool_calls"][0]["function"]["arguments"].update(unit="k"), "schema_violation", "messages[2].tool_calls[0].function.arguments.unit"),
    (lambda s: s.messages[2]["tool_calls"][0]["function"]["arguments"].update(town="x"), "schema_violation", "messages[2].tool_calls[0].function.arguments.town"),
    (lambda s: s.messages[2]["tool_calls"][0]["function"].update(arguments="{'city': 'Tokyo'}"), "python_repr", "messages[2].tool_calls[0].function.arguments"),
    (lambda s: s.messages[2]["tool_calls"][0]["function"].update(arguments="{city"), "bad_arguments", "messages[2].tool_calls[0].function.arguments"),
    (lambda s: s.messages[3].update(tool_call_id="call_9"), "orphan_tool_result", "messages[3].tool_call_id"),
    (lambda s: s.messages[3].update(name="other"), "orphan_tool_result", "messages[3].name"),
    (lambda s: s.messages.pop(4), "unanswered_call", "messages[4]"),
    (lambda s: s.messages.insert(1, {"role": "system", "content": "again"}), "role_order", "messages[1]"),
    (lambda s: s.messages.insert(2, {"role": "assistant", "content": "hm"}) or s.messages.insert(2, {"role": "assistant", "content": "hm"}), "role_order", "messages[3]"),
    (lambda s: s.messages[5].update(content=""), "role_order", "messages[5]"),
    (lambda s: s.tools.append(copy.deepcopy(WEATHER)), "bad_tools", "tools[1]"),
    (lambda s: s.tools[0]["function"].update(parameters={"type": "string"}), "bad_tools", "tools[0].parameters"),
])
def test_broken_samples_are_rejected_with_reason_and_field(edit, reason, field):
    r = _broken(edit)
    assert (r.reason, r.field) == (reason, field)


def test_int_counts_as_number_but_not_bool():
    tool = function_tool("f", "", {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]})
    s = Sample([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [ToolCall("f", {"x": 3}, "c").to_message()]}], [tool])
    validate(s)
    s.messages[1]["tool_calls"][0]["function"]["arguments"]["x"] = False
    with pytest.raises(Rejected):
        validate(s)


def test_disk_round_trip_keeps_the_sample():
    s = good()
    s.meta = {"id": "x", "tool_names": ["get_weather"]}
    back = Sample.from_record(s.to_record())
    assert back.messages == s.messages and back.tools == s.tools
    assert isinstance(s.to_record()["tools"], str)
    assert isinstance(s.to_record()["messages"][2]["tool_calls"][0]["function"]["arguments"], str)
