"""Problems from outside the package: by import path, by file path and by entry point; their
origin in every record; the suite's own references for problems that supply none; the one-line
errors for bad specs; single-framework problems; and the example of examples/ end to end."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import problems
from suite import references
from suite.cli import main
from suite.plugin.errors import UsageError
from suite.point import Point, support_reason, validate_point
from suite.program import evaluate

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "examples/reweighting.py:SampleReweighting"
BROKEN = "tests.broken_problems"


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # relative file specs resolve against the current directory


def _cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "suite", *argv], cwd=ROOT, text=True,
                          capture_output=True, env=env, timeout=600)


# ---- resolution ---------------------------------------------------------------------------
def test_module_and_file_specs_resolve_to_the_same_class(in_root):
    by_module = problems.get(f"{BROKEN}:Sound")
    by_file = problems.get("tests/broken_problems.py:Sound")
    assert type(by_module).__name__ == type(by_file).__name__ == "Sound"
    assert problems.get(f"{BROKEN}:Sound") is by_module  # resolved once, cached
    origin = problems.origin("tests/broken_problems.py:Sound")
    digest = hashlib.sha256((ROOT / "tests/broken_problems.py").read_bytes()).hexdigest()
    assert origin["file"] == str(ROOT / "tests/broken_problems.py")
    assert origin["sha256"] == digest and origin["module"].endswith(":Sound")


def test_builtin_origin_names_its_module_and_hash():
    origin = problems.origin("gd")
    assert origin["module"] == "problems.gd:GradientDescentHyper"
    assert origin["sha256"] == hashlib.sha256((ROOT / "problems/gd.py").read_bytes()).hexdigest()


@pytest.mark.parametrize("spec, says", [
    ("nope", "unknown 'nope'"),
    ("examples/missing.py:Thing", "no such file 'examples/missing.py'"),
    ("no_such_package.mod:Thing", "no module named 'no_such_package'"),
    (f"{BROKEN}:Nope", "the module has no 'Nope'"),
    (f"{BROKEN}:NotAProblem", "is not a subclass of problems.base.Problem"),
    (f"{BROKEN}:MissingStep", "does not implement step"),
])
def test_bad_specs_are_one_usage_error(spec, says, in_root):
    with pytest.raises(UsageError) as info:
        problems.get(spec)
    assert info.value.field == "problem" and says in str(info.value)


def test_a_file_that_does_not_import_is_named(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("import numpy\nraise RuntimeError('half-written problem')\n")
    assert main(["list", "--problem", f"{broken}:Anything"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"{str(broken)!r} does not import: RuntimeError: half-written problem" in err[0]


def test_point_refuses_a_bad_spec_before_spawning(capsys, in_root):
    assert main(["point", "--problem", f"{BROKEN}:MissingStep", "--backend", "unrolled",
                 "--framework", "torch", "--n", "4", "--K", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ift-bench: error: --problem:")


def test_config_accepts_an_import_path_and_names_a_bad_one(tmp_path, in_root):
    from suite.config import load_config

    good = tmp_path / "mine.toml"
    good.write_text(f'problems = ["{EXAMPLE}"]\nbackends = ["unrolled"]\n'
                    'frameworks = ["torch"]\n[[grid]]\nn = [4]\nK = [3, 6]\n')
    assert [p.problem for p in load_config(str(good)).points()] == [EXAMPLE, EXAMPLE]
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace(EXAMPLE, "examples/nothere.py:X"))
    with pytest.raises(UsageError, match=r"bad\.toml:1: problems: no such file"):
        load_config(str(bad))


# ---- single-framework problems --------------------------------------------------------------
def test_single_framework_problem_marks_the_other_framework_unsupported():
    spec = f"{BROKEN}:TorchOnly"
    reason = support_reason(spec, "unrolled", "jax")
    assert reason == ("problem sound is written for torch only "
                      "(it declares frameworks = ('torch',))")
    assert support_reason(spec, "unrolled", "torch") is None
    # torch runs it, host-side float64 checks included (torch.tanh would fail on numpy)
    ev = evaluate(Point(spec, "unrolled", "torch", n=4, K=12))
    inst = ev.prepared.instance
    ref = references.k_step_gradient(problems.get(spec), inst, 12)
    assert np.linalg.norm(ev.gradient - ref) <= 1e-13 * np.linalg.norm(ref)


# ---- the suite's references --------------------------------------------------------------
@pytest.mark.parametrize("name, n, K", [("gd", 6, 12), ("softmax", 5, 12), ("savi", 2, 5)])
def test_suite_references_equal_the_problems_own(name, n, K):
    """The generic float64 references (reverse mode through K steps; dense IFT at a solution
    the problem's own step reaches) against the hand-written ones of three built-ins."""
    problem = problems.get(name)
    parsed = validate_point(Point(name, "unrolled", "torch", n=n, K=K))["problem"]
    inst = problem.generate(n, 0, parsed)
    own_k = problem.reference_gradient(inst, K, "k_step")
    assert np.linalg.norm(references.k_step_gradient(problem, inst, K) - own_k) \
        <= 1e-12 * np.linalg.norm(own_k)
    own_c = problem.reference_gradient(inst, K, "converged")
    suite_c = references.converged_gradient(problem, inst)
    # x* to ‖F‖ ≤ 1e-12 against each problem's own solve (Newton / closed form)
    assert np.linalg.norm(suite_c - own_c) <= 1e-9 * np.linalg.norm(own_c)


def test_solve_names_the_residual_it_reached():
    problem = problems.get(f"{BROKEN}:SlowSolver")
    inst = problem.generate(4, 0, {})
    with pytest.raises(references.ReferenceUnavailable,
                       match=r"did not reach ‖F\(θ, x\)‖ ≤ 1e-12 in 50 steps \(smallest reached "
                             r"[0-9.]+e[+-]\d+"):
        references.solve(problem, inst, max_steps=50)


# ---- entry points --------------------------------------------------------------------------
def test_entry_point_problems_appear_in_list_by_name(tmp_path):
    """An installed distribution (a dist-info directory on sys.path, as pip leaves it) that
    declares ift_bench.problems gets its problem listed and measured by name."""
    pkg = tmp_path / "acme_problems"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from tests.broken_problems import Sound\n\nclass Acme(Sound):\n    pass\n")
    info = tmp_path / "acme_problems-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-problems\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ift_bench.problems]\nacme = acme_problems:Acme\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    listed = _cli("list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = [r for r in json.loads(listed.stdout) if r["problem"] == "acme"]
    assert len(rows) == 2 * len({r["backend"] for r in rows}) and rows[0]["supported"]
    measured = _cli("point", "--problem", "acme", "--backend", "unrolled", "--framework",
                    "torch", "--n", "3", "--K", "5", "--repeats", "1", "--json", env=env)
    assert measured.returncode == 0, measured.stdout + measured.stderr
    record = json.loads(measured.stdout)
    assert record["problem"] == "acme" and record["status"] == "ok"
    assert record["grad_error_k_step"] < 1e-12  # the suite's own reference, by name
    (info / "entry_points.txt").write_text("[ift_bench.problems]\ngd = acme_problems:Acme\n")
    clash = _cli("list", env=env)
    assert clash.returncode == 2
    assert "entry point ift_bench.problems:gd: 'gd' is already a problem's name" in clash.stderr


# ---- the example, end to end ----------------------------------------------------------------
@pytest.mark.slow
def test_example_checks_measures_runs_and_reports(tmp_path):
    checked = _cli("check", EXAMPLE)
    assert checked.returncode == 0, checked.stdout
    assert [line.split()[0] for line in checked.stdout.splitlines()[1:8]] == ["pass"] * 7

    point = _cli("point", "--problem", EXAMPLE, "--backend", "unrolled", "--framework", "jax",
                 "--n", "6", "--K", "800", "--repeats", "1", "--json")
    assert point.returncode == 0, point.stdout + point.stderr
    record = json.loads(point.stdout)
    assert record["status"] == "ok" and record["problem"] == EXAMPLE
    assert record["reference_source"] == "suite"
    digest = hashlib.sha256((ROOT / "examples/reweighting.py").read_bytes()).hexdigest()
    assert record["problem_origin"]["sha256"] == digest
    assert record["problem_origin"]["file"] == str(ROOT / "examples/reweighting.py")
    # exact for the K-step map (the suite's float64 reverse mode, in torch) and, K = 800 being
    # past ‖F‖ ≤ 1e-12 (K* = 578 at n = 6), equal to the suite's dense-IFT gradient too
    assert record["grad_error_k_step"] < 1e-12
    assert record["grad_error_converged"] < 1e-9

    config = tmp_path / "example.toml"
    config.write_text(f'name = "example"\nproblems = ["{EXAMPLE}"]\n'
                      'backends = ["unrolled", "forward"]\nframeworks = ["torch"]\nrepeats = 1\n'
                      '[[grid]]\nn = [4]\nK = [20, 40]\n')
    run = _cli("run", "--config", str(config), "--results", str(tmp_path / "results"),
               "--run-id", "ex", "--no-progress")
    assert run.returncode == 0, run.stdout + run.stderr
    run_dir = tmp_path / "results" / "ex"
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    assert len(records) == 4 and {r["status"] for r in records} == {"ok"}
    assert {r["reference_source"] for r in records} == {"suite"}
    unrolled = [r for r in records if r["backend"] == "unrolled"]
    assert max(r["grad_error_k_step"] for r in unrolled) < 1e-12  # exact for the K-step map
    report = _cli("report", str(run_dir))
    assert report.returncode == 0, report.stderr
    html = (run_dir / "report.html").read_text()
    assert f'<h2 id="{EXAMPLE}">Problem <code>{EXAMPLE}</code></h2>' in html
    # the section says which file (and which version of it) was measured
    assert f"{ROOT / 'examples/reweighting.py'} (sha256 {digest[:16]}…); references: suite" in html
