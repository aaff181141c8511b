"""``ift-bench advise``: predictions, budgets and rankings printed for a fixture run whose
records follow known laws; the refusal to rank far extrapolations; ``--check`` hit rates on
two fixture runs with planted misses; bad input as one line and exit 2."""

from __future__ import annotations

import json
import math

import pytest

from reports.units import format_bytes, format_seconds
from suite.cli import main
from suite.records import Record, append_record

FLOOR = 0.01 * math.sqrt(2 ** -52)  # suite.laws.rounding_floor("float64")

#: per strategy: peak, trace, time (n, K) and the gradient error (K)
LAWS = {
    "unrolled": (lambda n, K: 1000 + 8 * K * n, lambda n, K: 8 * K * n,
                 lambda n, K: 1e-6 * K * n + 1e-4 * n, lambda K: 0.5 * 0.85 ** K),
    "checkpoint-sqrt": (lambda n, K: 1000 + 8 * K ** 0.5 * n, lambda n, K: 8 * K ** 0.5 * n,
                        lambda n, K: 2e-6 * K * n + 1e-4 * n, lambda K: 0.5 * 0.85 ** K),
    "ift-cg": (lambda n, K: 5000 + 16 * n, lambda n, K: 16 * n,
               lambda n, K: 1e-6 * K * n + 1e-3 * n, lambda K: 0.3 * 0.85 ** K),
    "truncated": (lambda n, K: 3000 + 80 * n, lambda n, K: 80 * n,
                  lambda n, K: 1e-6 * K * n + 2e-4 * n, lambda K: 0.2),
}
SMALL_N, LARGE_N, KS = (10, 20, 40), (80, 160), (10, 30, 100)


def _record(backend: str, n: int, K: int, *, peak_factor: float = 1.0,
            time_factor: float = 1.0, rho: float | None = None) -> Record:
    peak, trace, time_, err = LAWS[backend]
    error = err(K) if rho is None else 0.5 * rho ** K
    return Record("gd", backend, "torch", "cpu", "float64", n, K, 0, {"momentum": 0.9},
                  status="ok", peak_bytes=int(round(peak_factor * peak(n, K))),
                  trace_bytes=int(round(trace(n, K))), time_s=time_factor * time_(n, K),
                  grad_error_converged=error, inner_residual=error / 10)


def _write(run, records) -> str:
    run.mkdir(parents=True, exist_ok=True)
    for record in records:
        append_record(run / "records.jsonl", record)
    return str(run)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("advise")
    small = _write(root / "small", [_record(b, n, K) for b in LAWS for n in SMALL_N
                                    for K in KS])
    # the large run: unrolled's peak twice its law at n = 160 (a regime change), ift-cg's time
    # three times it there, checkpoint-sqrt converging at ρ = 0.8 instead of 0.85
    large = []
    for b in LAWS:
        for n in LARGE_N:
            for K in KS:
                large.append(_record(
                    b, n, K, peak_factor=2.0 if (b, n) == ("unrolled", 160) else 1.0,
                    time_factor=3.0 if (b, n) == ("ift-cg", 160) else 1.0,
                    rho=0.8 if b == "checkpoint-sqrt" else None))
    return small, _write(root / "large", large)


def _advise(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["advise", *argv])
    out, err = capsys.readouterr()
    return status, out, err


ASK = ("--problem", "gd", "--option", "momentum=0.9", "--n", "80", "--K", "300")


def test_advice_prints_the_predictions_budgets_and_ranking(runs, capsys):
    status, out, _ = _advise(capsys, runs[0], *ASK, "--memory", "100KiB", "--tol", "1e-3")
    assert status == 0
    # the records follow the laws exactly: the predictions are the laws at n = 80, K = 300
    assert f"peak {format_bytes(1000 + 8 * 300 * 80)} " in out  # unrolled: 188 KiB
    assert f"time {format_seconds(0.024 + 0.008)} " in out  # unrolled: 32 ms
    assert f"peak {format_bytes(5000 + 16 * 80)} " in out  # ift-cg: 6.13 KiB
    assert "gradient error at K = 300: 0.2 (bias 0.2); K to reach 0.001: never (by the law)" \
        in out  # truncated
    reach = math.log(1e-3 / 0.5) / math.log(0.85)
    assert "at rounding" not in out and f"K to reach 0.001: ≈ {reach:.3g}" in out
    assert "meets: memory no, tol yes, time –; extrapolation 3× (K 3× beyond the largest " \
           "measured (K ≤ 100))" in out  # unrolled: 188 KiB > 100 KiB
    tail = out[out.index("least memory"):]
    assert tail.splitlines() == [
        "least memory within budgets:",
        f"  1. ift-cg (torch)  {format_bytes(6280)}",
        f"  2. checkpoint-sqrt (torch)  {format_bytes(1000 + 8 * 300 ** 0.5 * 80)}",
        "least time within budgets:",
        f"  1. checkpoint-sqrt (torch)  {format_seconds(0.048 + 0.008)}",
        f"  2. ift-cg (torch)  {format_seconds(0.024 + 0.08)}",
        "not ranked:",
        "  truncated (torch): misses the tol",
        "  unrolled (torch): misses the memory budget",
    ]


