"""What the report's figures and tables contain, on frames built by hand: every series of a
figure group is plotted (and nothing from another n or other problem options), zeros are drawn
at a stated floor, both errors are shown, ticks read the measured values, labels do not collide.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reports import figure_groups, figures, fit_summary
from reports.problem_sections import figure_title
from suite import analysis
from suite.records import RECORD_FIELDS, Record

GD_STRATEGIES = ["unrolled", "forward-batched", "checkpoint-sqrt", "checkpoint-binomial",
                 "reversible", "truncated", "ift-direct", "ift-cg", "ift-gmres", "ift-neumann",
                 "ift-jfb"]
KS = [10, 100, 1000]


def record(problem: str, backend: str, framework: str, n: int, K: int, *,
           options: dict | None = None, peak: float = 1e5, trace: float = 1e4,
           time: float = 1e-2, converged: float | None = 1e-3, k_step: float | None = 1e-15,
           grad_norm: float = 1.0, dim_x: int | None = None, dtype: str = "float64",
           status: str = "ok") -> dict:
    rec = Record(problem=problem, backend=backend, framework=framework, device="cpu",
                 dtype=dtype, n=n, K=K, seed=0, options=dict(options or {}), status=status,
                 peak_bytes=int(peak), trace_bytes=int(trace), time_s=time, time_min_s=time * 0.9,
                 forward_time_s=time * 0.4, grad_rel_error=k_step,
                 grad_error_converged=converged, grad_error_k_step=k_step, grad_norm=grad_norm,
                 inner_residual=1.0 / K, dim_x=dim_x if dim_x is not None else n, repeats=5)
    return rec.to_json()


def to_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(RECORD_FIELDS))
    frame["options_str"] = frame["options"].map(
        lambda o: ",".join(f"{k}={v}" for k, v in sorted(o.items())))
    return analysis.annotate(frame)


def default_like() -> pd.DataFrame:
    """The shape of ``make bench``'s gd and savi sweeps: 11 strategies at n = 50 over K, forward
    at n = 10 over K, an n sweep at K = 1000, savi's decoder and encoder (two ``wrt``)."""
    rows = []
    mom = {"momentum": 0.9}
    for fw in ("torch", "jax"):
        for b in GD_STRATEGIES:
            for K in KS:
                per_step = {"unrolled": 1600, "checkpoint-sqrt": 1600 / np.sqrt(K)}.get(b, 0)
                trace = 0 if b.startswith("ift-") and fw == "torch" else 800 + per_step * K
                conv = 0.0 if (b == "ift-direct" and K == 1000) else 0.85 / K
                rows.append(record("gd", b, fw, 50, K, options=mom, trace=trace,
                                   peak=20_000 + 3 * per_step * K, time=1e-3 + 1e-4 * K,
                                   converged=conv, k_step=0.0 if b == "unrolled" else 1e-15))
            for n in (100, 200):
                if b in ("unrolled", "checkpoint-sqrt", "ift-direct", "ift-cg"):
                    rows.append(record("gd", b, fw, n, 1000, options=mom, peak=200 * n * n,
                                       time=0.1))
        for K in KS:
            rows.append(record("gd", "forward", fw, 10, K, options=mom, peak=5000, time=1e-4 * K))
            for b in ("unrolled", "ift-direct", "ift-cg"):
                rows.append(record("savi", b, fw, 4, K, dim_x=64,
                                   options={"momentum": 0.9, "wrt": "decoder"},
                                   converged=1.6e-12, grad_norm=11.0 + 0.01 * K))
            rows.append(record("savi", "unrolled", fw, 4, K, dim_x=64,
                               options={"momentum": 0.9, "wrt": "encoder"},
                               converged=5.9e-16, grad_norm=0.5 / K))
    return to_frame(rows)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return default_like()


def _records(frame: pd.DataFrame, **where) -> pd.DataFrame:
    sel = frame["status"] == "ok"
    for k, v in where.items():
        sel &= frame[k] == v
    return frame[sel]


