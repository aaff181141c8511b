"""``ift-bench compare``: the rank test's exact p-values, the gate's rules applied run to run, the
schema version of records, and the CLI on two real runs of a tiny config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from scipy.stats import mannwhitneyu

from suite import compare, gate
from suite.cli import main
from suite.config import build_config
from suite.records import ADDED_IN, SCHEMA_VERSION, Record, read_records
from suite.rundir import load_frame
from suite.sweep import run_sweep

TINY = {"name": "tiny-compare", "problems": ["gd"], "backends": ["unrolled", "ift-cg"],
        "frameworks": ["torch", "jax"], "repeats": 5, "timeout_s": 120,
        "grid": [{"n": [8], "K": [16]}], "options": {"momentum": 0.9}}

A_TIMES = [1.00, 1.02, 0.99, 1.01, 1.03]


def _row(times: list[float] | None, **extra) -> dict:
    median = sorted(times)[len(times) // 2] if times else extra.pop("time_s", 1.0)
    return {"problem": "gd", "backend": "unrolled", "framework": "torch", "dtype": "float64",
            "n": 8, "K": 16, "options_str": "", "status": "ok", "time_s": median,
            "times_s": times, **extra}


# ---- the significance decision --------------------------------------------------------------
def test_a_threefold_slowdown_reaches_the_smallest_exact_p():
    test = compare.time_test(_row(A_TIMES), _row([3 * t for t in A_TIMES]))
    tied = compare.time_test(_row([1.0] * 5), _row([3.0] * 5))  # ties: still the exact p
    assert tied.p_slower == pytest.approx(1 / 252) and tied.verdict == "slower"
    # every B repeat above every A repeat: 1 of the C(10, 5) = 252 rank orders
    assert test.p_slower == pytest.approx(1 / 252)
    assert test.ratio == pytest.approx(3.0)
    assert test.verdict == "slower"


def test_one_inverted_pair_is_still_significant_one_sided():
    # B's fastest repeat (1.025) is below A's slowest (1.03): U = 24 of 25, p = 2/252 ≈ 0.0079
    b = [1.025, 1.30, 1.35, 1.40, 1.45]
    test = compare.time_test(_row(A_TIMES), _row(b))
    assert test.p_slower == pytest.approx(2 / 252)
    assert test.verdict == "slower"
    # the two-sided test would need all 25 pairs ordered: here it says 4/252 > 0.01
    assert mannwhitneyu(b, A_TIMES).pvalue == pytest.approx(4 / 252)


def test_a_consistent_but_small_shift_is_not_a_change():
    test = compare.time_test(_row(A_TIMES), _row([1.05 * t for t in A_TIMES]))
    assert test.p_slower == pytest.approx(1 / 252)  # significant …
    assert test.verdict == "no change"  # … but within the minimum factor 1.1


def test_a_significant_speed_up_is_faster_not_a_regression():
    test = compare.time_test(_row(A_TIMES), _row([t / 2 for t in A_TIMES]))
    assert test.p_faster == pytest.approx(1 / 252) and test.verdict == "faster"


def test_too_few_repeats_or_version_1_records_are_not_tested():
    few = compare.time_test(_row(A_TIMES[:4]), _row([3 * t for t in A_TIMES[:4]]))
    assert few.p_slower is None and "fewer than 5 repeats" in few.verdict
    # why: with 4 a side the most extreme order has p = 1/C(8, 4) = 1/70 > 0.01
    assert mannwhitneyu([3, 4, 5, 6], [0, 1, 2, 2.5], alternative="greater",
                        method="exact").pvalue == pytest.approx(1 / 70)
    old = compare.time_test(_row(None, time_s=1.0), _row(None, time_s=3.0))
    assert old.p_slower is None and "schema version 1" in old.verdict
    assert old.ratio == pytest.approx(3.0)


# ---- the gate's rules, run to run -------------------------------------------------------------
@pytest.mark.parametrize("metric, a, b, regressed", [
    ("trace_bytes", 1000, 1011, True),  # > 1 % up
    ("trace_bytes", 1000, 1009, False),
    ("hvp_evals", 20, 21, True),
    ("peak_bytes", 10_000_000, 10_600_000, True),  # 6 % > max(5 %, 64 KiB)
    ("peak_bytes", 100_000, 160_000, False),  # 60 KiB < the 64 KiB slack
    ("grad_error_converged", 1e-15, 2e-12, True),  # rounding level: above max(100 ×, 1e-12)
    ("grad_error_converged", 1e-15, 5e-13, False),
    ("grad_error_converged", 0.10, 0.12, True),  # by-design error: +20 % > +10 %
    ("grad_error_k_step", 0.10, 0.105, False),
])
def test_regressions_follow_the_gate(metric, a, b, regressed):
    cell = compare.compare_cell("c", _row(A_TIMES, **{metric: a}), _row(A_TIMES, **{metric: b}))
    assert bool(cell.regressions) is regressed
    if regressed:
        (line,) = cell.regressions
        assert line.startswith(metric)
    if metric in compare.RATIO_METRICS:
        assert cell.ratios[metric] == pytest.approx(b / a)


def test_a_deterministic_improvement_is_reported_not_failed():
    cell = compare.compare_cell("c", _row(A_TIMES, trace_bytes=1000),
                                _row(A_TIMES, trace_bytes=500))
    assert not cell.regressions and cell.improvements == ["trace_bytes: 1000 → 500 (-50.0%)"]


def test_a_point_that_stopped_working_regresses():
    cell = compare.compare_cell("c", _row(A_TIMES), _row(None, status="timeout", error="killed"))
    assert cell.regressions == ["status: ok → timeout: killed"]


# ---- records: schema version -----------------------------------------------------------------
def _identity() -> dict:
    return {"problem": "gd", "backend": "unrolled", "framework": "torch", "device": "cpu",
            "dtype": "float64", "n": 8, "K": 16, "seed": 0, "options": {}}


def test_version_1_records_migrate_with_times_missing():
    record = Record.from_json({**_identity(), "time_s": 0.5, "repeats": 5})
    assert record.schema_version == SCHEMA_VERSION == 5
    assert record.times_s is None and record.time_s == 0.5


def test_version_2_records_migrate_and_may_not_carry_version_3_fields():
    from suite.plugin.errors import UsageError

    record = Record.from_json({**_identity(), "schema_version": 2, "times_s": [0.5]})
    assert (record.schema_version, record.peer, record.node) == (SCHEMA_VERSION, None, None)
    with pytest.raises(UsageError, match="record key 'peer'"):
        Record.from_json({**_identity(), "schema_version": 2, "peer": "jaxopt 0.8.5"})


def test_version_3_records_migrate_and_may_not_carry_version_4_fields():
    from suite.plugin.errors import UsageError

    record = Record.from_json({**_identity(), "schema_version": 3, "time_ratio": 0.5})
    assert (record.schema_version, record.time_ratio, record.time_ratios) == (SCHEMA_VERSION, 0.5,
                                                                             None)
    with pytest.raises(UsageError, match="record key 'time_ratios'"):
        Record.from_json({**_identity(), "schema_version": 3, "time_ratios": [0.5]})


def test_version_4_records_migrate_and_may_not_carry_version_5_fields():
    from suite.plugin.errors import UsageError

    record = Record.from_json({**_identity(), "schema_version": 4, "time_ratio_low": 0.9})
    assert (record.schema_version, record.time_ratio_low, record.predicted_need_bytes) == (
        SCHEMA_VERSION, 0.9, None)
    with pytest.raises(UsageError, match="record key 'predicted_need_bytes'"):
        Record.from_json({**_identity(), "schema_version": 4, "predicted_need_bytes": 2**33})


@pytest.mark.parametrize("payload, field", [
    ({"schema_version": SCHEMA_VERSION + 1}, "schema_version"),
    ({"schema_version": "2"}, "schema_version"),
    ({"schema_version": True}, "schema_version"),
    ({"peak_bytes_v3": 1}, "record key 'peak_bytes_v3'"),
])
def test_unknown_versions_and_keys_fail_clearly(tmp_path, payload, field, capsys):
    from suite.plugin.errors import UsageError

    with pytest.raises(UsageError) as info:
        Record.from_json({**_identity(), **payload})
    assert str(info.value).startswith(field)
    # in a file: the error names the file and the line, and compare exits 2 on one line
    run = tmp_path / "run"
    run.mkdir()
    good = json.dumps(Record(**_identity()).to_json())
    (run / "records.jsonl").write_text(good + "\n" + json.dumps({**_identity(), **payload})
                                       + "\n")
    with pytest.raises(UsageError) as info:
        read_records(run / "records.jsonl")
    assert str(info.value).startswith(f"{run / 'records.jsonl'}:2: {field}")
    assert main(["compare", str(run), str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"records.jsonl:2: {field}" in err


# ---- the CLI on real runs -------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The tiny config measured twice, one run after the other (4 points each, R = 5)."""
    root = tmp_path_factory.mktemp("compare")
    config = build_config(TINY, name="tiny-compare")
    runs = [run_sweep(config, root, run_id=name, progress=False).run_dir for name in "ab"]
    for run in runs:
        frame = load_frame(run)
        assert set(frame["status"]) == {"ok"} and len(frame) == 4
        assert all(len(t) == 5 for t in frame["times_s"])
    return runs


