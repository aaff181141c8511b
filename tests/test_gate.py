"""The CI gate: each rule fails on a doctored run and passes on noise; a real regression (no
checkpointing inside checkpoint-sqrt) fails on trace_bytes and on the exponent."""

from __future__ import annotations

import json

import pytest

from suite import gate
from suite.cli import main
from suite.config import build_config
from suite.records import load_frame
from suite.sweep import run_sweep

pytestmark = pytest.mark.slow

MINI = {"name": "mini-gate", "problems": ["gd"], "backends": ["unrolled", "checkpoint-sqrt",
        "ift-cg"], "frameworks": ["torch", "jax"], "repeats": 3, "timeout_s": 120,
        "pair_with": "unrolled", "grid": [{"n": [8], "K": [16, 256]}]}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    result = run_sweep(build_config(MINI, name="mini-gate"), root, progress=False)
    frame = load_frame(result.run_dir)
    assert set(frame["status"]) == {"ok"}
    return result.run_dir, frame, gate.build_baseline(frame, "mini-gate")


def _cell(frame, backend="ift-cg", framework="torch", K=256):
    sel = (frame["backend"] == backend) & (frame["framework"] == framework) & (frame["K"] == K)
    assert sel.sum() == 1
    return frame.index[sel][0]


def test_clean_run_passes_its_own_baseline(clean_run):
    _, frame, baseline = clean_run
    result = gate.compare(frame, baseline)
    assert result.passed, gate.render(result)
    assert result.cells == len(frame) == 12
    assert all(cell["time_ratio"] is not None for cell in baseline["cells"].values())


@pytest.mark.parametrize("factor, fails", [(1.03, True), (0.97, True), (1.005, False)])
def test_trace_bytes_is_two_sided_within_one_percent(clean_run, factor, fails):
    _, frame, baseline = clean_run
    doctored = frame.copy()
    i = _cell(doctored)
    doctored.loc[i, "trace_bytes"] = round(doctored.loc[i, "trace_bytes"] * factor)
    result = gate.compare(doctored, baseline)
    assert result.passed is not fails
    if fails:
        (finding,) = result.failures
        assert finding.metric == "trace_bytes"
        assert finding.cell == gate.cell_key(doctored.loc[i])
        assert ("update the baseline" in finding.rule) is (factor < 1)


def test_counts_are_deterministic_rules_too(clean_run):
    _, frame, baseline = clean_run
    doctored = frame.copy()
    i = _cell(doctored)
    doctored.loc[i, "hvp_evals"] += 1  # one more CG iteration than recorded: > 1 %
    (finding,) = gate.compare(doctored, baseline).failures
    assert finding.metric == "hvp_evals"


@pytest.mark.parametrize("factor, fails", [(1.02, False), (1.5, True)])
def test_peak_bytes_is_one_sided_with_slack(clean_run, factor, fails):
    _, frame, baseline = clean_run
    doctored = frame.copy()
    i = _cell(doctored, "unrolled", "torch", 256)  # ≈ 2 MiB: 50 % is far beyond 64 KiB
    doctored.loc[i, "peak_bytes"] = round(doctored.loc[i, "peak_bytes"] * factor)
    assert gate.compare(doctored, baseline).passed is not fails
    doctored.loc[i, "peak_bytes"] = round(frame.loc[i, "peak_bytes"] * 0.5)  # lower: fine
    assert gate.compare(doctored, baseline).passed


@pytest.mark.parametrize("factor, fails", [(1.40, True), (1.10, False)])
def test_time_ratio_tripwire(clean_run, factor, fails):
    _, frame, baseline = clean_run
    doctored = frame.copy()
    i = _cell(doctored, "checkpoint-sqrt", "jax", 256)
    doctored.loc[i, "time_ratio"] = frame.loc[i, "time_ratio"] * factor
    result = gate.compare(doctored, baseline)
    assert result.passed is not fails
    if fails:
        assert [f.metric for f in result.failures] == ["time_ratio"]


