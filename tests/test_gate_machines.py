"""The gate on any machine: fingerprints, per-machine time baselines, and the paired path that
measures the baseline's commit beside the current code when the machine has no time baseline.

The paired path is exercised for real: a git repository made from this checkout, a commit that
makes ``ift-cg`` wait 50 ms per adjoint solve (a time-only regression: every deterministic meter
is unchanged), and ``ift-bench gate`` run in it on a machine with no time baseline. It fails on
exactly that cell, and the unchanged strategy beside it passes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from suite import fingerprint as fp
from suite import gate, gate_sweep
from suite.cli import main
from suite.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]

INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8488C
stepping\t: 8
flags\t\t: fpu sse4_2 avx f16c fma avx2 avx512f avx512bw amx_tile amx_int8 avx_vnni erms

processor\t: 1
"""
AMD = """vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu sse4_2 avx f16c fma avx2 avx512f avx512_vnni sha_ni
"""
VERSIONS = {"python": "3.11.7", "torch": "2.13.0+cpu", "jax": "0.10.2", "jaxlib": "0.10.2"}


# ---- fingerprints ---------------------------------------------------------------------------
def test_fingerprint_reads_the_cpu_its_vector_units_cores_and_versions():
    intel = fp.machine_fingerprint(INTEL, VERSIONS, cores=2)
    assert (intel["cpu_vendor"], intel["cpu_model"], intel["cpu_family"],
            intel["cpu_model_number"], intel["cpu_stepping"]) == (
        "GenuineIntel", "Intel(R) Xeon(R) Platinum 8488C", "6", "143", "8")
    assert intel["isa"] == ["amx_int8", "amx_tile", "avx", "avx2", "avx512bw", "avx512f",
                            "avx_vnni", "f16c", "fma", "sse4_2"]
    assert intel["physical_cores"] == 2 and intel["versions"] == VERSIONS
    assert intel["slug"].startswith("intel-xeon-platinum-8488c-2c-")
    amd = fp.machine_fingerprint(AMD, VERSIONS, cores=2)
    assert amd["isa"] == ["avx", "avx2", "avx512_vnni", "avx512f", "f16c", "fma", "sse4_2"]
    assert amd["slug"].startswith("amd-epyc-2c-")


@pytest.mark.parametrize("change", ["cpu", "cores", "isa", "jaxlib"])
def test_any_difference_is_another_machine(change):
    base = fp.machine_fingerprint(AMD, VERSIONS, cores=2)
    other = {
        "cpu": lambda: fp.machine_fingerprint(INTEL, VERSIONS, cores=2),
        "cores": lambda: fp.machine_fingerprint(AMD, VERSIONS, cores=1),
        "isa": lambda: fp.machine_fingerprint(AMD.replace(" avx512f avx512_vnni", ""),
                                              VERSIONS, cores=2),
        "jaxlib": lambda: fp.machine_fingerprint(AMD, {**VERSIONS, "jaxlib": "0.10.3"},
                                                 cores=2),
    }[change]()
    assert other["slug"] != base["slug"]
    assert fp.machine_fingerprint(AMD, VERSIONS, cores=2)["slug"] == base["slug"]  # stable