def _copy_records(src: Path, dst: Path, edit=None, drop: int | None = None) -> Path:
    dst.mkdir()
    lines = (src / "records.jsonl").read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if i == drop:
            continue
        payload = json.loads(line)
        out.append(json.dumps(edit(payload) if edit else payload))
    (dst / "records.jsonl").write_text("\n".join(out) + "\n")
    shutil.copy(src / "meta.json", dst / "meta.json")
    return dst


@pytest.mark.slow
def test_two_runs_of_the_same_code(two_runs, capsys):
    run_a, run_b = two_runs
    status = main(["compare", str(run_a), str(run_b)])
    out = capsys.readouterr().out
    result = compare.compare_runs(load_frame(run_a), load_frame(run_b))
    assert len(result.cells) == 4 and not result.only_a and not result.only_b
    for cell in result.cells:
        # same seed, same code, one thread: the deterministic meters and the gradients agree
        assert cell.ratios["trace_bytes"] == 1.0
        assert cell.ratios["grad_error_k_step"] == pytest.approx(1.0, rel=1e-6)
        assert cell.ratios["grad_error_converged"] == pytest.approx(1.0, rel=1e-6)
        assert [r for r in cell.regressions if not r.startswith("time_s")] == []
        assert cell.time.tested
        assert f"{cell.time.p_slower:.3g}" in out and cell.cell in out
    # the exit status is the time verdicts' (noise on a shared machine can make one "slower":
    # that is what the test reports, never a wall-clock assertion here)
    slower = [c for c in result.cells if c.time.verdict == "slower"]
    assert status == (1 if slower else 0)
    assert ("no regression" in out) is (not slower)


