"""The decision table on a frame built by hand, where the right choices are known."""

from __future__ import annotations

import pandas as pd
import pytest

from reports import decision
from suite.records import RECORD_FIELDS, Record


def _rec(backend: str, framework: str, *, n: int = 50, K: int = 1000, peak: int, time: float,
         conv: float, kstep: float = 1e-15, problem: str = "gd",
         options: dict | None = None, status: str = "ok") -> dict:
    return Record(problem=problem, backend=backend, framework=framework, device="cpu",
                  dtype="float64", n=n, K=K, seed=0,
                  options={"momentum": 0.9} if options is None else options, status=status,
                  peak_bytes=peak, time_s=time, grad_error_converged=conv,
                  grad_error_k_step=kstep).to_json()


def _frame(rows: list[dict]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=list(RECORD_FIELDS))
    out["options_str"] = out["options"].map(
        lambda o: ",".join(f"{k}={v}" for k, v in sorted(o.items())))
    return out


@pytest.fixture
def frame() -> pd.DataFrame:
    return _frame([
        # gd, n = 50, K = 1000, torch: JFB is cheapest in both but 50 % off; CG is accurate
        _rec("unrolled", "torch", peak=1_000_000, time=0.30, conv=1e-15),
        _rec("checkpoint-sqrt", "torch", peak=100_000, time=0.60, conv=1e-15),
        _rec("ift-cg", "torch", peak=50_000, time=0.05, conv=1e-10, kstep=1e-9),
        _rec("ift-jfb", "torch", peak=40_000, time=0.04, conv=0.5, kstep=0.5),
        # jax: a tie in memory between CG and JFB, unrolled the fastest
        _rec("unrolled", "jax", peak=200_000, time=0.02, conv=1e-15),
        _rec("ift-cg", "jax", peak=30_000, time=0.03, conv=1e-10),
        _rec("ift-jfb", "jax", peak=30_000, time=0.025, conv=0.5),
        # gd, n = 50, K = 10: nothing is within 1e-6 of the converged gradient
        _rec("unrolled", "torch", K=10, peak=20_000, time=0.003, conv=0.85),
        _rec("ift-cg", "torch", K=10, peak=50_000, time=0.004, conv=2.4),
        # gd, n = 100, K = 1000: another unrolled, which the n = 50 rows must not use
        _rec("unrolled", "torch", n=100, peak=2_000_000, time=0.40, conv=1e-15),
        _rec("ift-cg", "torch", n=100, peak=100_000, time=0.10, conv=1e-10),
        # savi with two problem options at one n and K: two separate decisions
        _rec("unrolled", "torch", problem="savi", n=4, options={"wrt": "decoder"},
             peak=500_000, time=0.1, conv=1e-12),
        _rec("ift-cg", "torch", problem="savi", n=4, options={"wrt": "decoder"},
             peak=80_000, time=0.2, conv=1e-9),
        _rec("unrolled", "torch", problem="savi", n=4, options={"wrt": "encoder"},
             peak=400_000, time=0.05, conv=1e-12),
        _rec("ift-cg", "torch", problem="savi", n=4, options={"wrt": "encoder"},
             peak=90_000, time=0.3, conv=1.0),
        # a failed point never enters the table
        _rec("ift-direct", "torch", peak=0, time=0.0, conv=0.0, status="timeout"),
    ])


def _chosen(table: pd.DataFrame, criterion: str, **where) -> set[str]:
    sel = table[criterion]
    for key, value in where.items():
        sel &= table[key] == value
    return set(table[sel]["backend"])


def test_marks_answer_memory_time_and_accuracy(frame):
    table = decision.decision_table(frame)
    at = {"problem": "gd", "n": 50, "K": 1000}
    assert _chosen(table, "least_memory", framework="torch", **at) == {"ift-jfb"}
    assert _chosen(table, "least_time", framework="torch", **at) == {"ift-jfb"}
    assert _chosen(table, "least_memory_accurate", framework="torch", **at) == {"ift-cg"}
    assert _chosen(table, "least_memory", framework="jax", **at) == {"ift-cg", "ift-jfb"}
    assert _chosen(table, "least_time", framework="jax", **at) == {"unrolled"}
    assert _chosen(table, "least_memory_accurate", framework="jax", **at) == {"ift-cg"}
    # the fastest accurate gradient: ift-cg in torch (JFB is faster but 50 % off), unrolled in JAX
    assert _chosen(table, "least_time_accurate", framework="torch", **at) == {"ift-cg"}
    assert _chosen(table, "least_time_accurate", framework="jax", **at) == {"unrolled"}
    # at K = 10 no strategy is within 1e-6: no accurate choice, but memory and time are marked
    k10 = {"problem": "gd", "n": 50, "K": 10, "framework": "torch"}
    assert _chosen(table, "least_memory_accurate", **k10) == set()
    assert _chosen(table, "least_time_accurate", **k10) == set()
    assert _chosen(table, "least_memory", **k10) == {"unrolled"}