def test_the_cores_are_those_this_process_may_use():
    allowed = len(os.sched_getaffinity(0))
    assert 1 <= fp.physical_cores_available() <= allowed
    out = subprocess.run(["taskset", "-c", str(min(os.sched_getaffinity(0))), sys.executable,
                          "-c", "from suite.fingerprint import physical_cores_available as f;"
                          "print(f())"], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "1"


# ---- which path the gate takes --------------------------------------------------------------
def test_a_machine_with_its_own_time_baseline_is_judged_against_it(tmp_path):
    machine = fp.machine_fingerprint(AMD, VERSIONS, cores=2)
    gate_path = gate.time_baseline_path(machine, tmp_path)
    gate_path.write_text(json.dumps({"commit": "abc", "cells": {}}))
    plan = gate_sweep.plan(machine, {"commit": "abc"}, tmp_path)
    assert (plan.method, plan.time_file) == ("same-machine", gate_path)
    # a faked fingerprint (another CPU; one core of the same CPU): the paired path
    for other in (fp.machine_fingerprint(INTEL, VERSIONS, cores=2),
                  fp.machine_fingerprint(AMD, VERSIONS, cores=1)):
        plan = gate_sweep.plan(other, {"commit": "abc"}, tmp_path)
        assert (plan.method, plan.commit) == ("paired", "abc")
    plan = gate_sweep.plan(fp.machine_fingerprint(INTEL, VERSIONS, cores=2), {}, tmp_path)
    assert plan.method == "not judged" and "records no commit" in plan.reason


def test_the_committed_baseline_is_machine_independent_with_a_commit():
    committed = gate.load_baseline(gate.DEFAULT_BASELINE)
    assert all("time_ratio" not in cell for cell in committed["cells"].values())
    assert len(committed["commit"]) == 40 and committed["measured_on"]["slug"]
    times = sorted(gate.DEFAULT_TIME_DIR.glob("*.json"))
    assert times, "at least one machine's time baseline is committed"
    for path in times:
        payload = json.loads(path.read_text())
        assert path.stem == payload["fingerprint"]["slug"] == fp.slug(payload["fingerprint"])
        assert set(payload["cells"]) <= set(committed["cells"])
        assert all(len(c["time_ratios"] or []) >= gate.MIN_SAMPLES
                   for k, c in payload["cells"].items() if "/unrolled/" not in k)


def test_an_unavailable_base_commit_says_why(tmp_path):
    with pytest.raises(gate_sweep.BaseUnavailable, match="not in this checkout's history"):
        gate_sweep.extract_commit("0" * 40, tmp_path / "tree", ROOT)
    with pytest.raises(gate_sweep.BaseUnavailable, match="is not a git checkout"):
        gate_sweep.extract_commit("0" * 40, tmp_path / "tree2", tmp_path)


# ---- the time rule --------------------------------------------------------------------------
def _ref(ratios, method="paired"):
    return gate.TimeReference(method, "x", "abc", {"c": {
        "time_ratio": float(pd.Series(ratios).median()), "time_ratios": ratios}})


SAMPLES = [0.50 + 0.01 * (i % 7) for i in range(21)]  # median 0.53, spread ±6 %


@pytest.mark.parametrize("factor, fails", [(1.0, False), (1.2, False), (1.4, True), (2.0, True)])
def test_time_fails_only_on_a_significant_slowdown_beyond_25_percent(factor, fails):
    now = [s * factor for s in SAMPLES]
    row = {"time_ratio": float(pd.Series(now).median()), "time_ratios": now}
    finding = gate.time_finding("c", _ref(SAMPLES).cells["c"], row, _ref(SAMPLES))
    assert (finding is not None) is fails
    if fails:
        assert "Mann–Whitney p = " in finding.rule and "base commit" in finding.rule


def test_process_ranges_are_each_cells_largest_ratio_over_its_smallest():
    """Three runs of one sweep: a cell read 0.12, 0.46, 0.13 (×3.83); one timed in a single
    run has no range; a failed point and a missing ratio count for nothing."""
    def run(*cells):
        return pd.DataFrame([{"problem": "savi", "backend": b, "framework": "jax",
                              "dtype": "float64", "n": 2, "K": 128, "options_str": "",
                              "status": status, "time_ratio": ratio}
                             for b, status, ratio in cells])
    frames = [run(("ift-cg", "ok", 0.12), ("ift-direct", "ok", 0.5)),
              run(("ift-cg", "ok", 0.46), ("ift-direct", "error", 9.0)),
              run(("ift-cg", "ok", 0.13), ("ift-direct", "ok", None))]
    ranges = gate.process_ranges(frames)
    assert ranges == {"savi/ift-cg/jax/float64/n=2/K=128": pytest.approx(0.46 / 0.12)}
    baseline = {"cells": {"a": {"time_process_range": 3.833}, "b": {"time_process_range": 1.1},
                          "c": {}}}
    assert gate.describe_ranges(baseline, 3) == "time: 3 processes per cell; ratio ranges " \
                                                "beyond 25%: a ×3.83"
    assert "no process ranges" in gate.describe_ranges(baseline, 1)


def test_a_ratio_within_the_references_process_range_passes_and_beyond_it_fails():
    """The reference read 0.12 in this process, but its processes ranged over ×3.8 (0.12 or
    0.46): 0.46 now, every block above every block before, is one of its modes; 0.46 × 1.4
    is not."""
    base = [0.12 + 0.001 * i for i in range(11)]
    for now_ratio, fails in ((0.46, False), (0.46 * 1.4, True)):
        now = [now_ratio + 0.001 * i for i in range(11)]
        row = {"time_ratio": float(pd.Series(now).median()), "time_ratios": now}
        cell = {**_ref(base).cells["c"], "time_process_range": 3.8}
        finding = gate.time_finding("c", cell, row, _ref(base))
        assert (finding is not None) is fails
        # without the range, both are failures
        assert gate.time_finding("c", _ref(base).cells["c"], row, _ref(base)) is not None


def _finding_at(now: float) -> gate.GateResult:
    """A gate result whose one failure is cell c's time ratio ``now`` against a reference of
    0.5 (blocks 0.50–0.56), no spread."""
    result = gate.GateResult(time_reference=_ref(SAMPLES))
    row = {"time_ratio": now, "time_ratios": [now] * 11}
    finding = gate.time_finding("c", _ref(SAMPLES).cells["c"], row, _ref(SAMPLES))
    assert finding is not None
    result.failures.append(finding)
    return result


def _again(*ratios):
    """One re-measured frame per ratio (None: the cell's point failed there)."""
    return [pd.DataFrame([{"problem": "x", "backend": "y", "framework": "z", "dtype": "d",
                           "n": 1, "K": 1, "options_str": "", "status": "ok" if r else "error",
                           "time_ratio": r, "time_ratios": [r or 0.0] * 11}])
            for r in ratios]


@pytest.mark.parametrize("again, cleared", [
    ((1.2, 0.54), True),     # a fresh process reads the reference's own ratio: a mode
    ((1.2, 1.25), False),    # both fresh processes fail too: a regression
    ((None, 1.2), False),    # a point that failed confirms nothing away
])
def test_a_time_finding_stands_only_if_every_fresh_process_fails_too(again, cleared):
    result = _finding_at(1.2)
    key = "x/y/z/d/n=1/K=1"
    result.failures[0].cell = key
    result.time_reference.cells[key] = result.time_reference.cells.pop("c")
    gate.clear_unconfirmed(result, {"cells": {}}, _again(*again))
    assert (result.failures == []) is cleared
    assert len(result.time_cleared) == int(cleared)
    if cleared:
        assert result.time_cleared[0].rule == ("not confirmed: 1.2 in the gate's process, "
                                               "1.2, 0.54 in fresh processes — a mode of the "
                                               "cell, not a regression")
        assert result.passed
        assert "time finding cleared: x/y/z/d/n=1/K=1" in gate.render(result)


def test_a_median_beyond_25_percent_that_the_spread_explains_passes():
    """Noisy samples whose median moved 30 % but whose ranks interleave: not significant."""
    base = [1.0, 0.4, 1.6, 0.5, 1.5, 0.6, 1.4]
    now = [1.3, 0.5, 1.7, 0.45, 1.6, 0.55, 1.5]
    assert pd.Series(now).median() / pd.Series(base).median() == pytest.approx(1.3)
    row = {"time_ratio": 1.3, "time_ratios": now}
    assert gate.slower_p(now, base) > gate.SIGNIFICANCE
    assert gate.time_finding("c", _ref(base).cells["c"], row, _ref(base)) is None
    # without samples on one side the tripwire alone decides
    assert gate.time_finding("c", {"time_ratio": 1.0}, row, _ref(base)) is not None


# ---- the paired path, for real ---------------------------------------------------------------
MINI = """name = "paired"
problems = ["gd"]
backends = ["unrolled", "ift-cg", "truncated"]
frameworks = ["torch"]
dtypes = ["float64"]
repeats = 5
timeout_s = 120
threads = 1
pair_with = "unrolled"
[[grid]]
n = [12]
K = [32]
[options]
momentum = 0.9
"""
SLOWER_CG = """

_conjugate_gradient = conjugate_gradient


def conjugate_gradient(*args, **kwargs):  # the injected regression: 50 ms more per solve
    import time

    time.sleep(0.05)
    return _conjugate_gradient(*args, **kwargs)
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t",
                           *args], capture_output=True, text=True, check=True).stdout.strip()


def _copy_of_this_checkout(dst: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True,
                            check=True).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        src = ROOT / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)


@pytest.mark.slow
def test_paired_path_fails_a_time_only_regression_and_passes_unchanged_code(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_of_this_checkout(repo)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")
    base = _git(repo, "rev-parse", "HEAD")
    solvers = repo / "backends" / "linear_solvers.py"
    solvers.write_text(solvers.read_text() + SLOWER_CG)
    _git(repo, "commit", "-q", "-am", "slower CG")

    (tmp_path / "paired.toml").write_text(MINI)
    committed = gate.load_baseline(gate.DEFAULT_BASELINE)
    cells = {f"gd/{b}/torch/float64/n=12/K=32/momentum=0.9"
             for b in ("unrolled", "ift-cg", "truncated")}
    baseline = {**committed, "commit": base,
                "cells": {k: committed["cells"][k] for k in sorted(cells)}}
    (tmp_path / "baseline.json").write_text(json.dumps(baseline))
    (tmp_path / "time").mkdir()  # no machine has a time baseline here: the paired path

    log = tmp_path / "timed-sections.log"
    env = {**os.environ, "PYTHONPATH": str(repo), "IFT_BENCH_TIMING_LOG": str(log)}
    out = subprocess.run(
        [sys.executable, "-m", "suite", "gate", "--config", str(tmp_path / "paired.toml"),
         "--baseline", str(tmp_path / "baseline.json"), "--time-dir", str(tmp_path / "time"),
         "--results", "results", "--no-progress"],  # relative: the base runs elsewhere
        cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"measuring the baseline's commit {base[:12]}" in out.stdout
    assert "time: paired: the baseline's commit" in out.stdout
    runs = sorted((repo / "results").iterdir())
    (run_dir,) = [p for p in runs if "-confirm-" not in p.name]
    # the finding was measured again in two fresh processes, and both confirmed it
    assert [p.name for p in runs if "-confirm-" in p.name] == [
        f"{run_dir.name}-confirm-1", f"{run_dir.name}-confirm-2"]
    findings = json.loads((run_dir / "gate.json").read_text())
    assert findings["time_cleared"] == []
    assert findings["time"]["method"] == "paired" and findings["time"]["commit"] == base
    assert findings["time"]["judged_cells"] == 2  # unrolled is paired with itself
    assert [(f["cell"], f["metric"]) for f in findings["failures"]] == [
        ("gd/ift-cg/torch/float64/n=12/K=32/momentum=0.9", "time_ratio")]
    (failure,) = findings["failures"]
    assert failure["now"] >= 2 * failure["baseline"]  # 50 ms on a solve of a few milliseconds
    # both sweeps measured every cell; their timed sections never overlapped in time
    base_frame = pd.read_json(run_dir / "base" / "records.jsonl", lines=True)
    assert sorted(base_frame["backend"]) == ["ift-cg", "truncated", "unrolled"]
    assert set(base_frame["status"]) == {"ok"}
    sections = sorted(tuple(map(float, line.split()[1:]))
                      for line in log.read_text().splitlines())
    assert len(sections) == 8  # three points of each tree, then the failing cell twice more
    assert all(end <= start for (_, end), (start, _) in zip(sections[:-1], sections[1:],
                                                            strict=True))
    assert not (run_dir / RunDir.BASE_TREE).exists()  # the base's source is cleaned up
    # the same pair judged again from the run directory, without measuring
    again = subprocess.run(
        [sys.executable, "-m", "suite", "gate", "--run", str(run_dir), "--config",
         str(tmp_path / "paired.toml"), "--baseline", str(tmp_path / "baseline.json"),
         "--time-dir", str(tmp_path / "time"), "--json", str(tmp_path / "again.json")],
        cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1
    assert json.loads((tmp_path / "again.json").read_text())["failures"] == findings["failures"]


# ---- the run's own spread: two processes of the same code differ by more than their blocks say
def _judged(ratios_now, ratios_then) -> gate.GateResult:
    """The time rule over cells whose every block of "now" lies above every block of "then"
    (the rank test's p as small as 11 blocks a side allow)."""
    timed = []
    for i, (now, then) in enumerate(zip(ratios_now, ratios_then, strict=True)):
        row = {"time_ratio": now, "time_ratios": [now * (1 + 0.001 * j) for j in range(11)]}
        base = {"time_ratio": then, "time_ratios": [then * (1 - 0.001 * j) for j in range(11)]}
        timed.append((f"gd/s{i}/torch/float64/n=12/K=32", base, row))
    result = gate.GateResult()
    gate.judge_time(result, timed, gate.TimeReference("paired", "x", "abc", {}))
    return result


@pytest.mark.parametrize("outlier, fails", [(1.30, False), (2.0, True)])
def test_a_cell_fails_only_beyond_the_spread_of_the_runs_other_cells(outlier, fails):
    """20 cells whose ratios scatter by a few % between the two processes, and one cell
    `outlier` × slower: +30 % with all 11 blocks above (p = 1/C(22, 11)) is within the heavy
    tail two processes of unchanged code showed here; 2× is not."""
    scatter = [1.0, 1.03, 0.97, 1.05, 0.95, 1.02, 0.98, 1.04, 0.96, 1.01] * 2
    result = _judged([*scatter, outlier], [1.0] * 21)
    assert result.time_cells == 21 and result.time_spread is not None
    time_failures = [f for f in result.failures if f.metric.startswith("time_ratio")]
    assert [f.cell for f in time_failures] == (["gd/s20/torch/float64/n=12/K=32"] if fails
                                               else [])
    if fails:
        assert "σ beyond the run's other cells" in time_failures[0].rule


def test_every_cell_slower_fails_as_a_whole():
    scatter = [1.0, 1.03, 0.97, 1.05, 0.95, 1.02, 0.98, 1.04, 0.96, 1.01]
    result = _judged([1.5 * r for r in scatter], [1.0] * 10)
    (whole,) = [f for f in result.failures if f.metric == "time_ratio (median over cells)"]
    assert whole.now == pytest.approx(1.5 * 1.005, rel=1e-3)


@pytest.mark.parametrize("argv, line", [
    (["--processes", "3"], "ift-bench: error: --processes: 3 without --update-baseline "
                           "(allowed: a number of sweeps, only with --update-baseline)"),
    (["--update-baseline", "--processes", "0"],
     "ift-bench: error: --processes: '0' is out of range (allowed: an integer >= 1 and <= 50)"),
])
def test_processes_is_a_number_of_sweeps_for_update_baseline_only(argv, line, tmp_path, capsys):
    """One line naming the field, exit 2, before anything is swept or written."""
    baseline = tmp_path / "baseline.json"
    assert main(["gate", "--baseline", str(baseline), "--results", str(tmp_path / "r"),
                 *argv]) == 2
    assert capsys.readouterr().err.strip() == line
    assert not baseline.exists() and not (tmp_path / "r").exists()
