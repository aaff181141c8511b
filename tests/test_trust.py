"""Issue 21, "trust for real users": one test (or a few) per finding of the issue, each
reproducing it through the command line as a user would meet it.

1. two writers on one run; duplicated records  2. a plug-in edited between run and --resume
3. ``compare`` with nothing compared           4. plug-in code at import (print, exit, os._exit)
5. ``check`` without a timeout                 6. a dead Ray address
7. tracebacks: permissions, read-only runs, closed pipes
8. a stray temporary directory after SIGKILL   9. messages
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from suite.cli import main
from suite.config import build_config
from suite.executors import Executor, failure_record
from suite.point import Point, Settings
from suite.records import Record, append_record, read_records

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "reweighting.py"
TINY = ["--problem", "gd", "--framework", "torch", "--n", "4", "--repeats", "1",
        "--no-progress"]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def _cli(*argv: str, cwd: Path | None = None, timeout: float = 300, **env: str
         ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "suite", *argv], cwd=cwd or ROOT, text=True,
                          capture_output=True, env=_env(**env), timeout=timeout)


def _one_error_line(stderr: str) -> str:
    """The single ``ift-bench: error:`` line of ``stderr``; no traceback beside it."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("ift-bench: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def _record(problem: str = "gd", backend: str = "unrolled", K: int = 5, **fields) -> Record:
    point = Point(problem, backend, "torch", n=4, K=K)
    rec = failure_record(point, Settings(repeats=1), "ok", None)
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


def _run_dir(root: Path, name: str, records: list[Record]) -> Path:
    run = root / name
    run.mkdir(parents=True)
    for rec in records:
        append_record(run / "records.jsonl", rec)
    return run


class _Instant(Executor):
    """Measures nothing: every point is an ``ok`` record at once (sweep bookkeeping tests)."""

    name = "instant"

    def run(self, point, settings, *, dump_dir=None, slot=0):
        return failure_record(point, settings, "ok", None)

    def kill_all(self) -> None:
        pass


# ---- 1. one writer per run directory ----------------------------------------------------------
@pytest.mark.slow
def test_1_a_second_writer_is_refused_while_the_first_runs(tmp_path):
    """Two real processes: the resume started while the run is being written exits 2 naming
    the writer's pid; the run ends with one record per point."""
    # its last point hangs until its timeout: the first writer is surely still at work when
    # the second arrives, however loaded the machine
    first = subprocess.Popen(
        [sys.executable, "-m", "suite", "run", *TINY, "--backend", "unrolled",
         "--K", "5,10,20", "--run-id", "live", "--jobs", "1", "--results", str(tmp_path),
         "--timeout", "6"],
        cwd=ROOT, env=_env(IFT_BENCH_FAULT="20=hang"), text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    records = tmp_path / "live" / "records.jsonl"
    deadline = time.monotonic() + 240
    while not (records.exists() and records.read_text()) and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.1)
    second = _cli("run", "--resume", str(tmp_path / "live"), "--jobs", "1", "--no-progress")
    # a reader is told the run is live, and reads it
    still = first.poll() is None
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2, second.stderr
    line = _one_error_line(second.stderr)
    assert f"is being written by another ift-bench (pid {first.pid})" in line, line
    assert second.stdout == ""
    final = read_records(records)
    assert len(final) == 3 and len({r.point_key for r in final}) == 3
    assert [r.status for r in final] == ["ok", "ok", "timeout"]
    assert still  # the refusal came while the first writer was still at work


def test_1_the_lock_goes_with_a_killed_writer_and_readers_are_told(tmp_path):
    """A writer holding the lock (a child process): readers say the run is being written;
    once it is SIGKILLed, the run can be written again at once."""
    run = _run_dir(tmp_path, "run", [_record()])
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from suite import rundir\n"
         "with rundir.writer(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)",
         str(run)], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        compared = _cli("compare", str(run), str(run), "--out", str(tmp_path / "c.html"))
        assert compared.returncode == 0, compared.stderr
        assert (f"ift-bench: warning: RUN_A: {run} is still being written (by pid "
                f"{holder.pid})") in compared.stderr
        from suite import rundir
        from suite.plugin.errors import UsageError

        with pytest.raises(UsageError, match=f"pid {holder.pid}"), rundir.writer(run):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    from suite import rundir

    assert rundir.writing_pid(run) is None
    with rundir.writer(run):  # at once: the kernel released the dead writer's lock
        assert rundir.writing_pid(run) == os.getpid()