def test_advice_as_json_carries_the_numbers(runs, capsys):
    status, out, _ = _advise(capsys, runs[0], *ASK, "--tol", "1e-3", "--time-budget", "50ms",
                             "--residual", "1e-8", "--json")
    assert status == 0
    result = json.loads(out)
    rows = {r["backend"]: r for r in result["strategies"]}
    expect = {"unrolled": (193000, 192000, 0.032, FLOOR),
              "checkpoint-sqrt": (1000 + 8 * 300 ** 0.5 * 80, 8 * 300 ** 0.5 * 80, 0.056, FLOOR),
              "ift-cg": (6280, 1280, 0.104, FLOOR), "truncated": (9400, 6400, 0.040, 0.2)}
    for backend, (peak, trace, time_, err) in expect.items():
        p = rows[backend]["predictions"]
        # bytes are recorded as integers: the laws see them rounded
        assert p["peak_bytes"]["value"] == pytest.approx(peak, rel=1e-3), backend
        assert p["trace_bytes"]["value"] == pytest.approx(trace, rel=1e-3), backend
        assert p["time_s"]["value"] == pytest.approx(time_, rel=1e-4), backend
        assert rows[backend]["grad_error"]["value"] == pytest.approx(err, rel=1e-4), backend
        assert rows[backend]["extrapolation"] == pytest.approx(3.0)
    # unrolled's error follows its residual exactly (err = 10·residual)
    assert rows["unrolled"]["grad_error_at_residual"]["value"] == pytest.approx(1e-7, rel=1e-6)
    assert rows["unrolled"]["meets"] == {"memory": "–", "tol": "yes", "time": "yes"}
    assert rows["checkpoint-sqrt"]["meets"]["time"] == "no"  # 56 ms > 50 ms
    # 32 ms (unrolled) and 40 ms (truncated, but its error 0.2 misses the tol)
    assert [e["backend"] for e in result["ranking"]["least_time"]] == ["unrolled"]
    assert result["budgets"] == {"memory_bytes": None, "tol": 1e-3, "time_s": 0.05,
                                 "residual": 1e-8}


def test_a_request_1000_times_beyond_the_data_is_not_ranked(runs, capsys):
    status, out, _ = _advise(capsys, runs[0], "--problem", "gd", "--option", "momentum=0.9",
                             "--n", "40000", "--K", "30")
    assert status == 0
    assert "least memory within budgets: none" in out
    assert "least time within budgets: none" in out
    assert ("  ift-cg (torch): extrapolation 1000× > 100× (n 1000× beyond the largest measured "
            "(n ≤ 40)): not ranked on a guess") in out.splitlines()
    # still predicted, with the factor said
    assert f"peak {format_bytes(5000 + 16 * 40000)} " in out


def test_check_reports_the_hit_rates_and_lists_the_misses(runs, capsys):
    status, out, _ = _advise(capsys, "--check", *runs)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].endswith("24 points of 4 series")
    rates = lines[lines.index("hit rates:") + 1:lines.index("hit rates:") + 5]
    assert [" ".join(r.split()) for r in rates] == [
        "trace_bytes within 10 % 24/24 = 100.0% (target ≥ 90%: met)",
        "peak_bytes within 25 % 21/24 = 87.5% (target ≥ 80%: met)",
        "time_s within a factor 2 21/24 = 87.5% (target ≥ 80%: met)",
        "K_to_reach K to reach 1e-06 within ±30 % 4/6 = 66.7% (target ≥ 80%: missed)",
    ]
    assert "misses (8):" in lines
    assert ("  gd momentum=0.9: unrolled (torch) n=160 K=10 peak_bytes: predicted "
            f"{format_bytes(1000 + 8 * 10 * 160)}, measured {format_bytes(2 * 12800 + 2000)} "
            "(ratio 0.500, extrapolation 4×)") in lines
    # ρ = 0.8 puts K = 100's error (1e-10) at rounding: the crossing is only bracketed, in
    # (30, 58.8]; predicted 80.7 > 1.3 × 58.8 is a miss
    predicted = math.log(2e-6) / math.log(0.85)
    measured = math.log(2e-6) / math.log(0.8)
    assert (f"  gd momentum=0.9: checkpoint-sqrt (torch) n=80 K_to_reach: predicted "
            f"{predicted:.3g}, measured (30, {measured:.3g}]") in lines
    assert any(line.startswith("  gd momentum=0.9: truncated (torch)") and
               "not measurable: not reached by K = 100" in line for line in lines)


def test_check_as_json(runs, capsys):
    status, out, _ = _advise(capsys, "--check", *runs, "--json")
    assert status == 0
    result = json.loads(out)
    rates = {r["metric"]: (r["hits"], r["total"], r["met"]) for r in result["rates"]}
    assert rates == {"trace_bytes": (24, 24, True), "peak_bytes": (21, 24, True),
                     "time_s": (21, 24, True), "K_to_reach": (4, 6, False)}
    time_misses = sorted((p["n"], p["K"]) for p in result["points"]
                         if not p["hit"] and p["metric"] == "time_s")
    assert time_misses == [(160, 10), (160, 30), (160, 100)]
    ratio = next(p["ratio"] for p in result["points"]
                 if p["metric"] == "time_s" and p["backend"] == "ift-cg" and p["n"] == 160
                 and p["K"] == 10)
    assert ratio == pytest.approx(1 / 3, rel=1e-4)


