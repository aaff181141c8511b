"""Property-based: whatever a user types, the CLI and the config loader answer with exit 0, 1
or 2, never a traceback, never a file outside the results directory, never a lost record.

Measurement is replaced by a stub that returns an ``ok`` record at once: these properties are
about validation, paths and records.jsonl, and bad input must be rejected before anything is
measured anyway.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from suite.cli import main
from suite.config import load_config
from suite.executors import failure_record
from suite.plugin.errors import UsageError
from suite.records import append_record

SETTINGS = settings(max_examples=40, deadline=None, database=None,  # writes nothing to the tree
                    suppress_health_check=[HealthCheck.too_slow])

# ---- generators -----------------------------------------------------------------------------
#: names and paths: traversal, absolute paths, separators, dots, control characters, unicode
hostile_names = st.one_of(
    st.sampled_from(["../escape", "../../x", "/abs", "/tmp/escape", "a/b", ".", "..", ".hidden",
                     "", " ", "a b", "a\x00b", "x" * 101, "ok-name", "run.1", "-dash", "~",
                     "a\\b", "con", "é", "a\nb", "\udcff"]),  # \udcff: undecodable argv byte
    st.text(alphabet=st.sampled_from("ab./-_~ \\\x00é0"), max_size=12),
)
#: numbers as text: NaN, infinities, booleans, huge, negative, units, garbage
hostile_numbers = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e400", "true", "false", "", " ", "0",
                     "-1", "0x10", "1_000", "2.5", "5", "1e9", "10min", "-1GiB", "8GiB", "none"]),
    st.integers(min_value=-10**12, max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=6),
)
#: TOML values of every shape, including ones no key accepts
toml_values = st.recursive(
    st.one_of(st.integers(min_value=-10**10, max_value=10**10),
              st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
              st.text(max_size=8), st.sampled_from(["gd", "unrolled", "torch", "../x", "admm"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["n", "K", "tol", "solver", "x"]),
                                            inner, max_size=3)),
    max_leaves=6,
)


def _toml(value) -> str:
    """A value as inline TOML (no TOML writer in the dependencies; inline forms suffice)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value) if ("." in repr(value) or "e" in repr(value)) else f"{value}.0"
    if isinstance(value, str):
        # JSON's escapes are TOML's (ensure_ascii off: JSON's surrogate pairs are not)
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + "}"


BASE_CONFIG = {"name": "h", "problems": ["gd"], "backends": ["unrolled"], "frameworks": ["torch"],
               "repeats": 1, "grid": [{"n": [3], "K": [2]}]}
CONFIG_KEYS = ["name", "description", "problems", "backends", "frameworks", "dtypes", "device",
               "seeds", "repeats", "timeout_s", "memory_cap", "threads", "pair_with", "grid",
               "options", "bogus"]


def _config_text(overrides: dict) -> str:
    table = {**BASE_CONFIG, **overrides}
    return "\n".join(f"{k} = {_toml(v)}" for k, v in table.items()) + "\n"


# ---- the harness ----------------------------------------------------------------------------
def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@contextlib.contextmanager
def _sandbox():
    """A fresh working directory; measurement stubbed; yields (root, results dir)."""
    with tempfile.TemporaryDirectory(prefix="ift-hostile-") as tmp, \
            pytest.MonkeyPatch.context() as mp:
        root = Path(tmp)
        (root / "cwd").mkdir()
        mp.chdir(root / "cwd")
        mp.setattr("suite.executors.local.LocalExecutor.run",
                   lambda self, point, s, *, dump_dir=None, slot=0:
                   failure_record(point, s, "ok", None))
        yield root, root / "results"