def _pairs(data: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(data["backend"], data["framework"], strict=True))


def test_k_figure_groups_are_every_n_and_problem_option_with_a_k_sweep(frame):
    groups = figure_groups.figure_groups(frame, "K")
    keys = {(g.problem, g.value, dict(g.keys)["problem_options"]) for g in groups}
    # gd at n = 50 (11 strategies) and at n = 10 (forward) separately; n = 100, 200 have one K;
    # savi's decoder and encoder runs never share a figure
    assert keys == {("gd", 50, "momentum=0.9"), ("gd", 10, "momentum=0.9"),
                    ("savi", 4, "momentum=0.9,wrt=decoder"),
                    ("savi", 4, "momentum=0.9,wrt=encoder")}


@pytest.mark.parametrize("metrics", [("peak_bytes",), ("trace_bytes",), ("time_s",),
                                     figures.ERRORS, ("grad_norm",)])
def test_each_k_figure_plots_every_series_of_its_group_and_nothing_else(frame, metrics):
    for group in figure_groups.figure_groups(frame, "K"):
        info = dict(group.keys)
        fig = figures.series_figure(group.frame, "K", metrics, title=figure_title(group))
        assert fig.svg is not None and "<svg" in fig.svg
        records = _records(frame, problem=info["problem"], n=group.value,
                           problem_options=info["problem_options"], dtype=info["dtype"])
        for metric in metrics:
            shown = fig.data[fig.data["metric"] == metric]
            assert _pairs(shown) == _pairs(records), (figure_title(group), metric)
            # every (series, K) of the records is a drawn point, none invented
            assert set(zip(shown["backend"], shown["framework"], shown["K"], strict=True)) == \
                set(zip(records["backend"], records["framework"], records["K"], strict=True))
    gd50 = next(g for g in figure_groups.figure_groups(frame, "K") if g.value == 50)
    data = figures.series_figure(gd50.frame, "K", ("peak_bytes",)).data
    assert len(_pairs(data)) == 22 and set(data["backend"]) == set(GD_STRATEGIES)


def test_n_figure_groups_plot_every_series_at_their_k(frame):
    groups = figure_groups.figure_groups(frame, "n")
    assert [(g.problem, g.value) for g in groups] == [("gd", 1000)]
    fig = figures.series_figure(groups[0].frame, "n", ("peak_bytes",))
    records = _records(frame, problem="gd", K=1000)
    assert _pairs(fig.data) == _pairs(records)
    assert set(fig.data["n"]) == {10, 50, 100, 200}
    unrolled = fig.data[(fig.data["backend"] == "unrolled") & (fig.data["framework"] == "jax")]
    assert list(unrolled["n"]) == [50, 100, 200]
    assert list(unrolled["value"]) == [*_records(frame, problem="gd", K=1000, backend="unrolled",
                                                 framework="jax").sort_values("n")["peak_bytes"]]


def test_zero_errors_and_zero_trace_bytes_are_drawn_at_a_stated_floor(frame):
    gd50 = next(g for g in figure_groups.figure_groups(frame, "K") if g.value == 50)
    errors = figures.series_figure(gd50.frame, "K", figures.ERRORS).data
    # both errors of every series are plotted
    assert set(errors["metric"]) == set(figures.ERRORS)
    conv = errors[errors["metric"] == "grad_error_converged"]
    zero = conv[conv["at_floor"]]
    # ift-direct's exact 0 at K = 1000, in both frameworks: kept, drawn at the floor
    assert set(zip(zero["backend"], zero["K"], strict=True)) == {("ift-direct", 1000)}
    assert (zero["value"] == 0).all() and (zero["plotted"] == figures.ERROR_FLOOR).all()
    k_step = errors[(errors["metric"] == "grad_error_k_step") & errors["at_floor"]]
    assert set(k_step["backend"]) == {"unrolled"} and len(k_step) == 6
    trace = figures.series_figure(gd50.frame, "K", ("trace_bytes",))
    at_floor = trace.data[trace.data["at_floor"]]
    records = _records(gd50.frame, trace_bytes=0)
    assert len(at_floor) == len(records) == 5 * 3  # the five torch IFT strategies at 3 K
    floor = float(at_floor["plotted"].iloc[0])
    # the power of two below half the smallest positive trace (800 B): 256 B, stated on the plot
    assert floor == 256 and "exactly 0 B" in trace.svg


