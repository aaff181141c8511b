"""The figure of gradient error (vs the converged gradient) against the forward residual
‖F(θ, x_K)‖, on frames built by hand: each line is one series' (residual, error) points in K order,
records without a residual are left out and counted, one n per problem options (the widest K
span), the caption's words follow the points, and the problem's HTML section shows it."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from reports import figure_groups, figures, problem_sections
from reports.html import write_report
from suite import analysis
from suite.records import RECORD_FIELDS, Record, append_record

KS = (10, 100, 1000)
MOM = {"momentum": 0.9}


def residual_of(K: int, framework: str) -> float:
    # a forward that converges linearly; the frameworks differ in the last digits
    return 0.3 ** np.log2(K) * (1.0 if framework == "torch" else 1.000001)


#: error vs converged at (K, residual r): IFT ∝ r (236 % off at K = 10), unrolled below it,
#: JFB a bias the residual does not remove, an exact 0 for ift-direct at the largest K,
#: ift-gmres on top of ift-cg
ERRORS = {"unrolled": lambda K, r: 0.85 * r / residual_of(10, "torch"),
          "ift-cg": lambda K, r: 2.36 * r / residual_of(10, "torch"),
          "ift-gmres": lambda K, r: 2.36 * r / residual_of(10, "torch") * 1.01,
          "ift-direct": lambda K, r: 0.0 if K == 1000 else 2.36 * r / residual_of(10, "torch"),
          "ift-jfb": lambda K, r: 0.95}


def _record(backend: str, framework: str, n: int, K: int, *, residual: float | None,
            error: float | None, options: dict | None = None) -> Record:
    return Record(problem="gd", backend=backend, framework=framework, device="cpu",
                  dtype="float64", n=n, K=K, seed=0, options=dict(options or MOM), status="ok",
                  time_s=1e-3, forward_time_s=5e-4, peak_bytes=1000 * K, trace_bytes=800 * K,
                  grad_rel_error=1e-15, grad_error_k_step=1e-15, grad_error_converged=error,
                  grad_norm=1.0, inner_residual=residual, dim_x=n, repeats=5,
                  step_evals=K, vjp_evals=K, threads=1)


def hand_records() -> list[Record]:
    """gd at n = 50 over K = 10…1000 (four strategies, both frameworks) plus qpth, which runs
    its own solver (no residual); n = 200 only at K = 1000 (narrower K span); a second problem
    option (momentum 0) with its own K sweep at n = 20."""
    rows = []
    for fw in ("torch", "jax"):
        for backend, error in ERRORS.items():
            for K in KS:
                r = residual_of(K, fw)
                rows.append(_record(backend, fw, 50, K, residual=r, error=error(K, r)))
            rows.append(_record(backend, fw, 200, 1000, residual=1e-16, error=1e-15))
        for K in (10, 100):
            rows.append(_record("unrolled", fw, 20, K, residual=1.0 / K, error=0.1 / K,
                                options={"momentum": 0.0}))
    rows.append(_record("qpth", "torch", 50, 100, residual=None, error=3e-8))
    return rows


def to_frame(records: list[Record]) -> pd.DataFrame:
    frame = pd.DataFrame([r.to_json() for r in records], columns=list(RECORD_FIELDS))
    frame["options_str"] = frame["options"].map(
        lambda o: ",".join(f"{k}={v}" for k, v in sorted(o.items())))
    return analysis.annotate(frame)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return to_frame(hand_records())


@pytest.fixture(scope="module")
def views(frame) -> list[dict]:
    """The problem section's residual figures, drawn once."""
    return problem_sections._residual(frame)


def _caption(views: list[dict]) -> str:
    return next(v["caption"] for v in views if "momentum_0_9" in v["key"])


def _n50(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["n"] == 50) & (frame["problem_options"] == "momentum=0.9")]


