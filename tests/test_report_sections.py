"""The report's own sections on a run directory built by hand: the decision table (first, and as
CSV), the claims, exact counts, diagnostics, warnings grouped by kind, failures with their
status and reason (escaped), and the configuration as a table."""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser

import pytest

from reports.html import write_report
from suite.records import Record, append_record

INJECTION = "<img src=x onerror=alert(1)>"


class _Tables(HTMLParser):
    """Every table's rows as lists of cell texts, keyed by the id of the last <h2>/<h3>."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.headings: list[str] = []
        self._section = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("h2", "h3") and "id" in attrs:
            self._section = attrs["id"]
            self.headings.append(attrs["id"])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables.setdefault(self._section, []).append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _ok(backend: str, framework: str, K: int, **fields) -> Record:
    base = dict(problem="gd", backend=backend, framework=framework, device="cpu",
                dtype="float64", n=8, K=K, seed=0, options={"momentum": 0.9}, status="ok",
                time_s=1e-3 * K, forward_time_s=5e-4 * K, peak_bytes=1000 * K,
                trace_bytes=800 * K, grad_rel_error=1e-15, reference="k_step",
                grad_error_k_step=1e-15, grad_error_converged=1e-15 if K >= 100 else 0.3,
                grad_norm=0.1, step_evals=K, vjp_evals=K, dim_theta=8, dim_x=8, threads=1,
                options_resolved={"momentum": 0.9})
    base.update(fields)
    return Record(**base)


FAILURES = {  # status -> reason, each with markup that must come out as text
    "error": f"RuntimeError: boom {INJECTION}",
    "timeout": "timed out after 300 s",
    "oom": "memory cap 8 GiB exceeded <b>bold</b>",
    "skipped": "skipped: a smaller K of this series hit oom",
    "unsupported": "ift-cg needs a symmetric ∂F/∂x; softmax's is not & never will be",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "hand"
    run.mkdir()
    path = run / "records.jsonl"
    for fw in ("torch", "jax"):
        for K in (10, 100):
            append_record(path, _ok("unrolled", fw, K))
            append_record(path, _ok(
                "ift-cg", fw, K, peak_bytes=5000, trace_bytes=0, time_s=0.01,
                reference="converged", grad_error_converged=1e-9 if K == 100 else 0.5,
                grad_error_k_step=1e-3, step_evals=K, vjp_evals=7, hvp_evals=6, solver_iters=6,
                inner_residual=1e-3 / K, solver_converged=True,
                diagnostics={"adjoint_rel_error": 2e-11, "jacobian_cond": 17.5},
                warnings=[f"IFT applied away from a solution: ‖F(θ, x_K)‖ = {1e-3 / K:.2e} "
                          f"({0.1 / K:.1e} of ‖F(θ, x_0)‖)"]))
    append_record(path, _ok("reversible", "torch", 100, diagnostics={
        "buffer_bits_per_iteration": 0.153, "buffer_bits_theory": 0.152,
        "buffer_capacity_bytes": 4096, "reconstruction_exact": True}))
    for K, (status, reason) in enumerate(FAILURES.items(), start=1000):
        append_record(path, Record(problem="gd", backend="ift-direct", framework="torch",
                                   device="cpu", dtype="float64", n=8, K=K, seed=0,
                                   options={"momentum": 0.9}, status=status, error=reason))
    config = {"name": "hand", "description": "γ = 0.9 by hand", "problems": ["gd"],
              "backends": ["unrolled", "ift-cg"], "frameworks": ["torch", "jax"],
              "options": {"momentum": 0.9}, "settings": {"repeats": 5, "threads": 1},
              "grids": [{"n": [8], "K": [10, 100], "problems": ["gd"], "backends": None,
                         "frameworks": None, "dtypes": None, "options": {"momentum": 0.9}}]}
    (run / "meta.json").write_text(json.dumps({"run_id": "hand", "config": config,
                                               "started_at": "2026-11-28T13:00:00+00:00"}))
    out = write_report(run)
    html = out.read_text()
    parser = _Tables()
    parser.feed(html)
    return {"html": html, "tables": parser.tables, "headings": parser.headings, "run": run}


def test_failures_list_each_status_with_its_reason_escaped(report):
    rows = report["tables"]["failures"]
    assert rows[0] == ["point", "status", "reason"]
    by_status = {row[1]: row for row in rows[1:]}
    assert set(by_status) == set(FAILURES)
    for status, reason in FAILURES.items():
        assert by_status[status][2] == reason  # the text, exactly, markup included as text
        assert f"K={list(FAILURES).index(status) + 1000}" in by_status[status][0]
    html = report["html"]
    assert INJECTION not in html and "<b>bold</b>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;b&gt;bold&lt;/b&gt;" in html


def test_decision_table_comes_first_and_is_written_as_csv(report):
    headings = report["headings"]
    assert headings[0] == "decision" and headings[1] == "decision-gd"
    answers, K = {}, None
    for row in report["tables"]["decision-gd"][1:]:
        if row[0] == "strategy":  # the full table starts: the answers are over
            break
        if len(row) == 7:  # the first framework of a point: the point and K cells span its rows
            K, row = row[1], row[2:]
        answers[(K, row[0])] = [None, K, *row]
    assert len(answers) == 4
    # K = 100, torch: ift-cg is lighter (4.88 KiB against 97.7 KiB) and within 1e-6
    torch100 = answers[("100", "torch")]
    assert torch100[3].startswith("◆ ift-cg") and torch100[5].startswith("✔ ift-cg")
    assert torch100[4].startswith("▲ ift-cg")  # 10 ms against unrolled's 100 ms
    assert torch100[6].startswith("★ ift-cg")
    # K = 10: ift-cg is 50 % off and unrolled 30 % off: nothing is within 1e-6
    assert answers[("10", "jax")][5] == "none within 1e-6"
    assert answers[("10", "jax")][4].startswith("▲ unrolled / ift-cg")  # 10 ms each: a tie
    rows = list(csv.DictReader(open(report["run"] / "decision.csv")))
    assert len(rows) == 9  # the 9 ok records, one row each
    marked = {(r["backend"], r["framework"], r["K"]) for r in rows
              if r["least_memory_accurate"] == "True"}
    assert marked == {("ift-cg", "torch", "100"), ("ift-cg", "jax", "100")}
    assert 'href="decision.csv"' in report["html"]


def test_claims_section_gives_every_claim_a_verdict(report):
    from reports.claims import CLAIMS, VERDICTS

    rows = report["tables"]["claims"][1:]
    assert len(rows) == len(CLAIMS)
    assert all(row[2] in VERDICTS for row in rows)
    verdict = {row[0].split(" ")[0]: row[2] for row in rows}
    assert verdict["Reverse"] == "confirmed"  # peak ∝ K for unrolled, flat for ift-cg
    assert 'id="claim-binomial-recompute"' in report["html"]
    # every claim links to a figure or table that exists in this report
    ids = set(re.findall(r'id="([^"]+)"', report["html"]))
    links = re.findall(r'<a href="#([^"]+)">see the (?:figure|table)</a>', report["html"])
    assert len(links) == len(CLAIMS) and set(links) <= ids, set(links) - ids
    # the memory claim points at the peak-memory figure of gd at n = 8
    assert any(link.startswith("gd-n8") and link.endswith("-peak") for link in links)


def test_counts_and_diagnostics_tables_carry_the_exact_values(report):
    counts = report["tables"]["counts"]
    header = counts[0]
    assert "problem options" not in header and "dtype" not in header  # constant: said once
    rows = [dict(zip(header, row, strict=True)) for row in counts[1:]]
    cg = [r for r in rows if r["backend"] == "ift-cg"]
    # torch and JAX counted the same: one row each K, both frameworks named
    assert [(r["K"], r["framework"], r["vjp_evals"], r["hvp_evals"], r["solver_iters"])
            for r in cg] == [("10", "torch, jax", "7", "6", "6"),
                             ("100", "torch, jax", "7", "6", "6")]
    assert {r["hvp_evals"] for r in rows if r["backend"] == "unrolled"} == {"–"}
    assert sum(r["backend"] == "unrolled" for r in rows) == 2
    diag = report["tables"]["diagnostics"]
    ift_header = diag[0]
    assert "adjoint_rel_error" in ift_header and "jacobian_cond" in ift_header
    first = dict(zip(ift_header, diag[1], strict=True))
    assert first["adjoint_rel_error"] == "2.00e-11" and first["jacobian_cond"] == "1.75e+01"
    rev = next(row for row in diag if "buffer_bits_per_iteration" in row)
    rev_row = dict(zip(rev, diag[diag.index(rev) + 1], strict=True))
    assert rev_row["buffer_bits_per_iteration"] == "0.153"
    assert rev_row["reconstruction_exact"] == "yes"


def test_warnings_are_grouped_by_kind(report):
    rows = report["tables"]["warnings"]
    assert rows[0] == ["kind", "records", "points"]
    assert len(rows) == 2  # four records, one kind: the numbers differ, the text does not
    assert rows[1][0].startswith("IFT applied away from a solution: ‖F(θ, x_K)‖ = # (# of "
                                 "‖F(θ, x_0)‖)")  # x_0 is a name, not a number
    assert rows[1][1] == "4"
    assert "gd momentum=0.9 ift-cg torch n=8: K = 10, 100" in rows[1][2]


def test_configuration_is_a_readable_table(report):
    rows = {row[0]: row[1:] for row in report["tables"]["configuration"]}
    assert rows["description"] == ["γ = 0.9 by hand"]
    assert rows["backends"] == ["unrolled, ift-cg"]
    assert rows["settings: repeats"] == ["5"]
    assert rows["1"] == ["gd", "all", "all", "all", "8", "10, 100", "momentum = 0.9"]
    assert "\\u03b3" not in report["html"]


def test_a_run_without_successful_points_still_reports_its_failures(tmp_path):
    append_record(tmp_path / "records.jsonl", Record(
        problem="gd", backend="unrolled", framework="torch", device="cpu", dtype="float64",
        n=8, K=10, seed=0, options={}, status="oom", error="over the cap"))
    html = write_report(tmp_path).read_text()
    parser = _Tables()
    parser.feed(html)
    assert parser.tables["failures"][1][1:] == ["oom", "over the cap"]
    assert {row[2] for row in parser.tables["claims"][1:]} == {"not measured in this run"}
    assert (tmp_path / "decision.csv").read_text().startswith("problem,problem_options,")


def test_theory_table_travels_inside_the_report(report):
    """The report embeds docs/theory.md (no link to a file on the machine that wrote it): one
    row per registered strategy, with the memory-in-K band the exponent fits are judged by."""
    import backends

    def band(lo_hi: tuple[float, float]) -> str:
        lo, hi = lo_hi
        return f"{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"

    rows = {r[0]: r for r in report["tables"]["theory"] if r and r[0] in backends.registry()}
    assert set(rows) == set(backends.registry())
    header = next(r for r in report["tables"]["theory"] if r[0] == "strategy")
    col = header.index("memory in K")
    for name, strategy in backends.registry().items():
        assert rows[name][col] == band(strategy.theory.memory_K), name
    assert "file://" not in report["html"]
    assert 'href="#theory"' in report["html"]


def test_a_run_measured_on_two_nodes_says_which_measured_what(report, tmp_path):
    """A Ray sweep's records name their node; with more than one, the report lists each
    node's points by status. One node (the hand-made run above): no such table."""
    assert "nodes" not in report["tables"]
    run = tmp_path / "two-nodes"
    run.mkdir()
    for fw, node in (("torch", "node-a"), ("jax", "node-b")):
        for K in (10, 100):
            append_record(run / "records.jsonl", _ok("unrolled", fw, K, node=node))
    append_record(run / "records.jsonl", Record(
        problem="gd", backend="ift-cg", framework="jax", device="cpu", dtype="float64", n=8,
        K=10, seed=0, options={"momentum": 0.9}, status="error", error="lost", node="node-b"))
    parser = _Tables()
    parser.feed(write_report(run).read_text())
    assert parser.tables["nodes"] == [
        ["node", "points", "ok", "not ok", "problems", "frameworks"],
        ["node-a", "2", "2", "0", "gd", "torch"],
        ["node-b", "3", "2", "1", "gd", "jax"]]


