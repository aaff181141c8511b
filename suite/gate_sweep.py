"""The gate's measurements: the current code's sweep and, where this machine has no time
baseline of its own, the baseline commit's sweep beside it (the *paired path*).

Time is only ever judged against times taken on the same machine (``suite.fingerprint``):

1. ``same-machine`` — ``benchmarks/time/<slug>.json`` exists for this machine's fingerprint:
   the current code's ratios are held against it.
2. ``paired`` — no such file: the commit recorded in ``benchmarks/baseline.json`` is
   extracted from git (``git archive``, into the run directory) and its own ``ift-bench run``
   measures the same config on this machine *at the same time* as the current code's sweep,
   one point in flight each, their timed sections taking turns under one timing lock (the
   approach of ``asv continuous``: two commits, one machine, one session). Its records land in
   ``RUN_DIR/base/``, so ``gate --run RUN_DIR`` can judge the pair again.
3. ``not judged`` — no git history, a commit this checkout does not have, a base that cannot
   run the config: the reason is one line, and the gate's verdict comes from the other rules.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from suite import gate
from suite.config import Grid, SweepConfig
from suite.plugin.errors import UsageError
from suite.rundir import RunDir
from suite.sweep import run_sweep
from suite.timing import TIMING_LOCK_ENV


class BaseUnavailable(Exception):
    """The baseline's commit cannot be measured here; the message says why (one line)."""


@dataclass
class TimePlan:
    """How this run's time will be judged: ``same-machine`` with ``time_file``, ``paired``
    with ``commit``, or ``not judged`` with ``reason``."""

    method: str
    fingerprint: dict[str, Any]
    time_file: Path | None = None
    commit: str | None = None
    reason: str | None = None


@dataclass
class GateSweep:
    run_dir: Path
    interrupted: bool
    time: gate.TimeReference | None
    time_not_judged: str | None
    fingerprint: dict[str, Any]


def plan(fingerprint: dict[str, Any], baseline: dict[str, Any],
         time_dir: Path = gate.DEFAULT_TIME_DIR) -> TimePlan:
    """Which of the three paths (module doc) this machine takes."""
    time_file = gate.time_baseline_path(fingerprint, time_dir)
    if time_file.is_file():
        return TimePlan("same-machine", fingerprint, time_file=time_file)
    commit = baseline.get("commit")
    if not isinstance(commit, str) or not commit:
        return TimePlan("not judged", fingerprint, reason=(
            f"no time baseline for this machine ({time_file.name}) and the baseline records "
            "no commit to measure beside this one"))
    return TimePlan("paired", fingerprint, commit=commit)


def _git(repo: Path, *args: str, binary: bool = False) -> Any:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True,
                          timeout=120, text=not binary).stdout


def extract_commit(commit: str, into: Path, repo: Path = gate.PROJECT_ROOT) -> None:
    """The tree of ``commit`` written to ``into`` (``git archive``: no worktree metadata to
    leave behind if the gate is killed, and a read-only ``.git`` suffices)."""
    try:
        _git(repo, "rev-parse", "--git-dir")
    except (OSError, subprocess.SubprocessError):
        raise BaseUnavailable(f"{repo} is not a git checkout (no history to take the "
                              f"baseline's commit {commit[:12]} from)") from None
    try:
        _git(repo, "cat-file", "-e", f"{commit}^{{commit}}")
    except (OSError, subprocess.SubprocessError):
        raise BaseUnavailable(f"the baseline's commit {commit[:12]} is not in this checkout's "
                              "history (a shallow clone?)") from None
    try:
        archive = _git(repo, "archive", "--format=tar", commit, binary=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BaseUnavailable(f"git archive {commit[:12]} failed: {exc}") from None
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def start_base_sweep(tree: Path, config_source: Path, run: RunDir) -> subprocess.Popen:
    """``ift-bench run`` of the base tree on the current config into ``run``'s base run, one
    point at a time, its timed sections under ``run``'s timing lock; its output goes to
    ``run``'s base log."""
    # absolute: the base runs in its own tree
    tree, run = tree.resolve(), RunDir(run.path.resolve())
    env = {**os.environ, "PYTHONPATH": str(tree), TIMING_LOCK_ENV: str(run.timing_lock_file)}
    log = open(run.base_log_file, "wb")  # noqa: SIM115 — closed by the caller's wait
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "suite", "run", "--config", str(config_source),
             "--results", str(run.path), "--run-id", run.base_run.name, "--jobs", "1",
             "--no-progress"],
            cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # our interrupt reaches it as a SIGTERM, once
    finally:
        log.close()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def reference_from_run(run_dir: Path) -> gate.TimeReference:
    """The base run beside ``run_dir`` as the paired path's reference."""
    run = RunDir(run_dir)
    try:
        commit = run.base_commit_file.read_text(encoding="utf-8").strip() or None
    except OSError:
        commit = None
    return gate.paired_reference(run.base_run.frame(), str(run.base_run.path), commit)


def judge_existing(run_dir: Path, baseline: dict[str, Any],
                   time_dir: Path = gate.DEFAULT_TIME_DIR
                   ) -> tuple[gate.TimeReference | None, str | None, dict[str, Any] | None]:
    """``gate --run RUN_DIR``: time's reference for a run measured earlier (its machine's time
    baseline, or the base run beside it), or why there is none; and the run's fingerprint."""
    fingerprint = run_fingerprint(run_dir)
    if fingerprint is None:
        return None, "the run records no machine fingerprint (made before fingerprints)", None
    time_plan = plan(fingerprint, baseline, time_dir)
    if time_plan.method == "same-machine":
        return gate.load_time_baseline(time_plan.time_file), None, fingerprint
    if RunDir(run_dir).base_run.records_file.is_file():
        return reference_from_run(run_dir), None, fingerprint
    reason = time_plan.reason or (
        f"no time baseline for the run's machine ({fingerprint['slug']}) and no base run beside "
        f"it ({RunDir.BASE_RUN}/): `gate` without --run measures one")
    return None, reason, fingerprint