@pytest.mark.parametrize("argv, prefix", [
    (["{empty}", *ASK], "RUN_DIR: "),
    (["{small}", "--problem", "qp", "--n", "8", "--K", "8"], "--problem: "),
    (["{one}", "--problem", "gd", "--option", "momentum=0.9", "--n", "8", "--K", "8"],
     "RUN_DIR: too few points to fit"),
    (["{small}", *ASK, "--memory", "12 parsecs"], "--memory: "),
    (["{small}", *ASK, "--time-budget", "soon"], "--time-budget: "),
    (["{small}", "--problem", "gd", "--K", "8"], "--n: required"),
    (["{small}", *ASK, "--option", "colour=red"], "--option: "),
    (["{small}", "--problem", "gd", "--n", "8", "--K", "8"], "--option: "),  # not measured
    (["{small}", *ASK, "--framework", "jax"], "--framework: "),
    (["{small}", "--check", "{small}", "{large}"], "RUN_DIR: given together with --check"),
    (["--check", "{small}", "{empty}"], "RUN_LARGE: "),
    (["--check", "{small}", "{other}"], "RUN_LARGE: shares no series"),
])
def test_bad_input_is_one_line_naming_the_field_and_exit_2(runs, tmp_path, capsys, argv,
                                                           prefix):
    (tmp_path / "empty").mkdir()
    one = _write(tmp_path / "one", [_record("unrolled", 10, 10)])
    other = _write(tmp_path / "other", [
        Record("gd", "unrolled", "jax", "cpu", "float64", n, 10, 0, {}, status="ok",
               peak_bytes=100 * n, trace_bytes=50 * n, time_s=1e-3 * n)
        for n in (10, 20)])
    paths = {"small": runs[0], "large": runs[1], "empty": str(tmp_path / "empty"), "one": one,
             "other": other}
    status, out, err = _advise(capsys, *(a.format(**paths) for a in argv))
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"ift-bench: error: {prefix}")


def test_the_report_of_the_large_run_shows_the_predictions_checked_from_the_small(
        runs, tmp_path):
    """``ift-bench report LARGE --predicted-from SMALL``: the same hit rates as --check, split
    by extrapolation (n = 80 and 160 are 2× and 4× beyond the fitted n ≤ 40), and the planted
    misses listed."""
    import re

    small, large = runs
    out = tmp_path / "report.html"
    assert main(["report", large, "--out", str(out), "--predicted-from", small]) == 0
    html = out.read_text()
    section = html[html.index('<h2 id="predictions">'):html.index('<h2 id="summary">')]
    rows = [re.sub(r"<[^>]+>", "|", row).strip("|").replace("||", "|")
            for row in re.findall(r"<tr>(.*?)</tr>", section)]
    assert "trace_bytes within 10 %|24/24|100%|≥ 90%|yes" in rows
    assert "peak_bytes within 25 %|21/24|88%|≥ 80%|yes" in rows
    assert "K to reach 1e-06 within ±30 %|4/6|67%|≥ 80%|no" in rows
    # the rates by extrapolation: the costs are predicted up to 4× beyond n ≤ 40; the K to
    # reach 1e-6 lies inside the fitted K
    assert "up to 4× beyond|24/24 (100%)|21/24 (88%)|21/24 (88%)|–" in rows
    assert "inside the fitted range|–|–|–|4/6 (67%)" in rows
    assert "The misses (8)" in section
    assert ("unrolled (torch)|gd (momentum=0.9)|160|10|peak_bytes|"
            f"{format_bytes(1000 + 8 * 10 * 160)}|{format_bytes(2 * 12800 + 2000)}|0.50|4×"
            ) in rows
    assert 'href="#predictions"' in html  # (without --predicted-from: tests/test_report.py)


def test_a_law_fitted_at_one_n_says_its_growth_in_n_is_assumed(tmp_path, capsys):
    """A run with one n cannot measure how the costs grow in n: advise predicts with the
    theory's exponent and says so beside the prediction (not at the measured n)."""
    run = _write(tmp_path / "one-n", [_record("ift-cg", 20, K) for K in KS])
    status, out, _ = _advise(capsys, run, "--problem", "gd", "--option", "momentum=0.9",
                             "--n", "200", "--K", "30")
    assert status == 0
    assert ("    exponent in n assumed from theory, not measured (one n in the run): "
            "trace_bytes, peak_bytes, time_s") in out.splitlines()
    # ift-cg's memory is linear in n by its theory: 10× the n, 10× the state-sized trace
    trace = LAWS["ift-cg"][1]
    assert f"trace {format_bytes(10 * trace(20, 30))}" in out
    status, out, _ = _advise(capsys, run, "--problem", "gd", "--option", "momentum=0.9",
                             "--n", "20", "--K", "30")
    assert "exponent in n assumed" not in out
