"""The CLI contract: list --json keys, point --json/--dump, bad input → one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from problems.gd import GradientDescentHyper
from suite.cli import main
from suite.records import RECORD_FIELDS


def test_list_json_has_exactly_the_contract_keys(capsys):
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(set(r) == {"problem", "backend", "framework", "supported", "reason",
                                   "needs_options", "corresponds_to", "converged_only"}
                        for r in rows)
    # a peer row names the strategy of ours it stands beside; ours name none
    assert {r["corresponds_to"] for r in rows if r["backend"] == "jaxopt-cg"} == {"ift-cg"}
    assert {r["corresponds_to"] for r in rows if r["backend"] == "ift-cg"} == {None}
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
    assert "allowed: deq, gd, imaml, qp" in capsys.readouterr().err


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


POINT = ["point", "--problem", "gd", "--backend", "unrolled", "--framework", "torch",
         "--n", "5", "--K", "5"]
RUN = ["run", "--problem", "gd", "--backend", "unrolled", "--framework", "torch", "--n", "5",
       "--K", "5", "--no-progress"]


@pytest.fixture
def no_measuring(monkeypatch):
    """Bad input must be rejected before any point is measured."""

    def refuse(*args, **kwargs):
        raise AssertionError("a point was measured despite bad input")

    monkeypatch.setattr("suite.executors.local.LocalExecutor.run", refuse)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("ift-bench: error: ") and err.count("error:") == 1  # no doubled prefix
    assert "(allowed: " in err
    return err


@pytest.mark.parametrize("extra, expected", [
    (["--timeout", "10min"], "--timeout: cannot read '10min' as seconds (allowed: a positive "
                             "number of seconds"),
    (["--timeout", "nan"], "--timeout: 'nan' is not finite"),
    (["--timeout", "inf"], "--timeout: 'inf' is not finite"),
    (["--timeout", "0"], "--timeout: '0' is out of range"),
    (["--memory-cap", "-1GiB"], "--memory-cap: cannot read '-1GiB' as a size"),
    (["--memory-cap", "1MiB"], "--memory-cap: 1048576 bytes is below"),
    (["--memory-cap"], "--memory-cap: expected one argument (allowed: a size"),
    (["--option", "momentum=nan"], "option 'momentum': 'nan' is not finite (allowed: float >= 0"),
    (["--option", "momentum=inf"], "option 'momentum': 'inf' is not finite"),
    (["--threads", "999"], "--threads: 999 is out of range (allowed: an integer from 1 to"),
    (["--threads", "true"], "--threads: cannot read 'true' as an integer"),
    (["--repeats", "0"], "--repeats: '0' is out of range (allowed: an integer from 1 to 10000)"),
    (["--repeats", "2.5"], "--repeats: '2.5' is not an integer"),
    (["--seed", "-1"], "--seed: '-1' is out of range"),
    (["--n", "1000001"], "--n: '1000001' is out of range (allowed: an integer from 1 to 100000)"),
    (["--K", "1e9"], "--K: '1e9' is out of range (allowed: an integer from 1 to 10000000)"),
    (["--bogus"], "--bogus: unrecognized argument"),
])
def test_point_bad_numbers_are_one_line_and_nothing_is_measured(extra, expected, capsys,
                                                                no_measuring):
    sizes = [arg for flag in ("--n", "--K") if flag not in extra for arg in (flag, "5")]
    assert main(POINT[:-4] + sizes + extra) == 2
    assert expected in _one_line_error(capsys)


def test_missing_required_option_names_it_once(capsys):
    assert main(["point", "--problem", "gd", "--backend", "unrolled", "--n", "5", "--K", "5"]) == 2
    err = _one_line_error(capsys)
    assert err == "ift-bench: error: --framework: required (allowed: torch, jax)"


@pytest.mark.parametrize("run_id", ["../escape", "/abs", "a/b", "", ".hidden", "..", "x" * 101,
                                    "a b", "a\x00b"])
def test_run_id_must_be_one_safe_name(tmp_path, run_id, capsys, no_measuring):
    results = tmp_path / "results"
    assert main(RUN + ["--results", str(results), "--run-id", run_id]) == 2
    assert "--run-id: " in _one_line_error(capsys)
    assert sorted(tmp_path.iterdir()) == []  # nothing written anywhere, not even results/


def test_results_must_be_a_writable_directory(tmp_path, capsys, no_measuring, monkeypatch):
    (tmp_path / "afile").write_text("x")
    assert main(RUN + ["--results", str(tmp_path / "afile")]) == 2
    assert "--results: " in _one_line_error(capsys) and (tmp_path / "afile").read_text() == "x"
    assert main(RUN + ["--results", ""]) == 2
    assert "--results: empty path" in _one_line_error(capsys)
    assert main(RUN + ["--results", str(tmp_path / "afile" / "sub")]) == 2
    assert "--results: cannot create" in _one_line_error(capsys)
    # a read-only directory (simulated: this suite may run as root, who may write anywhere)
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr("suite.inputs.os.access",
                        lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    assert main(RUN + ["--results", str(ro)]) == 2
    assert f"--results: '{ro}' is not writable" in _one_line_error(capsys)
    assert list(ro.iterdir()) == []


def test_dump_target_is_checked_before_measuring(tmp_path, capsys, no_measuring):
    (tmp_path / "afile").write_text("x")
    assert main(POINT + ["--dump", str(tmp_path / "afile")]) == 2
    assert "--dump: " in _one_line_error(capsys)
    (tmp_path / "d" / "grad.npy").mkdir(parents=True)  # a directory where a file must go
    assert main(POINT + ["--dump", str(tmp_path / "d")]) == 2
    assert "grad.npy' is a directory" in _one_line_error(capsys)


def _fake_run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "records.jsonl").write_text("")
    return run_dir


@pytest.mark.parametrize("meta, expected", [
    ("{", "--resume: "),
    ("[1, 2]", "--resume: "),
    ('{"run_id": "x"}', "--resume: "),
    ('{"config": {"name": "x"}}', "meta.json: config.problems: missing"),
    ('{"config": {"name": "x", "problems": ["gd"], "backends": ["unrolled"], '
     '"frameworks": ["torch"], "grids": [{"n": [5], "K": [5], "options": ["solver"]}]}}',
     "grid[0].options"),
])
def test_damaged_meta_json_on_resume_is_one_line(tmp_path, meta, expected, capsys, no_measuring):
    run_dir = _fake_run_dir(tmp_path)
    (run_dir / "meta.json").write_text(meta)
    assert main(["run", "--resume", str(run_dir), "--no-progress"]) == 2
    assert expected in _one_line_error(capsys)


def test_resume_refuses_a_read_only_records_file(tmp_path, capsys, no_measuring, monkeypatch):
    run_dir = _fake_run_dir(tmp_path)
    records = run_dir / "records.jsonl"
    real_access = os.access
    monkeypatch.setattr("suite.inputs.os.access",
                        lambda p, mode: False if Path(p) == records else real_access(p, mode))
    assert main(["run", "--config", "quick", "--resume", str(run_dir), "--no-progress"]) == 2
    assert f"--resume: '{records}' is read-only" in _one_line_error(capsys)
    assert main(["run", "--config", "quick", "--resume", str(tmp_path / "none")]) == 2
    assert "--resume: " in _one_line_error(capsys)


def test_report_names_every_unreadable_line(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "records.jsonl").write_bytes(b"[1,2]\n{}\n\xff\xfe\n")
    written = []
    # the report itself is tested in tests/test_report.py; here: what reaches it
    monkeypatch.setattr("reports.html.write_report",
                        lambda d, out=None: written.append((d, out)) or d / "report.html")
    assert main(["report", str(run_dir)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split("records.jsonl:")[1].split(":")[0] for line in err] == ["1", "2", "3"]
    assert written == [(run_dir, None)]


@pytest.mark.parametrize("out, expected", [
    ("missing/report.html", "--out: directory"),
    (".", "--out: "),
    ("", "--out: empty path"),
])
def test_report_out_must_be_a_writable_file_path(tmp_path, out, expected, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "records.jsonl").write_text("")
    target = str(tmp_path / out) if out else ""
    assert main(["report", str(run_dir), "--out", target]) == 2
    assert expected in _one_line_error(capsys)


def test_report_on_a_damaged_meta_json_is_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "records.jsonl").write_text("")
    (run_dir / "meta.json").write_text("{")
    assert main(["report", str(run_dir)]) == 2
    assert "RESULTS_DIR: " in _one_line_error(capsys)


def test_point_json_output_is_strict_json():
    from suite.cli.point import strict_json as _strict_json

    payload = {"grad_rel_error": float("nan"), "times_s": [float("inf"), 1.5], "n": 3}
    text = json.dumps(_strict_json(payload), allow_nan=False)
    assert json.loads(text) == {"grad_rel_error": None, "times_s": [None, 1.5], "n": 3}
