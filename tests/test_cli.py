"""The CLI contract: list --json keys, point --json/--dump, bad input → one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from problems.gd import GradientDescentHyper
from suite.cli import main
from suite.records import RECORD_FIELDS


def test_list_json_has_exactly_the_contract_keys(capsys):
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(set(r) == {"problem", "backend", "framework", "supported", "reason",
                                   "needs_options"} for r in rows)
    table = {(r["problem"], r["backend"], r["framework"]): r for r in rows}
    for problem in ("gd", "softmax", "sparsemax", "qp", "savi"):
        for backend in ("unrolled", "ift-direct", "ift-cg"):
            for framework in ("torch", "jax"):
                row = table[(problem, backend, framework)]
                assert row["supported"] or "symmetric positive definite" in row["reason"]
                assert row["needs_options"] is None
    assert not table[("qp", "ift-cg", "jax")]["supported"]
    assert "alpha" in table[("qp", "ift-neumann", "torch")]["needs_options"]
    assert table[("gd", "ift-neumann", "torch")]["needs_options"] is None


@pytest.mark.parametrize("argv, field", [
    (["point", "--problem", "nope", "--backend", "unrolled", "--framework", "torch",
      "--n", "5", "--K", "5"], "problem"),
    (["point", "--problem", "gd", "--backend", "unrolled", "--framework", "torch",
      "--n", "5", "--K", "0"], "K"),
    (["point", "--problem", "gd", "--backend", "unrolled", "--framework", "torch",
      "--n", "-3", "--K", "5"], "n"),
    (["point", "--problem", "gd", "--backend", "unrolled", "--framework", "torch",
      "--n", "5", "--K", "5", "--option", "tol"], "--option"),
    (["point", "--problem", "gd", "--backend", "ift-cg", "--framework", "torch",
      "--n", "5", "--K", "5", "--option", "tol=abc"], "option 'tol'"),
    (["point", "--problem", "gd", "--backend", "ift-cg", "--framework", "torch",
      "--n", "5", "--K", "5", "--option", "snapshots=3"], "option 'snapshots'"),
    (["point", "--problem", "gd", "--backend", "unrolled", "--framework", "mxnet",
      "--n", "5", "--K", "5"], "framework"),
    (["point", "--problem", "gd", "--backend", "unrolled", "--framework", "torch",
      "--n", "5", "--K", "5", "--dtype", "float16"], "dtype"),
    (["point", "--problem", "gd", "--backend", "unrolled", "--framework", "torch",
      "--n", "five", "--K", "5"], "--n"),
    (["run", "--config", "no-such-config"], "--config"),
    (["run", "--problem", "gd", "--backend", "unrolled", "--n", "5"], "--K"),
    (["report", "/nonexistent/run"], "RESULTS_DIR"),
])
def test_bad_input_is_one_line_naming_the_field_and_exit_2(argv, field, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert field in err


def test_unknown_name_lists_the_allowed_values(capsys):
    main(["point", "--problem", "nope", "--backend", "unrolled", "--framework", "torch",
          "--n", "5", "--K", "5"])
    assert "allowed: gd" in capsys.readouterr().err


@pytest.mark.slow
def test_point_json_and_dump(tmp_path):
    """The console entry point in a real subprocess: one JSON object, dumped arrays usable."""
    out = subprocess.run(
        [sys.executable, "-m", "suite", "point", "--problem", "gd", "--backend", "unrolled",
         "--framework", "jax", "--n", "7", "--K", "25", "--repeats", "2", "--json",
         "--dump", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=True)
    record = json.loads(out.stdout)
    assert set(RECORD_FIELDS) <= set(record)
    assert record["status"] == "ok" and record["grad_rel_error"] < 1e-10
    assert record["compile_s"] is not None and record["compile_s"] >= 0

    # the dumped instance alone reproduces the gradient (keys documented in the README)
    inst_npz = np.load(tmp_path / "instance.npz")
    grad = np.load(tmp_path / "grad.npy")
    problem = GradientDescentHyper()
    from problems.base import Instance

    assert set(inst_npz.files) == {"theta", "A", "y", "A_val", "y_val", "lr", "m", "momentum"}
    arrays = {k: inst_npz[k] for k in ("A", "y", "A_val", "y_val")}
    consts = {k: inst_npz[k].item() for k in ("lr", "m", "momentum")}
    inst = Instance(theta=inst_npz["theta"], arrays=arrays, consts=consts)
    assert grad.shape == inst.theta.shape
    ref = problem.reference_gradient(inst, 25, "k_step")
    assert np.linalg.norm(grad - ref) / np.linalg.norm(ref) < 1e-10