@pytest.mark.parametrize("command", ["report", "compare", "gate"])
def test_1_a_run_holding_one_point_twice_is_refused_naming_the_cell(tmp_path, command,
                                                                    capsys):
    run = _run_dir(tmp_path, "run", [_record(K=5), _record(K=10), _record(K=5)])
    other = _run_dir(tmp_path, "other", [_record(K=5), _record(K=10)])
    argv = {"report": ["report", str(run)],
            "compare": ["compare", str(other), str(run)],
            "gate": ["gate", "--run", str(run)]}[command]
    assert main(argv) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert "holds 1 point(s) more than once: gd/unrolled/torch float64 n=4 K=5 (2 records)" \
        in line, line
    assert captured.out == ""
    if command == "report":  # resuming such a run says so, and adds no third record
        from suite.sweep import run_sweep

        config = build_config({"problems": ["gd"], "backends": ["unrolled"],
                               "frameworks": ["torch"], "repeats": 1,
                               "grid": [{"n": [4], "K": [5, 10]}]}, name="d")
        run_sweep(config, resume=run, progress=False, executor=_Instant())
        assert (f"{run / 'records.jsonl'} holds 1 point(s) more than once (e.g. "
                "gd/unrolled/torch float64 n=4 K=5)") in capsys.readouterr().err
        assert len(read_records(run / "records.jsonl")) == 3


# ---- 2. a run is one version of the code -------------------------------------------------------
def _plugin(path: Path, scale: str = "1.0") -> str:
    """A copy of the example problem whose outer loss is scaled by ``scale`` (an edit)."""
    text = EXAMPLE.read_text()
    path.write_text(text + f"\n\nSCALE = {scale}\n")
    return f"{path}:SampleReweighting"


def test_2_resume_refuses_a_changed_plugin_and_keeps_versions_apart(tmp_path, capsys):
    spec = _plugin(tmp_path / "mine.py")
    settings = {"problems": [spec], "backends": ["unrolled"], "frameworks": ["torch"],
                "repeats": 1, "grid": [{"n": [4], "K": [5, 10]}]}
    config = build_config(settings, name="v")
    from suite.sweep import run_sweep

    result = run_sweep(build_config({**settings, "grid": [{"n": [4], "K": [5]}]}, name="v"),
                       tmp_path / "res", run_id="v", progress=False, executor=_Instant())
    run = result.run_dir
    meta = json.loads((run / "meta.json").read_text())
    first_sha = meta["code"]["problems"][spec]["sha256"]
    assert meta["code"]["suite"]["version"] == "0.1.0"
    _plugin(tmp_path / "mine.py", scale="2.0")  # the user edits the file
    import hashlib

    new_sha = hashlib.sha256((tmp_path / "mine.py").read_bytes()).hexdigest()
    from suite.plugin.errors import UsageError

    with pytest.raises(UsageError) as refused:
        run_sweep(config, resume=run, progress=False, executor=_Instant())
    assert (f"problem {spec!r} changed since the run began: {tmp_path / 'mine.py'} had sha256 "
            f"{first_sha[:12]}…, now {new_sha[:12]}…") in str(refused.value)
    assert "--allow-code-change" in str(refused.value)
    assert len(read_records(run / "records.jsonl")) == 1  # nothing measured
    # asked to continue: measured with the new code, said on stderr
    run_sweep(config, resume=run, progress=False, executor=_Instant(),
              allow_code_change=True)
    assert "measuring the remaining points with the new code" in capsys.readouterr().err
    shas = [r.problem_origin["sha256"] for r in read_records(run / "records.jsonl")]
    assert shas == [first_sha, new_sha]
    # the report says so at its top and never mixes the two in a row or a fit
    from suite import provenance
    from suite.rundir import load_frame

    frame = load_frame(run)
    note = provenance.versions_note(frame)
    assert note.startswith("This run holds several versions of the code: "
                           f"{spec}@{first_sha[:8]} (1 records), {spec}@{new_sha[:8]} "
                           "(1 records)")
    split = provenance.separate_versions(frame)
    assert sorted(split["problem"]) == sorted([f"{spec}@{first_sha[:8]}",
                                               f"{spec}@{new_sha[:8]}"])
    # the CLI flag reaches the sweep; without --resume it is refused
    assert main(["run", "--config", "quick", "--allow-code-change"]) == 2