def _call(argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` in-process: its status and stderr; any escaping exception fails."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        status = main(argv)
    text = err.getvalue()
    assert status in (0, 1, 2), (argv, status, text)
    assert "Traceback" not in text, (argv, text)
    if status == 2:
        errors = [line for line in text.splitlines() if line.startswith("ift-bench: error:")]
        assert len(errors) == 1 and "(allowed: " in errors[0], (argv, text)
    return status, text


def _only_inside(root: Path, before: set[Path], allowed: Path) -> None:
    new = _files(root) - before
    outside = [p for p in new if allowed != p and allowed not in p.parents]
    assert not outside, outside


# ---- properties -----------------------------------------------------------------------------
@SETTINGS
@given(run_id=hostile_names)
def test_run_ids_never_escape_the_results_directory(run_id):
    with _sandbox() as (root, results):
        before = _files(root)
        status, _ = _call(["run", "--problem", "gd", "--backend", "unrolled", "--framework",
                           "torch", "--n", "3", "--K", "2", "--repeats", "1", "--no-progress",
                           "--results", str(results), "--run-id", run_id])
        _only_inside(root, before, results)
        if status == 0:  # accepted: exactly one run directory, directly under results/
            (run_dir,) = results.iterdir()
            assert run_dir.name == run_id


@SETTINGS
@given(name=hostile_names)
def test_config_names_never_escape_the_results_directory(name):
    with _sandbox() as (root, results):
        config = root / "c.toml"
        # an undecodable argv byte (\udcff) goes back to that byte: a file that is not UTF-8
        config.write_bytes(_config_text({"name": name}).encode("utf-8", "surrogateescape"))
        before = _files(root)
        status, _ = _call(["run", "--config", str(config), "--results", str(results),
                           "--no-progress"])
        _only_inside(root, before, results)
        if status == 0:
            (run_dir,) = results.iterdir()
            assert run_dir.name.endswith(f"-{name}")


@SETTINGS
@given(option=st.sampled_from(["--n", "--K", "--seed", "--repeats", "--timeout", "--threads",
                               "--memory-cap", "--option momentum", "--option tol",
                               "--option maxiter"]),
       value=hostile_numbers)
def test_hostile_numbers_are_rejected_before_measuring_or_measured_as_finite(option, value):
    with _sandbox() as (root, results):
        sizes = {"--n": "3", "--K": "2"}
        if option.startswith("--option"):
            extra = ["--option", f"{option.split()[1]}={value}"]
        else:
            sizes.pop(option, None)
            extra = [option, value]
        argv = ["point", "--problem", "gd", "--backend", "ift-cg", "--framework", "torch",
                "--repeats", "1", *[a for kv in sizes.items() for a in kv], *extra]
        before = _files(root)
        status, err = _call(argv)
        assert _files(root) == before  # point writes nothing without --dump
        lowered = value.strip().lower()
        if lowered in {"nan", "inf", "-inf", "1e400", "true", "false"}:
            assert status == 2, (argv, err)


@SETTINGS
@given(key=st.sampled_from(CONFIG_KEYS), value=toml_values)
def test_config_loader_answers_a_config_or_one_usage_error(key, value):
    with _sandbox() as (root, results):
        path = root / "c.toml"
        path.write_bytes(_config_text({key: value}).encode("utf-8", "surrogateescape"))
        try:
            config = load_config(str(path))
        except UsageError as exc:
            assert "\n" not in str(exc) and "allowed:" in str(exc)
            return
        # accepted: every number in it is finite and every point in range
        assert math.isfinite(config.settings.timeout_s) and config.settings.timeout_s > 0
        assert not isinstance(config.settings.repeats, bool) and config.settings.repeats >= 1
        assert all(1 <= p.n <= 100_000 and 1 <= p.K <= 10_000_000 for p in config.points())
        assert "/" not in config.name and not config.name.startswith(".")


@SETTINGS
@given(raw=st.binary(max_size=60))
def test_config_files_of_arbitrary_bytes_are_one_line(raw):
    with _sandbox() as (root, results):
        path = root / "c.toml"
        path.write_bytes(raw)
        before = _files(root)
        _call(["run", "--config", str(path), "--results", str(results), "--no-progress"])
        _only_inside(root, before, results)


PRE_EXISTING = 3


@SETTINGS
@given(tail=st.one_of(st.just(b""), st.binary(min_size=1, max_size=30).filter(
           lambda b: b"\n" not in b)),
       garbage=st.lists(st.binary(max_size=20).filter(lambda b: b"\n" not in b), max_size=2),
       extra=st.lists(st.sampled_from(["--jobs", "0", "--threads", "999", "--timeout", "nan",
                                       "--config", "quick", "--config", "/nonexistent.toml",
                                       "--n", "-1", "--run-id", "../x", "--bogus"]), max_size=4))
def test_no_record_is_ever_lost_from_a_resumed_run(tail, garbage, extra):
    """A run directory with records, garbage lines and perhaps a torn tail, resumed with
    hostile arguments: every byte of every complete line is still there afterwards, and a torn
    tail is in a side file."""
    with _sandbox() as (root, results):
        run_dir = results / "run"
        run_dir.mkdir(parents=True)
        config = load_config("quick")
        (run_dir / "meta.json").write_text(json.dumps({"config": config.to_json()}))
        records = run_dir / "records.jsonl"
        for point in config.points()[:PRE_EXISTING]:
            append_record(records, failure_record(point, config.settings, "ok", None))
        with open(records, "ab") as fh:
            fh.write(b"".join(g + b"\n" for g in garbage) + tail)
        complete = records.read_bytes()[:len(records.read_bytes()) - len(tail)]
        before = _files(root)
        status, err = _call(["run", "--resume", str(run_dir), "--no-progress", *extra])
        after = records.read_bytes()
        assert after.startswith(complete)
        if tail and after[len(complete):len(complete) + len(tail)] != tail:
            sides = [p for p in run_dir.iterdir() if ".torn-at-" in p.name]
            assert any(p.read_bytes() == tail for p in sides), (sides, tail)
        _only_inside(root, before, results)
        assert os.path.isdir(run_dir)


@SETTINGS
@given(path=hostile_names, command=st.sampled_from(["report", "resume", "report-out"]))
def test_hostile_paths_to_report_and_resume_write_nothing(path, command):
    with _sandbox() as (root, results):
        run_dir = results / "run"
        run_dir.mkdir(parents=True)
        (run_dir / "records.jsonl").write_bytes(b"[1, 2]\n")
        argv = {"report": ["report", path],
                "resume": ["run", "--resume", path, "--no-progress"],
                "report-out": ["report", str(run_dir), "--out", path]}[command]
        before = _files(root)
        with pytest.MonkeyPatch.context() as mp:  # the report's rendering is not on trial
            mp.setattr("reports.html.write_report", lambda d, out=None: Path(d) / "report.html")
            status, _ = _call(argv)
        assert _files(root) == before
        # no run directory is reachable through these names; an --out file may be valid
        assert status == 2 if command != "report-out" else status in (0, 2)
