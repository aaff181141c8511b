"""The report's peers table against the records it is built from: which rows it shows, the
ratios ours/peer computed from the two records, and ‖g_ours − g_peer‖/‖g_peer‖ as the harness
measured it (checked here against both gradients recomputed on the same instance)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import backends
from reports import peers
from reports.problem_sections import problem_section
from suite import analysis
from suite.measure import measure
from suite.point import Point, Settings
from suite.program import evaluate
from suite.rundir import load_frame

#: a peer beside its counterpart, one peer with ours missing at its K, and our own rows
POINTS = [Point("gd", b, "jax", n=6, K=K) for b, K in (
    ("ift-cg", 40), ("jaxopt-cg", 40), ("optimistix-cg", 40), ("ift-direct", 40),
    ("optimistix-lu", 40), ("jaxopt-lu", 60))]


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    run = tmp_path_factory.mktemp("peers-run")
    with open(run / "records.jsonl", "w") as fh:
        for point in POINTS:
            fh.write(json.dumps(measure(point, Settings(repeats=1)).to_json()) + "\n")
    return analysis.annotate(load_frame(run))


def _record(frame, backend):
    return frame[frame["backend"] == backend].iloc[0]


def test_table_has_one_row_per_peer_record_beside_its_counterpart(frame):
    table = peers.peers_table(frame, "gd")
    assert list(table["backend"]) == ["jaxopt-lu", "optimistix-lu", "jaxopt-cg", "optimistix-cg"]
    assert list(table["ours"]) == ["ift-direct", "ift-direct", "ift-cg", "ift-cg"]
    for _, row in table.iterrows():
        peer = _record(frame, row["backend"])
        assert row["peer"] == peer["peer"] and row["peer"].split()[0] in ("jaxopt", "optimistix")
        assert row["time_s"] == peer["time_s"] and row["peak_bytes"] == peer["peak_bytes"]
        assert row["error"] == peer["grad_rel_error"]
        if row["K"] == 60:  # ift-direct was not measured at K = 60: nothing to set beside it
            assert math.isnan(row["time_ratio"]) and math.isnan(row["time_ours_s"])
            continue
        ours = _record(frame, row["ours"])
        assert row["time_ratio"] == pytest.approx(ours["time_s"] / peer["time_s"], rel=1e-12)
        assert row["peak_ratio"] == pytest.approx(ours["peak_bytes"] / peer["peak_bytes"],
                                                  rel=1e-12)
        assert row["error_ours"] == ours["grad_rel_error"]
        # the measured cause stands beside a row ours does not lead on time and peak, only there
        behind = not (row["time_ratio"] < 1 and row["peak_ratio"] < 1)
        documented = backends.registry()[row["backend"]].parity_note
        assert row["note"] == (documented if documented and behind else "–")


def test_a_row_ours_does_not_lead_carries_the_peers_measured_cause():
    """The note column on fixed records: jaxopt-cg beside ift-cg, ours ahead on both, then
    behind on time, then behind on peak (only jaxopt-cg documents a cause among these rows)."""
    import pandas as pd

    def rows(time_ours, peak_ours):
        common = {"problem": "gd", "problem_options": "", "framework": "jax", "device": "cpu",
                  "dtype": "float64", "seed": 0, "n": 6, "K": 40, "status": "ok",
                  "strategy_options": "", "options": {}, "grad_rel_error": 1e-9,
                  "diagnostics": {}}
        return pd.DataFrame([
            {**common, "backend": "jaxopt-cg", "peer": "jaxopt 0.8.5", "time_s": 1.0,
             "peak_bytes": 1000},
            {**common, "backend": "ift-cg", "peer": None, "time_s": time_ours,
             "peak_bytes": peak_ours}])

    note = backends.registry()["jaxopt-cg"].parity_note
    assert "bit for bit" in note
    assert peers.peers_table(rows(0.9, 900), "gd").iloc[0]["note"] == "–"
    assert peers.peers_table(rows(1.1, 900), "gd").iloc[0]["note"] == note
    assert peers.peers_table(rows(0.9, 1100), "gd").iloc[0]["note"] == note


@pytest.mark.parametrize("backend", ["jaxopt-cg", "optimistix-cg", "optimistix-lu"])
def test_gradient_difference_is_the_one_on_the_same_instance(frame, backend):
    row = peers.peers_table(frame, "gd").set_index("backend").loc[backend]
    point = Point("gd", backend, "jax", n=6, K=40)
    g_peer = evaluate(point).gradient
    g_ours = evaluate(Point("gd", row["ours"], "jax", n=6, K=40)).gradient
    expected = np.linalg.norm(g_ours - g_peer) / np.linalg.norm(g_peer)
    assert row["grad_diff_error"] == pytest.approx(expected, rel=1e-6, abs=1e-15)
    assert row["grad_diff_error"] < 1e-8  # the same IFT at the same x_K
    if backend.startswith("optimistix"):
        assert row["peer_steps"] == 40  # its fixed_point stopped at max_steps = K
    else:
        assert math.isnan(row["peer_steps"])  # custom_root runs our forward: nothing to report
    assert not row["converged_only"] and row["trace_note"] == "metered"


def test_our_own_records_carry_no_difference_and_the_section_shows_the_table(frame):
    for backend in ("ift-cg", "ift-direct"):
        assert "grad_rel_diff_ours" not in (_record(frame, backend)["diagnostics"] or {})
    view = problem_section("gd", frame)["peers"]
    assert view["columns"][:6] == ["n", "K", "peer row", "library", "ours", "time (peer)"]
    assert "time ours/peer" in view["columns"] and "‖g_ours − g_peer‖/‖g_peer‖" in view["columns"]
    assert len(view["rows"]) == 4
    assert peers.peers_table(frame, "qp").empty


def test_a_paired_peer_row_shows_ours_over_peer_from_its_blocks(tmp_path):
    """A sweep that timed jaxopt-cg against ift-cg in its process (pair_with = "counterpart")
    records peer/ours per ABBA block; the table shows ours/peer = 1/median with the interval's
    ends inverted, not the quotient of the two records' times."""
    run = tmp_path / "paired-run"
    run.mkdir()
    peer = measure(Point("gd", "jaxopt-cg", "jax", n=6, K=40),
                   Settings(repeats=1, pair_with="ift-cg"))
    ours = measure(Point("gd", "ift-cg", "jax", n=6, K=40), Settings(repeats=1))
    with open(run / "records.jsonl", "w") as fh:
        for record in (peer, ours):
            fh.write(json.dumps(record.to_json()) + "\n")
    ratios = peer.time_ratios
    assert peer.time_ratio_to == "ift-cg" and len(ratios) >= 11
    assert peer.time_ratio == pytest.approx(float(np.median(ratios)), rel=1e-12)
    xs = sorted(ratios)  # 11 blocks: the 95 % interval is the 2nd to the 10th (coverage 98.8 %)
    assert (peer.time_ratio_low, peer.time_ratio_high) == (xs[1], xs[-2])
    row = peers.peers_table(analysis.annotate(load_frame(run)), "gd").iloc[0]
    assert row["time_ratio"] == pytest.approx(1 / peer.time_ratio, rel=1e-12)
    assert row["time_interval"] == f"[{1 / xs[-2]:.3f}, {1 / xs[1]:.3f}]"
    assert row["time_measure"] == f"paired, {len(ratios)} ABBA blocks"