def test_pareto_fronts_never_mix_two_n_or_two_problem_options(frame):
    front = analysis.pareto_front(frame)
    groups = front.groupby(["problem", "n", "problem_options"])
    assert set(groups.groups) == {("gd", 10, "momentum=0.9"), ("gd", 50, "momentum=0.9"),
                                  ("gd", 100, "momentum=0.9"), ("gd", 200, "momentum=0.9"),
                                  ("savi", 4, "momentum=0.9,wrt=decoder"),
                                  ("savi", 4, "momentum=0.9,wrt=encoder")}
    # forward at n = 10 is only compared with itself, not with the n = 50 strategies
    assert set(front[front["n"] == 10]["backend"]) == {"forward"}
    for _, points in groups:
        assert points["K"].nunique() == 1
        fig = figures.pareto_plot(points)
        assert len(fig.data) == len(points) and "Pareto-optimal" in fig.svg
        # every point is labelled (also the dominated ones)
        for label in fig.data["label"]:
            assert label.split(" · ")[0] in fig.svg


def test_summary_and_crossover_rows_never_merge_two_n_or_options(frame):
    summary = fit_summary.summary(frame)
    keys = ["problem", "backend", "framework", "n", "problem_options", "dtype"]
    assert not summary.duplicated(keys).any()
    savi = summary[(summary["problem"] == "savi") & (summary["backend"] == "unrolled")]
    # the decoder's and the encoder's errors stay apart (no median of 1.6e-12 and 5.9e-16)
    errors = dict(zip(savi["problem_options"], savi["error_converged_at_max_K"], strict=True))
    assert errors == {"momentum=0.9,wrt=decoder": pytest.approx(1.6e-12),
                      "momentum=0.9,wrt=encoder": pytest.approx(5.9e-16)}
    cross = analysis.crossovers(frame)
    assert not cross.duplicated(keys).any()
    single = cross[cross["n"] == 100]
    assert (single["crossover_time_K"].isna()).all()
    assert single["time_verdict"].str.endswith("(one K: no crossover)").all()


def test_colours_and_markers_distinguish_every_strategy():
    from matplotlib.colors import to_rgb

    import backends

    names = list(backends.registry())
    styles = [figures.strategy_style(n) for n in names]
    assert len({c for c, _ in styles}) == len({m for _, m in styles}) == len(names)
    # forward and ift-jfb were two near-identical oranges
    a, b = (np.array(to_rgb(figures.strategy_style(n)[0])) for n in ("forward", "ift-jfb"))
    assert np.abs(a - b).sum() > 0.5


def test_ticks_read_the_measured_values():
    ticks = figures.binary_ticks(20_000, 5_000_000)
    assert len(ticks) <= 6 and all(np.log2(t).is_integer() for t in ticks)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([50, 100, 200], [1, 2, 3])
    figures._format_x(ax, "n", np.array([50, 100, 200]))
    assert list(ax.xaxis.get_major_locator()()) == [50, 100, 200]
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["50", "100", "200"]
    # qp's gradient norms all within 11.0…11.3: distinct labels on a linear axis
    figures._format_y(ax, "grad_norm", np.array([11.02, 11.1, 11.27]))
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert len(labels) >= 3 and len(set(labels)) == len(labels)
    plt.close(fig)