@pytest.mark.slow
def test_2_report_of_a_run_with_two_versions_says_so_at_the_top(tmp_path):
    spec = _plugin(tmp_path / "mine.py")
    a = _record(problem=spec, K=5, problem_origin={"module": "m:S", "file": "f",
                                                   "sha256": "a" * 64}, time_s=1.0)
    b = _record(problem=spec, K=10, problem_origin={"module": "m:S", "file": "f",
                                                    "sha256": "b" * 64}, time_s=1.0)
    run = _run_dir(tmp_path, "run", [a, b])
    done = _cli("report", str(run))
    assert done.returncode == 0, done.stderr
    html = (run / "report.html").read_text()
    top = html[:html.index('id="decision"')]
    assert "Several versions of the code." in top
    assert f"{spec}@aaaaaaaa (1 records), {spec}@bbbbbbbb (1 records)" in top


# ---- 3. compare is never a silent pass ------------------------------------------------------
@pytest.mark.parametrize("case", ["empty", "garbage", "disjoint"])
def test_3_compare_with_nothing_compared_exits_2(tmp_path, case, capsys):
    a = _run_dir(tmp_path, "a", [_record(K=5), _record(K=10)])
    b = _run_dir(tmp_path, "b", [] if case != "disjoint" else [_record(K=20)])
    path = b / "records.jsonl"
    if case == "empty":
        path.write_text("")
    if case == "garbage":
        path.write_text("not json\n[1, 2]\n")
    assert main(["compare", str(a), str(b)]) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    expected = ("RUN_B: shares no cell with RUN_A" if case == "disjoint"
                else f"RUN_B: {str(path)!r} holds no readable record: nothing to compare")
    assert expected in line, line
    assert "regressed" not in captured.out


def test_3_wrong_typed_fields_are_reported_per_line(tmp_path, capsys):
    a = _run_dir(tmp_path, "a", [_record(K=5), _record(K=10)])
    b = _run_dir(tmp_path, "b", [_record(K=5), _record(K=10, time_s="fast")])
    assert main(["compare", str(a), str(b)]) == 0
    captured = capsys.readouterr()
    assert (f"ift-bench: warning: RUN_B: {b / 'records.jsonl'}:2: unreadable line skipped "
            "(field 'time_s' is \"fast\", not a number or null)") in captured.err
    assert "0 of 1 common cells regressed" in captured.out


# ---- 4. plug-in code is vetted in a child --------------------------------------------------------
def _hostile_plugin(tmp_path: Path, preamble: str) -> str:
    path = tmp_path / "plug.py"
    path.write_text(EXAMPLE.read_text() + "\n" + preamble + "\n")
    return f"{path}:SampleReweighting"


@pytest.mark.parametrize("command", ["list", "point", "check", "run"])
def test_4_exits_at_import_are_one_line_naming_the_file(tmp_path, command):
    cases = {"sys.exit": ("import sys\nsys.exit(3)", "called sys.exit(3)"),
             "os._exit": ("import os\nprint('bye', flush=True)\nos._exit(0)",
                          "ended the process (os._exit(0) or a crash)")}
    for kind, (code, said) in cases.items():
        spec = _hostile_plugin(tmp_path, code)
        argv = {"list": ["list", "--json", "--problem", spec],
                "point": ["point", "--problem", spec, "--backend", "unrolled", "--framework",
                          "torch", "--n", "4", "--K", "5", "--json"],
                "check": ["check", spec],
                "run": ["run", "--problem", spec, "--backend", "unrolled", "--framework",
                        "torch", "--n", "4", "--K", "5", "--results", str(tmp_path / "r")]
                }[command]
        done = _cli(*argv)
        assert done.returncode == 2, (kind, done)
        line = _one_error_line(done.stderr)
        assert f"importing {str(tmp_path / 'plug.py')!r} {said}" in line, (kind, line)
        assert done.stdout == ""
        assert not (tmp_path / "r").exists()