def test_each_line_is_its_records_residual_and_error_in_k_order(frame, monkeypatch):
    drawn = {}
    real_svg = figures._svg

    def keep(fig):  # the matplotlib figure as drawn, before it becomes SVG text
        drawn["fig"] = fig
        return real_svg(fig)

    monkeypatch.setattr(figures, "_svg", keep)
    fig = figures.residual_figure(_n50(frame), title="gd")
    assert fig.svg is not None and "<svg" in fig.svg and "forward residual" in fig.svg
    axes = {ax.get_title().split(" — ")[0]: ax for ax in drawn["fig"].axes}
    assert set(axes) == {"torch", "jax"}
    records = _n50(frame)
    records = records[records["inner_residual"].notna()]
    for framework, ax in axes.items():
        lines = {line.get_label(): line for line in ax.get_lines()
                 if not line.get_label().startswith("_") and line.get_linestyle() == "-"}
        assert set(lines) == set(ERRORS)  # one line per strategy; qpth has no residual
        for backend, line in lines.items():
            rec = records[(records["backend"] == backend) & (records["framework"] == framework)]
            rec = rec.sort_values("K")
            x, y = line.get_data()
            assert list(x) == pytest.approx(list(rec["inner_residual"]), rel=1e-12)
            # an exact 0 is drawn at the floor, every other error as it is
            want = rec["grad_error_converged"].clip(lower=figures.ERROR_FLOOR)
            assert list(y) == pytest.approx(list(want), rel=1e-12)
            data = fig.data[(fig.data["label"] == backend) & (fig.data["framework"] == framework)]
            assert list(data["K"]) == list(rec["K"]) == list(KS)
            assert list(data["residual"]) == list(rec["inner_residual"])
            assert list(data["error"]) == list(rec["grad_error_converged"])
    floor = fig.data[fig.data["at_floor"]]
    assert set(zip(floor["backend"], floor["K"], strict=True)) == {("ift-direct", 1000)}
    assert (floor["y"] == figures.ERROR_FLOOR).all() and "error 0 or ≤ 1e-17" in fig.svg


def test_records_without_a_residual_are_left_out_and_counted(frame, views):
    data, left_out = figures.residual_data(_n50(frame))
    assert "qpth" not in set(data["backend"])
    assert list(left_out["backend"]) == ["qpth"]
    assert list(left_out["reason"]) == ["no residual"]
    assert "Left out, no residual: 1 record(s) — qpth · torch (qpth runs its own solver" \
        in _caption(views)


def test_one_figure_per_problem_option_at_the_n_of_widest_k_span(frame, views):
    groups = figure_groups.residual_groups(frame)
    picked = {dict(g.keys)["problem_options"]: (g.value, others) for g, others in groups}
    # n = 50 spans K = 10…1000, n = 200 only K = 1000; momentum 0 has its own figure at n = 20
    assert picked == {"momentum=0.9": (50, [200]), "momentum=0.0": (20, [])}
    assert len(views) == 2
    caption = _caption(views)
    assert caption.startswith("n = 50, K = 10, 100, 1000: 30 points, 5 series.")
    assert "n = 200 is not drawn here" in caption and "2 point(s) with an error ≤ 1e-17" in caption


def test_caption_says_what_the_points_show(frame, views):
    caption = _caption(views)
    falls = re.search(r"Error falls with the residual[^:]*: ([^.]*)\.", caption).group(1)
    assert falls.split(", ") == ["unrolled", "ift-direct", "ift-cg", "ift-gmres"]
    assert re.search(r"levels off[^:]*: ift-jfb at 9\.5e-01\.", caption)
    assert "238 % at K = 10: ift-gmres; 236 % at K = 10: ift-direct, ift-cg." in caption
    # within 1 %: on top of one another; ift-direct parts from them at its exact 0
    assert caption.endswith("the legend's later series is on top): ift-cg = ift-gmres.")
    # a series whose frameworks disagree is named with its framework
    data = figures.residual_data(_n50(frame))[0]
    data.loc[(data["label"] == "ift-jfb") & (data["framework"] == "jax"), "y"] = \
        data.loc[(data["label"] == "ift-jfb") & (data["framework"] == "jax"), "x"]
    notes = " ".join(problem_sections.residual_notes(data))
    assert "ift-jfb (torch) at 9.5e-01" in notes and "ift-jfb (jax)" in notes


def test_problem_section_html_shows_the_figure(tmp_path, monkeypatch):
    # the section's other figures are test_figures' business (and take seconds): none drawn
    for name in ("_group_figures", "_time_split", "_pareto"):
        monkeypatch.setattr(problem_sections, name, lambda *args: [])
    run = tmp_path / "run"
    run.mkdir()
    for record in hand_records():
        if record.n == 50 and record.options == MOM:
            append_record(run / "records.jsonl", record)
    (run / "meta.json").write_text(json.dumps({"run_id": "hand", "config": {"name": "hand"}}))
    html = write_report(run).read_text()
    section = html[html.index('<h3 id="gd-residual">'):]
    section = section[:section.index("<h3 ", 1)]
    assert "jaxopt #466" in section and "uwplasma/vmex #367" in section
    [image] = re.findall(r'<figure id="gd-n50-momentum_0_9-float64-residual"><img [^>]*'
                         r'src="data:image/svg\+xml;base64,([^"]+)"', section)
    svg = base64.b64decode(image).decode()
    assert "forward residual" in svg and "error vs converged gradient" in svg
    assert "Left out, no residual: 1 record(s)" in section
    assert 'href="#gd-residual"' in html  # linked from the section's list of figures
