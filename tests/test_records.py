"""Records on disk: durable appends, torn lines ignored, the DataFrame loader."""

from __future__ import annotations

from suite.records import RECORD_FIELDS, Record, append_record, load_frame, read_records


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