def test_4_what_a_plugin_prints_goes_to_stderr_and_json_stays_json(tmp_path):
    spec = _hostile_plugin(tmp_path, "print('PRINTED AT IMPORT')\nimport os\n"
                                     "os.write(1, b'RAW FD 1\\n')")
    listed = _cli("list", "--json", "--problem", spec)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {r["problem"] for r in rows} == {spec}
    assert "PRINTED AT IMPORT" in listed.stderr and "RAW FD 1" in listed.stderr
    # a module spec, and SystemExit caught by the loader itself (in-process, no vetting child)
    (tmp_path / "exiting_mod.py").write_text("import sys\nsys.exit(3)\n")
    module = _cli("list", "--problem", "exiting_mod:P", cwd=tmp_path)
    assert module.returncode == 2
    assert "importing module 'exiting_mod' called sys.exit(3)" in _one_error_line(module.stderr)
    import problems

    os.environ[problems._vetting.VETTED_ENV] = "1"
    try:
        from suite.plugin.errors import UsageError

        with pytest.raises(UsageError, match=r"does not import: SystemExit: 3"):
            problems.get(f"{tmp_path / 'exiting_mod.py'}:P")
    finally:
        del os.environ[problems._vetting.VETTED_ENV]


def test_4_a_plugin_that_hangs_at_import_is_one_line(tmp_path):
    spec = _hostile_plugin(tmp_path, "import time\nwhile True:\n    time.sleep(1)")
    done = _cli("list", "--problem", spec, IFT_BENCH_IMPORT_TIMEOUT="2")
    assert done.returncode == 2
    assert "did not finish within 2 s" in _one_error_line(done.stderr)


# ---- 5. check --timeout, and every exception in user code is a rule's fail line -------------
BAD_GENERATE = '''

import time as _time


class Hangs(SampleReweighting):
    def generate(self, n, seed, options):
        while True:
            _time.sleep(0.1)


class Raises(SampleReweighting):
    def generate(self, n, seed, options):
        raise ValueError("no data for you")


class Huge(SampleReweighting):
    def generate(self, n, seed, options):
        return np.ones((10**7, 10**7))
'''


