"""Records on disk: durable appends, torn lines set aside, unreadable lines reported, frames."""

from __future__ import annotations

from suite.records import (
    RECORD_FIELDS,
    Record,
    append_record,
    read_records,
    read_records_checked,
)
from suite.rundir import load_frame, move_torn_tail


def _record(K: int, status: str = "ok") -> Record:
    return Record(problem="gd", backend="unrolled", framework="torch", device="cpu",
                  dtype="float64", n=5, K=K, seed=0, options={"tol": 1e-6}, status=status,
                  peak_bytes=1000 * K, point_key=f"k{K}")


def test_roundtrip_and_torn_last_line(tmp_path):
    path = tmp_path / "records.jsonl"
    for K in (1, 2, 3):
        append_record(path, _record(K))
    with open(path, "a") as fh:
        fh.write('{"problem": "gd", "backend": "unrol')  # a writer killed mid-line
    records = read_records(path)
    assert [r.K for r in records] == [1, 2, 3]
    assert records[0].options == {"tol": 1e-6}


def test_load_frame_has_every_schema_column(tmp_path):
    path = tmp_path / "records.jsonl"
    append_record(path, _record(1))
    append_record(path, _record(2, "oom"))
    frame = load_frame(tmp_path)
    assert set(RECORD_FIELDS) <= set(frame.columns)
    assert list(frame["status"]) == ["ok", "oom"]
    assert list(frame["peak_bytes"]) == [1000, 2000]
    assert frame["options_str"][0] == "tol=1e-06"


def test_torn_tail_is_moved_aside_whole_and_the_next_append_is_readable(tmp_path):
    path = tmp_path / "records.jsonl"
    for K in (1, 2, 3):
        append_record(path, _record(K))
    complete = path.read_bytes()
    fragment = b'{"problem": "gd", "backend": "unrol'  # a writer killed mid-line
    with open(path, "ab") as fh:
        fh.write(fragment)
    side, nbytes = move_torn_tail(path)
    assert nbytes == len(fragment) == 35
    assert side.read_bytes() == fragment and side.parent == tmp_path
    assert path.read_bytes() == complete  # the complete lines untouched, byte for byte
    assert move_torn_tail(path) is None  # nothing torn any more
    append_record(path, _record(4))
    checked = read_records_checked(path)
    assert [r.K for r in checked.records] == [1, 2, 3, 4]
    assert checked.unreadable == [] and checked.torn_bytes == 0


def test_every_unreadable_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "records.jsonl"
    append_record(path, _record(1))
    with open(path, "ab") as fh:
        fh.write(b"[1, 2]\n{}\n\xff\xfe not utf-8\n{garbage\n")
    append_record(path, _record(2))
    with open(path, "ab") as fh:
        fh.write(b'{"torn')
    checked = read_records_checked(path)
    assert [r.K for r in checked.records] == [1, 2]
    assert [line for line, _ in checked.unreadable] == [2, 3, 4, 5]
    reasons = dict(checked.unreadable)
    assert "list" in reasons[2] and "problem" in reasons[3] and "UTF-8" in reasons[4]
    assert "JSON" in reasons[5]
    assert checked.torn_bytes == 6
    messages = checked.problems(path)
    assert len(messages) == 5 and f"{path}:4:" in messages[2] and "6 bytes" in messages[4]