@pytest.mark.slow
def test_an_injected_slowdown_is_significant(two_runs, tmp_path, capsys):
    run_a, _ = two_runs

    def slower(payload):
        # every repeat takes longer by A's slowest repeat: B's fastest is then slower than A's
        # slowest whatever A's spread (a ×3 scaling is not: on a loaded machine one A repeat
        # can be 3× another, and the rank test rightly sees overlap), and median(B)/median(A)
        # = 1 + max(A)/median(A) ≥ 2
        extra = max(payload["times_s"])
        payload["times_s"] = [t + extra for t in payload["times_s"]]
        payload["time_s"] += extra
        return payload

    run_b = _copy_records(run_a, tmp_path / "slow", slower)
    html = tmp_path / "compare.html"
    assert main(["compare", str(run_a), str(run_b), "--out", str(html)]) == 1
    out = capsys.readouterr().out
    result = compare.compare_runs(load_frame(run_a), load_frame(run_b))
    assert [c.time.verdict for c in result.cells] == ["slower"] * 4
    assert all(c.time.p_slower == pytest.approx(1 / 252) for c in result.cells)
    assert all(c.time.ratio >= 2.0 for c in result.cells)
    assert out.count("REGRESSED") == 4 + 4 + 1  # table rows, one line per finding, summary
    assert "4 of 4 common cells regressed" in out
    page = html.read_text()
    assert page.count("<tr class=\"REGRESSED\">") == 4 and "0.00397" in page


@pytest.mark.slow
def test_cells_in_one_run_only_are_listed(two_runs, tmp_path, capsys):
    run_a, _ = two_runs
    dropped = json.loads((run_a / "records.jsonl").read_text().splitlines()[1])
    run_b = _copy_records(run_a, tmp_path / "fewer", drop=1)
    assert main(["compare", str(run_a), str(run_b)]) == 0  # B is A's own records: no change
    out = capsys.readouterr().out
    key = gate.cell_key({**dropped, "options_str": ",".join(
        f"{k}={v}" for k, v in sorted(dropped["options"].items()))})
    assert f"only in A: {key}" in out and "only in B" not in out
    assert "0 of 3 common cells regressed" in out


@pytest.mark.slow
def test_version_1_runs_compare_without_a_rank_test(two_runs, tmp_path, capsys):
    run_a, _ = two_runs

    def version_1(payload):
        del payload["schema_version"]
        for names in ADDED_IN.values():
            for name in names:
                del payload[name]
        return payload

    old = _copy_records(run_a, tmp_path / "v1", version_1)
    assert main(["compare", str(old), str(run_a)]) == 0
    out = capsys.readouterr().out
    assert "4 cell(s) not tested: no per-repeat times (schema version 1)" in out


def test_html_is_escaped(tmp_path):
    a = {**_row(A_TIMES), "options_str": "note=<b>x</b>"}
    result = compare.compare_runs(pd.DataFrame([a]), pd.DataFrame([a]))
    page = compare.render_html(result, "<run-a>", "b")
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page and "&lt;run-a&gt;" in page


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(two_runs, tmp_path, capsys):
    run_a, _ = two_runs
    cases = [
        ([str(run_a), str(tmp_path / "nowhere")], "RUN_B: "),
        ([str(tmp_path), str(run_a)], "RUN_A: "),
        ([str(run_a), str(run_a), "--out", str(tmp_path / "no" / "x.html")], "--out: "),
        ([str(run_a), str(run_a), "--out", str(tmp_path)], "--out: "),
    ]
    for argv, prefix in cases:
        assert main(["compare", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"error: {prefix}" in err


@pytest.mark.slow
def test_times_are_the_repeats_in_order(two_runs):
    """``time_s`` is the median of ``times_s`` and ``time_min_s`` their minimum."""
    frame = load_frame(two_runs[0])
    for _, row in frame.iterrows():
        assert row["time_s"] == sorted(row["times_s"])[2]
        assert row["time_min_s"] == min(row["times_s"])
        assert all(t > 0 for t in row["times_s"])
