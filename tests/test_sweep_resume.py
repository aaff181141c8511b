"""Interrupt a sweep (signal, or killed mid-line), resume it: every point recorded exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from suite.cli import main
from suite.config import load_config
from suite.executors import failure_record
from suite.records import Record, append_record, read_records, write_json

CONFIG = """
name = "resume"
problems = ["gd"]
backends = ["unrolled", "ift-cg"]
frameworks = ["torch"]
repeats = 1
timeout_s = 60
[[grid]]
n = [5]
K = [5, 10, 20, 40, 80]
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_sweep_resumes_without_loss_or_duplicates(tmp_path, sig):
    config = tmp_path / "resume.toml"
    config.write_text(CONFIG)
    expected = {p.key() for p in load_config(str(config)).points()}
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "suite", "run", "--config", str(config), "--results",
           str(tmp_path), "--run-id", "run", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = run_dir / "records.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if records.exists() and len(records.read_text().splitlines()) >= 3:
            break
        time.sleep(0.1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "--resume" in out
    first = read_records(records)
    assert 3 <= len(first) < len(expected)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["interrupted"] is True
    keys = [r.point_key for r in first]
    assert len(keys) == len(set(keys)) and set(keys) <= expected
    if sig == signal.SIGINT:
        return  # the resume reads what is on disk, not how the sweep ended: SIGTERM's run
        #         measures it (the same code path; one resumed sweep less in make test)

    resumed = subprocess.run(cmd[:4] + ["--resume", str(run_dir), "--no-progress"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = read_records(records)
    keys = [r.point_key for r in final]
    assert len(keys) == len(set(keys)) == len(expected)
    assert set(keys) == expected
    assert [r.point_key for r in final[:len(first)]] == [r.point_key for r in first]
    assert all(r.status == "ok" for r in final)


def _ok_record(point, settings) -> Record:
    """What a measured point leaves behind, without measuring (these tests are about which
    points a resume measures, and what happens to the lines already on disk)."""
    return failure_record(point, settings, "ok", None)


def _killed_run(tmp_path: Path, config, keep) -> Path:
    """A run directory as a killed ``ift-bench run`` leaves it: meta.json as run_sweep writes
    it, the records of the points ``keep`` selects, and a torn last line."""
    run_dir = tmp_path / "killed"
    run_dir.mkdir()
    write_json(run_dir / "meta.json", {"run_id": "killed", "config": config.to_json()})
    for point in config.points():
        if keep(point):
            append_record(run_dir / "records.jsonl", _ok_record(point, config.settings))
    with open(run_dir / "records.jsonl", "ab") as fh:
        fh.write(TORN)
    return run_dir


TORN = b'{"problem": "gd", "backend": "unrolled", "fram'


def test_resume_from_meta_json_alone_finishes_the_default_config_exactly(tmp_path, monkeypatch,
                                                                       capsys):
    """``run --resume RUN_DIR`` of a killed ``make bench`` run: the config comes back from
    meta.json (per-grid options included), the torn line is set aside, and exactly the
    missing points are measured, each once."""
    config = load_config("default")
    expected = [p.key() for p in config.points()]
    missing = {p.key() for p in config.points() if p.problem == "qp" and p.K == 1000}
    assert len(missing) == 6 and len(expected) == 408  # 3 qp backends × 2 frameworks
    run_dir = _killed_run(tmp_path, config, lambda p: p.key() not in missing)
    before = (run_dir / "records.jsonl").read_bytes()[:-len(TORN)]
    measured = []

    def fake_run(self, point, settings, *, dump_dir=None, slot=0):
        measured.append(point.key())
        return _ok_record(point, settings)

    monkeypatch.setattr("suite.executors.local.LocalExecutor.run", fake_run)
    assert main(["run", "--resume", str(run_dir), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert sorted(measured) == sorted(missing)
    keys = [r.point_key for r in read_records(run_dir / "records.jsonl")]
    assert sorted(keys) == sorted(expected) and len(keys) == len(set(keys)) == 408
    after = (run_dir / "records.jsonl").read_bytes()
    assert after.startswith(before)  # every earlier record kept, byte for byte
    side = run_dir / f"records.jsonl.torn-at-{len(before)}"
    assert side.read_bytes() == TORN
    assert f"torn last line ({len(TORN)} bytes) moved to {side}" in err
    assert "ok 408" in out


def test_resume_reports_unreadable_lines_and_keeps_them(tmp_path, monkeypatch, capsys):
    config = load_config("quick")
    run_dir = _killed_run(tmp_path, config, lambda p: True)
    records = run_dir / "records.jsonl"
    lines = records.read_bytes().split(b"\n")
    lines[3:3] = [b"[1, 2]", b"\xff garbage"]  # become lines 4 and 5
    records.write_bytes(b"\n".join(lines))

    def fake_run(self, point, settings, *, dump_dir=None, slot=0):
        raise AssertionError("every point is recorded: nothing to measure")

    monkeypatch.setattr("suite.executors.local.LocalExecutor.run", fake_run)
    assert main(["run", "--resume", str(run_dir), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"{records}:4: unreadable line skipped (a JSON list, not an object)" in err
    assert f"{records}:5: unreadable line skipped (not UTF-8" in err
    assert b"\n[1, 2]\n\xff garbage\n" in records.read_bytes()  # reported, never dropped