def test_ratios_are_to_unrolled_at_the_same_point_and_framework(frame):
    table = decision.decision_table(frame).set_index(["problem", "problem_options", "n", "K",
                                                      "backend", "framework"])
    gd = ("gd", "momentum=0.9")
    assert table.loc[(*gd, 50, 1000, "ift-cg", "torch"), "peak_vs_unrolled"] == \
        pytest.approx(50_000 / 1_000_000)
    assert table.loc[(*gd, 50, 1000, "ift-cg", "jax"), "peak_vs_unrolled"] == \
        pytest.approx(30_000 / 200_000)
    assert table.loc[(*gd, 50, 1000, "ift-jfb", "torch"), "time_vs_unrolled"] == \
        pytest.approx(0.04 / 0.30)
    assert table.loc[(*gd, 100, 1000, "ift-cg", "torch"), "time_vs_unrolled"] == \
        pytest.approx(0.10 / 0.40)
    assert table.loc[("savi", "wrt=encoder", 4, 1000, "ift-cg", "torch"),
                     "peak_vs_unrolled"] == pytest.approx(90_000 / 400_000)
    assert table.loc[("savi", "wrt=decoder", 4, 1000, "ift-cg", "torch"),
                     "time_vs_unrolled"] == pytest.approx(0.2 / 0.1)
    # both errors carried as recorded
    assert table.loc[(*gd, 50, 1000, "ift-cg", "torch"), "grad_error_k_step"] == 1e-9


def test_no_row_merges_two_n_or_two_problem_options(frame):
    table = decision.decision_table(frame)
    ok = frame[frame["status"] == "ok"]
    assert len(table) == len(ok) == 15  # one row per successful record, the timeout dropped
    key = ["problem", "problem_options", "n", "K", "backend", "framework"]
    assert not table.duplicated(key).any()
    # each problem-options group is decided separately: savi's two θ have their own marks
    savi = table[table["problem"] == "savi"]
    assert set(savi["problem_options"]) == {"wrt=decoder", "wrt=encoder"}
    for _, group in savi.groupby("problem_options"):
        assert group["least_memory"].sum() == 1 and group["least_time"].sum() == 1
    assert _chosen(table, "least_time", problem="savi", problem_options="wrt=decoder") == \
        {"unrolled"}
    assert _chosen(table, "least_memory_accurate", problem="savi",
                   problem_options="wrt=encoder") == {"unrolled"}


def test_answers_give_one_line_per_point_and_framework(frame):
    answers = decision.answers(decision.decision_table(frame)).set_index(
        ["problem", "n", "K", "framework"])
    row = answers.loc[("gd", 50, 1000, "torch")]
    assert (row["least_memory"], row["least_time"], row["least_memory_accurate"]) == \
        ("ift-jfb", "ift-jfb", "ift-cg")
    assert row["least_memory_accurate:peak_bytes"] == 50_000
    assert answers.loc[("gd", 50, 1000, "jax"), "least_memory"] == "ift-cg / ift-jfb"
    assert answers.loc[("gd", 50, 10, "torch"), "least_memory_accurate"] == ""
    assert len(answers) == 6  # gd: (50, 1000) × 2 frameworks, (50, 10), (100, 1000); savi × 2


def test_csv_round_trips_the_marks(frame, tmp_path):
    table = decision.decision_table(frame)
    decision.write_csv(table, tmp_path / "decision.csv")
    back = pd.read_csv(tmp_path / "decision.csv", keep_default_na=False)
    assert list(back.columns) == decision.COLUMNS
    exact = back[(back["problem"] == "gd") & (back["n"] == 50) & (back["K"] == 1000)
                 & (back["backend"] == "unrolled") & (back["framework"] == "torch")]
    assert exact["peak_bytes"].tolist() == [1_000_000]
    text = (tmp_path / "decision.csv").read_text()
    assert ",1000000," in text and "e+06" not in text  # bytes as exact integers
    marked = back[(back["least_memory_accurate"].astype(str) == "True")]
    assert sorted(zip(marked["problem"], marked["n"], marked["K"], marked["backend"],
                      marked["framework"], strict=True)) == sorted([
        ("gd", 50, 1000, "ift-cg", "torch"), ("gd", 50, 1000, "ift-cg", "jax"),
        ("gd", 100, 1000, "ift-cg", "torch"), ("savi", 4, 1000, "ift-cg", "torch"),
        ("savi", 4, 1000, "unrolled", "torch")])