def test_pareto_labels_are_spread_apart():
    targets = sorted([0.5, 0.5, 0.51, 0.52, 0.98, 0.99, 1.0, 0.0, 0.01])
    pos = figures._spread_labels(targets, 0.06)
    assert all(b - a >= 0.06 - 1e-12 for a, b in zip(pos, pos[1:], strict=False))
    assert min(pos) >= 0.0 and max(pos) <= 1.0 + 1e-12


def test_cells_never_read_negative_zero():
    from reports.cells import cell, table

    assert [cell("trace_bytes_per_step", -0.3), cell("peak_bytes_factor", -0.001),
            cell("slope", -0.004), cell("peak_bytes_factor", -1.5)] == ["0 B", "0.0×", "0.00",
                                                                       "-1.5×"]
    # constant columns are stated once, not repeated in every row
    t = table(pd.DataFrame({"backend": ["a", "b"], "dtype": ["float64"] * 2, "n": [1, 2]}),
              ["backend", "dtype", "n"])
    assert t["columns"] == ["backend", "n"] and t["constant"] == ["dtype = float64"]


def test_time_split_shows_every_series_at_the_largest_k(frame):
    gd50 = next(g for g in figure_groups.figure_groups(frame, "K") if g.value == 50)
    top = gd50.frame[gd50.frame["K"] == 1000]
    fig = figures.time_split_plot(top)
    assert _pairs(fig.data) == _pairs(top) and len(fig.data) == 22
    # the fixture's forward solve is 40 % of every gradient
    assert fig.data["forward_share"].to_numpy() == pytest.approx(0.4)
    assert not fig.data["forward_exceeds"].any()
    slow = top.assign(forward_time_s=top["time_s"] * 2)
    data = figures.time_split_plot(slow).data
    assert data["forward_exceeds"].all() and (data["forward_share"] == 1.0).all()


def test_two_dtypes_are_two_figure_groups_and_two_summary_rows():
    rows = [record("gd", "unrolled", "torch", 20, K, dtype=dtype, peak=1000 * K, trace=800 * K,
                   time=1e-4 * K) for dtype in ("float32", "float64") for K in KS]
    frame = to_frame(rows)
    groups = figure_groups.figure_groups(frame, "K")
    assert sorted(dict(g.keys)["dtype"] for g in groups) == ["float32", "float64"]
    assert all(len(g.frame) == 3 for g in groups)
    assert sorted(fit_summary.summary(frame)["dtype"]) == ["float32", "float64"]
    # the state is 20 × 4 B in float32 and 20 × 8 B in float64: 800 B of trace per step
    tape = analysis.tape_cost(frame).set_index("dtype")
    assert tape.loc["float32", "trace_bytes_factor"] == pytest.approx(10.0)
    assert tape.loc["float64", "trace_bytes_factor"] == pytest.approx(5.0)


def test_points_with_warnings_are_ringed_and_only_those():
    """A record's warnings (IFT away from a solution, …) mark its points in every K figure."""
    rows = [record("gd", b, fw, 8, K) for b in ("unrolled", "ift-cg") for fw in ("torch", "jax")
            for K in (10, 100, 1000)]
    for r in rows:
        if r["backend"] == "ift-cg" and r["K"] == 10:
            r["warnings"] = ["IFT applied away from a solution: ‖F(θ, x_K)‖ = 1.0e-01"]
    fig = figures.series_figure(to_frame(rows), "K", ("peak_bytes", "grad_error_converged"))
    ringed = fig.data[fig.data["warned"]]
    assert set(zip(ringed["backend"], ringed["framework"], ringed["K"], ringed["metric"],
                   strict=True)) == {("ift-cg", fw, 10, m) for fw in ("torch", "jax")
                                     for m in ("peak_bytes", "grad_error_converged")}
    assert "record has a warning" in fig.svg
    clean = figures.series_figure(to_frame([r for r in rows if not r["warnings"]]), "K",
                                  ("peak_bytes",))
    assert not clean.data["warned"].any() and "record has a warning" not in clean.svg
