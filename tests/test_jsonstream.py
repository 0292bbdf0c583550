import json

import pytest

from dispatchtune.data_prep import jsonstream
from dispatchtune.data_prep.jsonstream import iter_records
from dispatchtune.data_prep.sample import Rejected

RECORDS = [{"id": i, "text": "é€😀" * i, "nested": {"xs": list(range(i))}} for i in range(40)]


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of a few bytes put record and character boundaries everywhere."""
    monkeypatch.setattr(jsonstream, "CHUNK", 37)


def _write(tmp_path, data: bytes, name="f.json"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("indent", [None, 2])
def test_array_streams_every_record(tmp_path, small_chunks, indent):
    p = _write(tmp_path, json.dumps(RECORDS, ensure_ascii=False, indent=indent).encode())
    assert [r for _, r in iter_records(p)] == RECORDS
    assert [i for i, _ in iter_records(p)] == list(range(len(RECORDS)))


def test_truncated_array_keeps_what_came_before(tmp_path, small_chunks):
    p = _write(tmp_path, json.dumps(RECORDS, ensure_ascii=False).encode()[:-50])
    out = list(iter_records(p))
    assert [r for _, r in out[:-1]] == RECORDS[: len(out) - 1]
    index, last = out[-1]
    assert isinstance(last, Rejected) and last.reason == "truncated_json" and index == len(out) - 1


def test_invalid_utf8_rejects_only_its_record(tmp_path, small_chunks):
    data = json.dumps(RECORDS, ensure_ascii=False).encode()
    at = data.index(b'"id": 7')
    p = _write(tmp_path, data[:at] + b'"bad": "\xff\xfe", ' + data[at:])
    out = list(iter_records(p))
    assert len(out) == len(RECORDS)
    bad = [(i, r) for i, r in out if isinstance(r, Rejected)]
    assert [(i, r.reason) for i, r in bad] == [(7, "invalid_utf8")]
    assert "0xff" in bad[0][1].message


def test_syntax_error_mid_array_ends_the_file_with_a_rejection(tmp_path):
    p = _write(tmp_path, b'[{"a": 1}, {"a": , 2}, {"a": 3}]')
    out = list(iter_records(p))
    assert out[0] == (0, {"a": 1})
    assert out[1][0] == 1 and out[1][1].reason == "not_json"
    assert len(out) == 2


def test_jsonl_and_single_documents(tmp_path):
    lines = _write(tmp_path, b'{"a": 1}\n\n{"a": 2}\nnot json\n{"a": 4}\n', "f.jsonl")
    out = list(iter_records(lines))
    assert [i for i, _ in out] == [0, 1, 2, 3]
    assert out[2][1].reason == "not_json" and "line 3" in out[2][1].message
    doc = _write(tmp_path, b'{\n  "a": {"b": 1}\n}\n', "doc.json")
    assert list(iter_records(doc)) == [(0, {"a": {"b": 1}})]


@pytest.mark.parametrize("data,reason", [(b"", "not_json"), (b"hello", "not_json"), (b"{'a': 1}", "not_json")])
def test_not_json_is_one_rejected_record(tmp_path, data, reason):
    (index, r), = list(iter_records(_write(tmp_path, data)))
    assert index == 0 and r.reason == reason


def test_large_record_streams_through(tmp_path, small_chunks):
    monkey_big = {"blob": "x" * (3 << 20)}
    p = _write(tmp_path, json.dumps([{"a": 1}, monkey_big, {"a": 2}]).encode())
    assert [r for _, r in iter_records(p)] == [{"a": 1}, monkey_big, {"a": 2}]


def test_lines_after_a_long_first_array_line_are_records_too(tmp_path, monkeypatch):
    """JSON Lines whose first line, an array, is longer than the head looked at: it streams as an array, and the
    lines after its closing bracket are read as records, not dropped."""
    monkeypatch.setattr(jsonstream, "CHUNK", 5)
    p = _write(tmp_path, b'[{"a": 1}, {"a": 2}]\n{"b": 1}\nnot json\n', "f.jsonl")
    out = list(iter_records(p))
    assert [i for i, _ in out] == [0, 1, 2, 3]
    assert [r for _, r in out[:3]] == [{"a": 1}, {"a": 2}, {"b": 1}] and out[3][1].reason == "not_json"


def test_byte_order_mark_and_a_broken_first_line(tmp_path):
    p = _write(tmp_path, b'\xef\xbb\xbf{"a": \n{"a": 2}\n{"a": 3}\n', "f.jsonl")
    out = list(iter_records(p))
    assert out[0][1].reason == "not_json" and [r for _, r in out[1:]] == [{"a": 2}, {"a": 3}]