@pytest.mark.parametrize("cls, said", [
    ("Hangs", "generate(n=6, seed=0) timed out after 2 s"),
    ("Raises", "generate(n=6, seed=0) raised ValueError: no data for you (bad.py:"),
    ("Huge", "generate(n=6, seed=0) raised MemoryError"),
])
def test_5_check_fails_the_rule_of_a_generate_that_hangs_or_raises(tmp_path, cls, said):
    (tmp_path / "bad.py").write_text(EXAMPLE.read_text() + BAD_GENERATE)
    done = _cli("check", f"{tmp_path / 'bad.py'}:{cls}", "--timeout", "2", "--framework",
                "torch", timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stdout.splitlines()
    assert lines[1].startswith("fail  1. determinism and shapes: " + said), lines[1]
    assert all(line.startswith("skip  ") for line in lines[2:8]), lines
    assert lines[-1].endswith("1 fail, 6 skip")


def test_5_a_rule_that_runs_out_of_time_fails_and_the_next_rules_run(tmp_path):
    (tmp_path / "slow.py").write_text(EXAMPLE.read_text() + '''

class SlowJacobian(SampleReweighting):
    def residual(self, xp, d, x, theta):
        import inspect
        if any(f.function == "rule_jacobian" for f in inspect.stack()):
            import time
            time.sleep(600)
        return super().residual(xp, d, x, theta)
''')
    done = _cli("check", f"{tmp_path / 'slow.py'}:SlowJacobian", "--timeout", "3",
                "--framework", "torch", "--n", "2", "--K", "2", "--max-K", "50", timeout=300)
    lines = done.stdout.splitlines()
    assert done.returncode == 1, done.stderr
    assert lines[5] == "fail  5. ∂F/∂x structure: timed out after 3 s", lines
    # rules 6 and 7 ran in a fresh child, rule 7 with the solution rule 2 found again
    assert lines[6].startswith("pass  6. linear-map trap") and lines[7].startswith("pass  7.")
    assert main(["check", "gd", "--timeout", "0"]) == 2


# ---- 6. Ray: a dead address ------------------------------------------------------------------
RAY_RUN = ["run", *TINY, "--backend", "unrolled", "--K", "5", "--executor", "ray",
           "--address", "127.0.0.1:1"]


@pytest.mark.slow
def test_6_a_dead_ray_address_is_one_line_after_the_connect_timeout(tmp_path):
    pytest.importorskip("ray")
    done = _cli(*RAY_RUN, "--connect-timeout", "3", "--results", str(tmp_path), timeout=120)
    assert done.returncode == 2
    line = _one_error_line(done.stderr)
    assert "--address: no Ray cluster answered at '127.0.0.1:1' within 3 s" in line, line
    assert done.stderr.strip().splitlines() == [line]  # no Ray log line on the terminal
    # and nothing measured, no run directory left without a log worth reading
    left = list(tmp_path.iterdir())
    assert all((d / "ray.log").stat().st_size > 0 for d in left), left


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_6_a_signal_while_connecting_ends_the_command(tmp_path, sig):
    pytest.importorskip("ray")
    proc = subprocess.Popen([sys.executable, "-m", "suite", *RAY_RUN, "--results",
                             str(tmp_path)], cwd=ROOT, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("*/ray.log")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)  # until it connects: its connection attempt writes Ray's log
    time.sleep(1)
    assert proc.poll() is None
    sent = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 1, err
    assert took <= 5, took  # the issue asks for 2 s; generous on a loaded machine
    assert err.strip() == "interrupted: before any point was measured", err


# ---- 7. permissions, read-only runs, closed pipes -----------------------------------------------
def _unprivileged_python() -> list[str] | None:
    """A command line that runs this suite's Python as user ``nobody``, or None."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return None
    try:
        import pwd

        pwd.getpwnam("nobody")
    except KeyError:
        return None
    site = [p for p in sys.path if p.endswith("site-packages")]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for exe in (sys.executable, getattr(sys, "_base_executable", None),
                shutil.which(version), f"/usr/bin/{version}"):
        if not exe:
            continue
        probe = subprocess.run(["runuser", "-u", "nobody", "--", "env",
                                f"PYTHONPATH={os.pathsep.join([str(ROOT), *site])}", exe,
                                "-c", "import numpy, suite.cli"], capture_output=True, cwd="/")
        if probe.returncode == 0:
            return ["runuser", "-u", "nobody", "--", "env",
                    f"PYTHONPATH={os.pathsep.join([str(ROOT), *site])}", "HOME=/tmp", exe]
    return None


@pytest.fixture(scope="module")
def as_nobody():
    command = _unprivileged_python()
    if command is None:
        pytest.skip("no unprivileged user that can run this Python (needs root, runuser and "
                    "user nobody)")
    return command


@pytest.fixture
def open_tmp():
    """A temporary directory user nobody can reach (pytest's own lies under a 0700 one)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="ift-trust-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _as(cmd: list[str], *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*cmd, "-m", "suite", *argv], cwd=cwd, text=True,
                          capture_output=True, timeout=300)


def test_7_paths_under_a_directory_the_user_cannot_enter(open_tmp, as_nobody):
    tmp_path = open_tmp
    # the control: the same commands on a directory nobody may enter are not refused for it
    assert _as(as_nobody, "report", str(tmp_path), cwd=tmp_path).stderr.endswith(
        "has no records.jsonl (allowed: a results/<run-id> directory)\n")
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    (closed / "c.toml").write_text("name = 'x'\n")
    _run_dir(closed, "run", [_record()])
    work = tmp_path / "work"
    work.mkdir(mode=0o777)
    for argv in (["run", "--config", str(closed / "c.toml")],
                 ["run", *TINY, "--backend", "unrolled", "--K", "5", "--results",
                  str(closed / "res")],
                 ["report", str(closed / "run")],
                 ["run", "--resume", str(closed / "run")],
                 ["compare", str(closed / "run"), str(closed / "run")],
                 ["gate", "--run", str(closed / "run")]):
        done = _as(as_nobody, *argv, cwd=work)
        assert done.returncode == 2, (argv, done.stderr)
        line = _one_error_line(done.stderr)
        assert "permission denied" in line.lower(), (argv, line)
        assert str(closed) in line, (argv, line)


def test_7_gate_on_a_read_only_run_prints_its_verdict(open_tmp, as_nobody):
    tmp_path = open_tmp
    run = _run_dir(tmp_path, "run", [_record()])
    run.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir(mode=0o777)
    done = _as(as_nobody, "gate", "--run", str(run), cwd=work)
    assert done.returncode == 1, done.stderr  # the baseline's cells are missing: a verdict
    assert "Traceback" not in done.stderr
    assert "missing" in done.stdout.lower()
    assert (f"ift-bench: warning: findings not written: cannot write "
            f"{str(run / 'gate.json')!r}: Permission denied") in done.stderr
    assert sorted(p.name for p in run.iterdir()) == ["records.jsonl"]


def test_7_gate_json_that_is_a_directory_leaves_no_temporary_file(tmp_path, capsys):
    run = _run_dir(tmp_path, "run", [_record()])
    (run / "gate.json").mkdir()
    assert main(["gate", "--run", str(run)]) == 1
    captured = capsys.readouterr()
    assert "cannot write" in captured.err and "gate.json" in captured.err
    assert sorted(p.name for p in run.iterdir()) == ["gate.json", "records.jsonl"]


@pytest.mark.parametrize("command", ["list", "compare"])
def test_7_a_closed_stdout_ends_quietly(tmp_path, command):
    run = _run_dir(tmp_path, "run", [_record(K=k) for k in range(1, 400)])
    argv = {"list": ["list"], "compare": ["compare", str(run), str(run)]}[command]
    proc = subprocess.Popen([sys.executable, "-m", "suite", *argv], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert first
    assert proc.returncode in (0, 141), err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# ---- 8. per-point temporary directories ----------------------------------------------------------
@pytest.mark.slow
def test_8_sigkill_of_the_driver_leaves_nothing_in_tmp(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "suite", "run", *TINY, "--backend", "unrolled", "--K", "5,10",
         "--run-id", "k", "--results", str(tmp_path / "res"), "--timeout", "60"],
        cwd=ROOT, env=_env(TMPDIR=str(tmp), IFT_BENCH_FAULT="hang"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scratch = tmp_path / "res" / "k" / ".points"
    deadline = time.monotonic() + 120
    while not (scratch.exists() and any(scratch.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert scratch.exists() and any(scratch.iterdir())  # the point is in flight, its files here
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not [p for p in tmp.iterdir() if p.name.startswith("ift-bench-point-")]
    # the next start of the run clears what the killed driver left
    done = _cli("run", "--resume", str(tmp_path / "res" / "k"), "--no-progress",
                IFT_BENCH_FAULT="crash", TMPDIR=str(tmp))
    assert done.returncode == 0, done.stderr
    assert not scratch.exists() or not any(scratch.iterdir())


def test_8_scratch_outside_a_run_left_by_a_dead_process_is_removed(tmp_path, monkeypatch):
    from suite.executors import local

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = tmp_path / f"{local.SCRATCH_PREFIX}{dead.pid}-abc"
    live = tmp_path / f"{local.SCRATCH_PREFIX}{os.getpid()}-def"
    orphan.mkdir()
    live.mkdir()
    with local._scratch(None) as mine:
        assert Path(mine).name.startswith(f"{local.SCRATCH_PREFIX}{os.getpid()}-")
        assert not orphan.exists() and live.exists()


# ---- 9. messages -------------------------------------------------------------------------------
def test_9_messages(tmp_path, capsys):
    from suite.check import run_check

    (tmp_path / "ints.py").write_text(EXAMPLE.read_text() + '''

class IntTheta(SampleReweighting):
    def generate(self, n, seed, options):
        import dataclasses
        inst = super().generate(n, seed, options)
        return dataclasses.replace(inst, theta=np.arange(inst.theta.size))
''')
    report = run_check(f"{tmp_path / 'ints.py'}:IntTheta", n=3, K=2, max_K=20,
                       framework="torch")
    assert report.findings[0].line() == ("fail  1. determinism and shapes: θ has dtype int64, "
                                         "not float64")
    # a directory as the problem file
    (tmp_path / "pkg.py").mkdir()
    assert main(["list", "--problem", f"{tmp_path / 'pkg.py'}:P"]) == 2
    assert f"{str(tmp_path / 'pkg.py')!r} is a directory, not a Python file" in \
        _one_error_line(capsys.readouterr().err)
    # records.jsonl given for its run
    run = _run_dir(tmp_path, "run", [_record()])
    for argv in (["report", str(run / "records.jsonl")],
                 ["run", "--resume", str(run / "records.jsonl")],
                 ["compare", str(run / "records.jsonl"), str(run)],
                 ["gate", "--run", str(run / "records.jsonl")]):
        assert main(argv) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert (f"{str(run / 'records.jsonl')!r} is a records file, not a run directory "
                f"(allowed: its directory: {str(run)!r})") in line, line
    # an existing --run-id is said to become NAME-1
    from suite.sweep import run_sweep

    config = build_config({"problems": ["gd"], "backends": ["unrolled"],
                           "frameworks": ["torch"], "repeats": 1,
                           "grid": [{"n": [4], "K": [5]}]}, name="m")
    for _ in range(2):
        last = run_sweep(config, tmp_path / "res", run_id="same", progress=False,
                         executor=_Instant())
    assert last.run_dir.name == "same-1"
    assert (f"ift-bench: warning: --run-id 'same' exists in {str(tmp_path / 'res')!r}: this "
            "run is 'same-1'") in capsys.readouterr().err