def test_error_threshold(clean_run):
    _, frame, baseline = clean_run
    doctored = frame.copy()
    i = _cell(doctored, "unrolled", "jax", 16)
    doctored.loc[i, "grad_rel_error"] = 1e-6  # rounding-level cell now wrong in the 6th digit
    (finding,) = gate.compare(doctored, baseline).failures
    assert finding.metric == "grad_rel_error"


def test_missing_cells_fail_both_ways(clean_run):
    _, frame, baseline = clean_run
    i = _cell(frame)
    result = gate.compare(frame.drop(index=i), baseline)
    assert [(f.cell, f.metric) for f in result.failures] == [(gate.cell_key(frame.loc[i]),
                                                              "cell")]
    smaller = {**baseline, "cells": {k: v for k, v in baseline["cells"].items()
                                     if k != gate.cell_key(frame.loc[i])}}
    (finding,) = gate.compare(frame, smaller).failures
    assert "missing from the baseline" in finding.rule


def test_version_change_rebases_deterministic_meters_loudly(clean_run):
    _, frame, baseline = clean_run
    older = {**baseline, "versions": {**baseline["versions"], "jax": "0.0.1"}}
    doctored = frame.copy()
    i = _cell(doctored, "ift-cg", "jax", 256)
    series = (doctored["backend"] == "ift-cg") & (doctored["framework"] == "jax")
    # a new jax allocates differently: every point of the series doubles (its slope, a
    # theory check, is unchanged); the values are re-based, not compared
    doctored.loc[series, "trace_bytes"] *= 2
    result = gate.compare(doctored, older)
    assert result.passed and "jax" in result.version_changes
    assert any(f.cell == gate.cell_key(doctored.loc[i]) and f.metric == "trace_bytes"
               for f in result.rebased)
    assert all("/jax/" in f.cell for f in result.rebased)
    assert "VERSIONS CHANGED" in gate.render(result)


def test_cli_exit_codes(clean_run, tmp_path, capsys):
    run_dir, frame, baseline = clean_run
    path = tmp_path / "baseline.json"
    assert main(["gate", "--run", str(run_dir), "--baseline", str(path),
                 "--update-baseline"]) == 0
    assert "new baseline: 12 cells" in capsys.readouterr().out
    assert main(["gate", "--run", str(run_dir), "--baseline", str(path)]) == 0
    assert json.loads((run_dir / "gate.json").read_text())["passed"] is True
    doctored = json.loads(path.read_text())
    key = next(iter(doctored["cells"]))
    doctored["cells"][key]["trace_bytes"] = int(doctored["cells"][key]["trace_bytes"] * 2) + 1
    path.write_text(json.dumps(doctored))
    assert main(["gate", "--run", str(run_dir), "--baseline", str(path)]) == 1
    out = capsys.readouterr().out
    assert key in out and "FAILED" in out
    assert main(["gate", "--run", str(run_dir), "--baseline", str(tmp_path / "none.json")]) == 2


def test_a_real_regression_fails_on_trace_bytes_and_exponent(clean_run, tmp_path, monkeypatch):
    _, _, baseline = clean_run
    monkeypatch.setenv("IFT_BENCH_DISABLE_CHECKPOINT", "1")
    config = build_config({**MINI, "backends": ["unrolled", "checkpoint-sqrt"]}, name="regress")
    broken = load_frame(run_sweep(config, tmp_path, progress=False).run_dir)
    subset = {**baseline, "cells": {k: v for k, v in baseline["cells"].items()
                                    if "/ift-cg/" not in k}}
    result = gate.compare(broken, subset)
    failed = {(f.cell.split("/")[1], f.metric) for f in result.failures}
    assert ("checkpoint-sqrt", "trace_bytes") in failed
    assert ("checkpoint-sqrt", "exponent(trace_bytes, K)") in failed
    assert {cell for cell, _ in failed} == {"checkpoint-sqrt"}  # unrolled is untouched
