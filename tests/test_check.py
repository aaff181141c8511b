"""``ift-bench check``: each rule fires on the problem broken for it (tests/broken_problems.py),
stays quiet on the sound one, and every built-in problem passes (with the documented warns)."""

from __future__ import annotations

import re

import pytest

from suite.check import run_check
from suite.cli import main

from . import support_matrix

BROKEN = "tests.broken_problems"


def _check(name: str, **kwargs):
    return run_check(f"{BROKEN}:{name}", n=4, **kwargs)


def _number(line: str, label: str) -> float:
    """The number printed after ``label`` in a finding's line."""
    match = re.search(re.escape(label) + r"\s*([-+0-9.e]+)", line)
    assert match, (label, line)
    return float(match.group(1))


def test_sound_problem_passes_every_rule():
    report = _check("Sound")
    assert [f.status for f in report.findings] == ["pass"] * 7, report.lines()
    # the suite's own references (Sound supplies none) agree with central differences
    assert _number(report.findings[2].message, "10-step map:") < 1e-8


def test_rule_1_fires_on_nondeterministic_generate():
    report = _check("NonDeterministic")
    line = report.findings[0]
    assert line.status == "fail" and "arrays['c'] differs" in line.message
    assert _number(line.message, "max |Δ| =") > 0.1  # a fresh N(0, 1) draw, not rounding


def test_rule_1_fires_on_residual_longer_than_x():
    line = _check("ResidualTooLong").findings[0]
    assert line.status == "fail" and "F has shape (5,) but x has shape (4,)" in line.message


def test_rule_2_warns_with_the_K_still_off():
    report = _check("SlowSolver", max_K=300)
    line = report.findings[1]
    assert line.status == "warn" and "at K = 300" in line.message
    assert _number(line.message, "‖F(θ, x₀)‖ =") > 0.5  # a step 1000× too small barely moves
    assert not report.failed  # a slow solver is a warning, not an error


def test_rule_3_fails_on_a_wrong_reference():
    line = _check("WrongReference").findings[2]
    assert line.status == "fail"
    # M⁻¹ in place of (M + diag sech²)⁻¹: tens of percent off, at K steps and at the solution
    assert _number(line.message, "10-step map:") > 1e-2
    converged = re.search(r"solution map .*?\): ([-+0-9.e]+)", line.message)
    assert converged and float(converged.group(1)) > 1e-2


def test_rule_4_fails_when_jax_takes_another_step():
    line = _check("FrameworkDependent").findings[3]
    assert line.status == "fail"
    # a 1 % larger step in JAX moves x_10 by ≈ 1e-4 relative
    assert 1e-5 < _number(line.message, "x_K differs by") < 1e-2


def test_rule_5_fails_on_a_false_spd_declaration():
    line = _check("FalseSPD").findings[4]
    assert line.status == "fail" and "declared spd but asymmetry" in line.message
    assert _number(line.message, "‖J − Jᵀ‖/‖J‖ =") > 1e-2


def test_rule_5_fails_a_jacobian_declared_spd_everywhere_that_is_not_at_x0():
    line = _check("SPDOnlyNearTheSolution").findings[4]
    assert line.status == "fail" and "declared jacobian_spd_everywhere but at x₀" in line.message
    assert _number(line.message, "λ_min =") < 0
    assert "measured 'spd'" not in line.message and "measured spd" in line.message


def test_rule_6_warns_on_a_linear_step():
    line = _check("LinearStep").findings[5]
    assert line.status == "warn" and "linear" in line.message
    assert _number(line.message, "keeps") == 0  # bytes per step: XLA stores no residuals


def test_rule_7_warns_when_the_outer_loss_is_the_inner_objective():
    line = _check("EnvelopeLoss").findings[6]
    assert line.status == "warn" and "envelope theorem" in line.message
    assert _number(line.message, "is") < 1e-10  # ‖∇ₓℓ(x*)‖ / ‖∇ₓℓ(x₀)‖ = ‖F(x*)‖/‖F(x₀)‖


def test_single_framework_problem_skips_the_framework_rule():
    report = _check("TorchOnly")
    assert report.findings[3].status == "skip" and "('torch',)" in report.findings[3].message
    assert not report.failed


#: (problem, rule) → why a warning is true (README, "Measuring your own problem")
DOCUMENTED_WARNS = {("sparsemax", 6): "bisection is piecewise linear: one predicate per step"}


@pytest.mark.slow
@pytest.mark.parametrize("name", support_matrix.PROBLEMS)
def test_builtin_problems_pass_check(name):
    report = run_check(name, n={"savi": 2, "imaml": 1}.get(name, 6))
    for finding in report.findings:
        expected = "warn" if (name, finding.rule) in DOCUMENTED_WARNS else "pass"
        assert finding.status == expected, finding.line()


def test_cli_exit_status_and_one_line_per_rule(capsys):
    assert main(["check", f"{BROKEN}:FalseSPD", "--n", "4"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[1:8]] == ["pass"] * 4 + ["fail", "pass", "pass"]
    assert main(["check", f"{BROKEN}:LinearStep", "--n", "4", "--framework", "torch"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[4].startswith("skip") and out[6].startswith("warn")


@pytest.mark.parametrize("argv, field", [
    (["check", "nope"], "PROBLEM"),
    (["check", "gd", "--framework", "mxnet"], "--framework"),
    (["check", f"{BROKEN}:TorchOnly", "--framework", "jax"], "--framework"),
    (["check", "gd", "--n", "0"], "--n"),
])
def test_cli_bad_input_is_one_line_exit_2(argv, field, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ift-bench: error: {field}:")