def test_where_the_sweeps_time_went_sums_each_phase_of_the_records(report, tmp_path):
    """The harness table adds up each record's phases_s per framework and in all, and gives
    the median per point of everything but the timed repeats. Records without phases (the
    hand-made run above): no such table."""
    assert "harness" not in report["tables"]
    run = tmp_path / "phased"
    run.mkdir()
    phases = {  # (framework, K) -> phases_s
        ("torch", 10): {"start": 0.5, "prepare": 0.1, "first_call": 0.2, "timed": 1.0,
                        "peak": 0.3, "trace": 0.2},
        ("torch", 100): {"start": 0.1, "prepare": 0.1, "first_call": 0.4, "timed": 4.0,
                         "peak": 0.9, "trace": 0.5},
        ("jax", 10): {"start": 0.1, "prepare": 0.1, "first_call": 1.5, "timed": 0.1,
                      "peak": 0.2, "counting": 0.7},
        ("jax", 100): {"start": 0.1, "prepare": 0.1, "first_call": 2.5, "timed": 0.2,
                       "peak": 0.2, "counting": 1.1},
    }
    for (fw, K), p in phases.items():
        append_record(run / "records.jsonl", _ok("unrolled", fw, K, phases_s=p))
    append_record(run / "records.jsonl", Record(  # a failure has no phases: not counted
        problem="gd", backend="ift-cg", framework="jax", device="cpu", dtype="float64", n=8,
        K=10, seed=0, options={"momentum": 0.9}, status="error", error="boom"))
    parser = _Tables()
    parser.feed(write_report(run).read_text())
    header, *rows = parser.tables["harness"]
    table = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert [row[0] for row in rows] == ["jax", "torch", "all"]
    for name, keys in (("jax", [k for k in phases if k[0] == "jax"]),
                       ("torch", [k for k in phases if k[0] == "torch"]), ("all", list(phases))):
        row = table[name]
        assert int(row["points"]) == len(keys)
        for phase in ("start", "first_call", "timed", "peak", "counting", "trace"):
            assert float(row[phase]) == pytest.approx(
                sum(phases[k].get(phase, 0.0) for k in keys), abs=0.05)
        overheads = sorted(sum(phases[k].values()) - phases[k]["timed"] for k in keys)
        median = (overheads[(len(overheads) - 1) // 2] + overheads[len(overheads) // 2]) / 2
        assert float(row["overhead per point (median)"]) == pytest.approx(median, abs=0.005)
