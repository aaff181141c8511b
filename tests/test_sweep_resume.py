"""Interrupt a sweep with a signal, resume it: every point recorded exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from suite.config import load_config
from suite.records import read_records

pytestmark = pytest.mark.slow

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

    resumed = subprocess.run(cmd[:4] + ["--resume", str(run_dir), "--no-progress"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = read_records(records)
    keys = [r.point_key for r in final]
    assert len(keys) == len(set(keys)) == len(expected)
    assert set(keys) == expected
    assert [r.point_key for r in final[:len(first)]] == [r.point_key for r in first]
    assert all(r.status == "ok" for r in final)