def run_fingerprint(run_dir: Path) -> dict[str, Any] | None:
    """The fingerprint a run's meta.json recorded, if any."""
    try:
        fingerprint = RunDir(run_dir).read_meta()["environment"]["fingerprint"]
    except (UsageError, KeyError, TypeError):  # no meta.json, a damaged one, or made before
        return None
    return fingerprint if isinstance(fingerprint, dict) and "slug" in fingerprint else None


def measure(config: SweepConfig, results: Path, baseline: dict[str, Any], *,
            time_dir: Path = gate.DEFAULT_TIME_DIR, jobs: int = 2, progress: bool = True,
            fingerprint: dict[str, Any], say: Callable[[str], None] = print) -> GateSweep:
    """The gate's sweep of ``config``, and the base commit's beside it where the plan is
    ``paired``; time's reference (or why there is none) with it."""
    time_plan = plan(fingerprint, baseline, time_dir)
    if time_plan.method != "paired":
        result = run_sweep(config, results, jobs=jobs, progress=progress)
        reference, reason = None, time_plan.reason
        if time_plan.method == "same-machine" and not result.interrupted:
            reference = gate.load_time_baseline(time_plan.time_file)
        return GateSweep(result.run_dir, result.interrupted, reference, reason, fingerprint)

    commit = time_plan.commit
    say(f"gate: no time baseline for this machine ({fingerprint['slug']}); measuring the "
        f"baseline's commit {commit[:12]} beside this code, one point each at a time")
    state: dict[str, Any] = {}

    def start(run_dir: Path) -> None:
        run = RunDir(run_dir)
        try:
            if config.source is None:
                raise BaseUnavailable("the config has no file the base commit could read")
            extract_commit(commit, run.base_tree)
            run.base_commit_file.write_text(commit + "\n", encoding="utf-8")
            state["process"] = start_base_sweep(run.base_tree, Path(config.source).resolve(),
                                                run)
        except BaseUnavailable as exc:
            state["reason"] = str(exc)
            shutil.rmtree(run.base_tree, ignore_errors=True)

    result = run_sweep(config, results, jobs=1, progress=progress, share_timing_lock=True,
                       started=start)
    process: subprocess.Popen | None = state.get("process")
    run = RunDir(result.run_dir)
    if result.interrupted:
        if process is not None:
            _stop(process)
        shutil.rmtree(run.base_tree, ignore_errors=True)
        return GateSweep(result.run_dir, True, None, "interrupted", fingerprint)
    reason = state.get("reason")
    if process is not None:
        if progress and process.poll() is None:
            say("gate: waiting for the base commit's sweep to finish")
        try:
            returncode = process.wait()
        except KeyboardInterrupt:
            _stop(process)
            shutil.rmtree(run.base_tree, ignore_errors=True)
            return GateSweep(result.run_dir, True, None, "interrupted", fingerprint)
        shutil.rmtree(run.base_tree, ignore_errors=True)
        if not run.base_run.records_file.is_file():
            reason = (f"the base commit {commit[:12]} could not run the config (exit "
                      f"{returncode}): {_tail(run.base_log_file)[:300]}")
    if reason is not None:
        return GateSweep(result.run_dir, False, None, reason, fingerprint)
    return GateSweep(result.run_dir, False, reference_from_run(result.run_dir), None,
                     fingerprint)


def confirm_time(config: SweepConfig, results: Path, run_dir: Path, outcome: gate.GateResult,
                 baseline: dict[str, Any], *, jobs: int = 2, progress: bool = True,
                 say: Callable[[str], None] = print) -> None:
    """Measure each cell with a time finding again, ``gate.TIME_CONFIRMATIONS`` times, each
    time in a fresh process (a sweep of those cells alone, ``RUN_DIR-confirm-<i>``), and keep
    the finding only where every one fails the time rule too (``gate.clear_unconfirmed``): a
    compiled program's ratio can sit in a mode fixed per process that the baseline's processes
    did not show, and one process cannot tell that from a regression."""
    cells = {f.cell for f in outcome.failures if f.metric == "time_ratio"}
    if not cells or outcome.time_reference is None:
        return
    frame = RunDir(run_dir).frame()
    grids = tuple(
        Grid(n=(int(row["n"]),), K=(int(row["K"]),), problems=(row["problem"],),
             backends=(row["backend"],), frameworks=(row["framework"],), dtypes=(row["dtype"],),
             options=dict(row["options"] or {}))
        for _, row in frame[frame["status"] == "ok"].iterrows() if gate.cell_key(row) in cells)
    again = replace(config, grids=grids)
    say(f"gate: {len(cells)} time finding(s); measuring those cells again in fresh processes "
        f"({gate.TIME_CONFIRMATIONS}×)")
    frames = []
    for i in range(gate.TIME_CONFIRMATIONS):
        result = run_sweep(again, results, jobs=jobs, progress=progress,
                           run_id=f"{run_dir.name}-confirm-{i + 1}")
        if result.interrupted:
            return
        frames.append(RunDir(result.run_dir).frame())
    gate.clear_unconfirmed(outcome, baseline, frames)

