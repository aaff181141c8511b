"""End to end: the quick sweep through the CLI, then report.html rendered in headless
Chromium — every image loaded, no console errors, user input escaped, a screenshot taken."""

from __future__ import annotations

import base64
import json
import re

import pytest

from suite.cli import main
from suite.rundir import load_frame

from .browser import chromium, require_browser
from .helpers import require_ray

pytestmark = pytest.mark.slow

INJECTION = "<script>alert(1)</script><img src=x onerror=alert(2)>"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quick")
    config = tmp / "quick.toml"
    text = open("suite/configs/quick.toml").read()
    text = text.replace('description = "', f'description = "{INJECTION} ', 1)
    config.write_text(text)
    # two points at a time: this machine has two cores, and the test checks records, not time
    assert main(["run", "--config", str(config), "--results", str(tmp), "--run-id", "r1",
                 "--jobs", "2", "--report", "--no-progress"]) == 0
    return tmp / "r1"


def test_quick_sweep_records_every_point(quick_run):
    frame = load_frame(quick_run)
    from suite.config import load_config

    expected = {p.key() for p in load_config("quick").points()}
    assert set(frame["point_key"]) == expected and len(frame) == len(expected)
    assert set(frame["status"]) <= {"ok", "unsupported"}
    assert (frame["status"] == "ok").sum() >= len(expected) - 2


def test_report_is_self_contained_and_escaped(quick_run):
    html = (quick_run / "report.html").read_text()
    assert INJECTION not in html
    # "Predictions checked" only where the report was given a run to predict from
    assert 'id="predictions"' not in html and 'href="#predictions"' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not re.search(r'(src|href)="https?://', html)  # nothing fetched from the network
    images = re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', html)
    assert len(images) >= 5
    svg = base64.b64decode(images[0]).decode()
    assert "<svg" in svg and "K (inner iterations)" in svg  # labelled axes


def test_report_opens_with_the_decision_table_and_writes_its_csv(quick_run):
    import csv

    from reports.claims import CLAIMS

    html = (quick_run / "report.html").read_text()
    # the decision table and the claims come before any figure
    assert html.index('id="decision"') < html.index('id="claims"') < html.index("<figure")
    rows = list(csv.DictReader(open(quick_run / "decision.csv")))
    frame = load_frame(quick_run)
    assert len(rows) == int((frame["status"] == "ok").sum())  # one row per ok record
    assert {(r["backend"], r["framework"]) for r in rows} == set(
        zip(frame[frame["status"] == "ok"]["backend"], frame[frame["status"] == "ok"]["framework"],
            strict=True))
    for claim in CLAIMS:
        assert f'id="claim-{claim.id}"' in html


def test_report_renders_in_headless_chromium(quick_run, tmp_path):
    require_browser()
    with chromium(str(tmp_path / "profile")) as driver:
        driver.get((quick_run / "report.html").resolve().as_uri())
        state = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);")
        assert len(state) >= 5
        assert all(complete and width > 0 for complete, width in state), state
        scripts = driver.execute_script("return document.scripts.length;")
        assert scripts == 0  # the injected <script> is text, not a script
        assert "<script>alert(1)</script>" in driver.execute_script(
            "return document.body.innerText;")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_quick_report_plots_every_series_of_its_k_sweep(quick_run):
    """The quick sweep (gd, n = 8, K ∈ {10, 100}): one K figure group holding every ok
    (strategy, framework), both errors in its figures, the summary without merged rows."""
    from reports import figure_groups, figures, fit_summary
    from suite import analysis

    frame = analysis.annotate(load_frame(quick_run))
    groups = figure_groups.figure_groups(frame, "K")
    assert [(g.problem, g.value) for g in groups] == [("gd", 8)]
    ok = frame[frame["status"] == "ok"]
    fig = figures.series_figure(groups[0].frame, "K", figures.ERRORS)
    for metric in figures.ERRORS:
        shown = fig.data[fig.data["metric"] == metric]
        assert set(zip(shown["backend"], shown["framework"], strict=True)) == \
            set(zip(ok["backend"], ok["framework"], strict=True))
    html = (quick_run / "report.html").read_text()
    assert f'id="fig-{groups[0].slug()}"' in html
    assert html.count('id="fig-') == len(groups)  # no n sweep in the quick config
    summary = fit_summary.summary(frame)
    swept = ok.groupby(["backend", "framework"])["K"].nunique()
    assert len(summary) == (swept >= 2).sum()


def test_the_quick_sweep_through_ray_records_what_the_local_executor_records(quick_run,
                                                                          tmp_path):
    """The same points on a local Ray cluster (started by the CLI) give records whose
    deterministic meters equal the local executor's exactly, in both frameworks, at the quick
    config's smaller K (its larger K adds no code path, only time) for four strategies whose
    programs differ in kind — a tape, a checkpoint schedule, vectorised tangents, a Krylov
    solve (the executor does not see which strategy a point runs; the other eight cost time
    and reach no new path)."""
    require_ray()
    text = open("suite/configs/quick.toml").read()
    assert "K = [10, 100]" in text
    config = tmp_path / "quick-small-K.toml"
    strategies = ["unrolled", "checkpoint-binomial", "forward-batched", "ift-gmres"]
    backends_line = text[text.index("backends = ["):text.index("]", text.index("backends = ["))
                         + 1]
    config.write_text(text.replace("K = [10, 100]", "K = [10]")
                      .replace(backends_line, f"backends = {json.dumps(strategies)}"))
    assert main(["run", "--config", str(config), "--results", str(tmp_path),
                 "--run-id", "ray", "--executor", "ray", "--no-progress"]) == 0
    local = load_frame(quick_run).set_index("point_key")
    through_ray = load_frame(tmp_path / "ray").set_index("point_key")
    chosen = local.index[(local["K"] == 10) & local["backend"].isin(strategies)]
    assert sorted(through_ray.index) == sorted(chosen)
    assert len(through_ray) == 8  # 4 strategies × 2 frameworks
    assert (through_ray["status"] == local.loc[through_ray.index, "status"]).all()
    ok = through_ray.index[through_ray["status"] == "ok"]
    assert len(ok) == len(through_ray)
    for column in ("trace_bytes", "step_evals", "vjp_evals", "jvp_evals", "hvp_evals",
                   "solver_iters", "grad_rel_error", "grad_error_k_step", "dim_x"):
        mine, theirs = through_ray.loc[ok, column], local.loc[ok, column]
        same = (mine == theirs) | (mine.isna() & theirs.isna())
        assert same.all(), (column, list(ok[~same]))
    assert through_ray.loc[ok, "node"].notna().all()
