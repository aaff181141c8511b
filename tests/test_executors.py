"""Where points run: the fork server keeps every point in a process of its own, and the Ray
executor (a real local cluster, no mocks) loses and duplicates nothing when a node's worker
dies, and stops when asked."""

from __future__ import annotations

import glob
import os
import signal
import sys
import threading
import time

import psutil
import pytest

from suite.cli import main
from suite.config import build_config
from suite.records import read_records
from suite.sweep import run_sweep

from .helpers import require_ray

pytestmark = pytest.mark.slow

DETERMINISTIC = ("trace_bytes", "step_evals", "vjp_evals", "jvp_evals", "hvp_evals",
                 "solver_iters", "grad_rel_error", "grad_error_k_step", "inner_residual",
                 "dim_x", "dim_theta")


def _config(name, K, backends=("unrolled",), frameworks=("torch",)):
    return build_config({"name": name, "problems": ["gd"], "backends": list(backends),
                         "frameworks": list(frameworks), "repeats": 2, "timeout_s": 300,
                         "grid": [{"n": [10], "K": list(K)}]}, name=name)


def _by_K(run_dir):
    records = read_records(run_dir / "records.jsonl")
    assert len({r.point_key for r in records}) == len(records), "a point was recorded twice"
    return {(r.framework, r.backend, r.K): r for r in records}


# ---- the local executor's fork server --------------------------------------------------------
def test_a_point_that_leaks_does_not_change_the_next_points_memory(monkeypatch, tmp_path):
    """K = 2 keeps 512 MiB resident before it measures; K = 3, forked next from the same
    server, must see none of it: its peak equals a sweep's without the leak, byte for byte,
    and its process high-water mark is not 512 MiB higher."""
    config = _config("leak", [1, 2, 3])
    clean = _by_K(run_sweep(config, tmp_path / "clean", progress=False).run_dir)
    monkeypatch.setenv("IFT_BENCH_FAULT", "2=leak")
    leaky = _by_K(run_sweep(config, tmp_path / "leaky", progress=False).run_dir)
    key2, key3 = ("torch", "unrolled", 2), ("torch", "unrolled", 3)
    assert leaky[key2].status == leaky[key3].status == "ok"
    # the leak is real: the leaking point's own process high-water mark carries it
    assert leaky[key2].rss_peak_bytes - clean[key2].rss_peak_bytes > 400 * 2**20
    assert leaky[key3].peak_bytes == clean[key3].peak_bytes
    assert abs(leaky[key3].rss_peak_bytes - clean[key3].rss_peak_bytes) < 100 * 2**20


def test_fork_and_spawn_launchers_record_the_same_deterministic_meters(tmp_path):
    # one K per framework: a launcher changes how the worker starts, not what a K measures
    config = _config("launchers", [50], backends=("checkpoint-binomial",),
                     frameworks=("torch", "jax"))
    forked = _by_K(run_sweep(config, tmp_path / "fork", progress=False).run_dir)
    spawned = _by_K(run_sweep(config, tmp_path / "spawn", progress=False,
                              executor_options={"launcher": "spawn"}).run_dir)
    assert forked.keys() == spawned.keys() and len(forked) == 2
    for key, record in forked.items():
        assert record.status == "ok", record.error
        for name in DETERMINISTIC:
            assert getattr(record, name) == getattr(spawned[key], name), (key, name)


# ---- the Ray executor ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray cluster of 2 CPUs whose workers see the fault table of these tests:
    K = 7 hangs on its first try only, K = 9 hangs on every try."""
    ray = require_ray()
    marker = tmp_path_factory.mktemp("ray") / "hung-once"
    ray.marker = marker
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"IFT_BENCH_FAULT": "7=hang-once,9=hang",
                                       "IFT_BENCH_FAULT_MARKER": str(marker)}})
    yield ray
    ray.shutdown()


def _hung_worker(K: int, marker, deadline_s: float = 180,
                 exclude: int | None = None, since: float = 0.0) -> psutil.Process:
    """The live worker process of the point with this K (not ``exclude``), once it has
    reached its hang: it announces that with ``<marker>.hanging-K<K>-<pid>``, written after
    ``since`` (epoch seconds; an earlier test's hung worker may still be alive)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for path in glob.glob(f"{marker}.hanging-K{K}-*"):
            if os.path.getmtime(path) < since:
                continue
            pid = int(path.rsplit("-", 1)[1])
            try:
                proc = psutil.Process(pid)
                if pid != exclude and proc.status() != psutil.STATUS_ZOMBIE and proc.parent():
                    return proc
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.2)
    raise AssertionError(f"no hung worker for K={K} appeared")


def _ray_worker_of(proc: psutil.Process) -> psutil.Process:
    """The Ray worker process whose task runs ``proc``: its parent, or its grandparent when
    ``proc`` was forked by the worker's fork server."""
    parent = proc.parent()
    if "suite.executors.forkserver" in " ".join(parent.cmdline()):
        parent = parent.parent()
    return parent


def _kill_node_worker_of(K: int, marker) -> int:
    """SIGKILL the Ray worker process running the hung point with this K; return its pid."""
    worker = _ray_worker_of(_hung_worker(K, marker))
    os.kill(worker.pid, signal.SIGKILL)
    return worker.pid


def test_a_node_worker_killed_mid_point_costs_one_retry_and_nothing_else(ray_cluster,
                                                                         tmp_path):
    config = _config("lost", [5, 7, 8])
    killed: list[int] = []
    killer = threading.Thread(
        target=lambda: killed.append(_kill_node_worker_of(7, ray_cluster.marker)))
    killer.start()
    result = run_sweep(config, tmp_path, jobs=2, progress=False, executor="ray")
    killer.join()
    assert killed, "the test never killed a worker"
    records = _by_K(result.run_dir)
    assert sorted(k[2] for k in records) == [5, 7, 8]
    assert {k[2]: r.status for k, r in records.items()} == {5: "ok", 7: "ok", 8: "ok"}
    assert all(r.node for r in records.values())


def test_a_point_whose_node_is_lost_twice_is_an_error_record(ray_cluster, tmp_path):
    config = _config("lost-twice", [9])
    killed: list[int] = []

    def kill_twice():
        first = _hung_worker(9, ray_cluster.marker)
        os.kill(_ray_worker_of(first).pid, signal.SIGKILL)
        second = _hung_worker(9, ray_cluster.marker, exclude=first.pid)  # the retry's
        os.kill(_ray_worker_of(second).pid, signal.SIGKILL)
        killed.append(2)

    killer = threading.Thread(target=kill_twice)
    killer.start()
    result = run_sweep(config, tmp_path, jobs=1, progress=False, executor="ray")
    killer.join()
    assert killed == [2]
    (record,) = _by_K(result.run_dir).values()
    assert record.status == "error"
    assert "lost 2 times" in record.error and "WorkerCrashedError" in record.error


def test_interrupting_a_ray_sweep_cancels_its_tasks_and_keeps_finished_records(ray_cluster,
                                                                               tmp_path):
    """K = 5 finishes; K = 9 hangs until the sweep is interrupted (what Ctrl-C does: the
    executor's kill_all cancels every task in flight); the sweep stops, keeps K = 5 and records
    nothing for the cancelled point (``--resume`` measures it again)."""
    from suite.executors.ray import RayExecutor

    executor = RayExecutor()
    config = _config("cancel", [5, 9])

    started = time.time()

    def interrupt_when_hung():
        _hung_worker(9, ray_cluster.marker, since=started)
        executor.kill_all()

    threading.Thread(target=interrupt_when_hung, daemon=True).start()
    result = run_sweep(config, tmp_path, jobs=1, progress=False, executor=executor)
    assert result.interrupted  # not K = 9's timeout record 300 s later
    records = _by_K(result.run_dir)
    assert [k[2] for k in records] == [5] and records[("torch", "unrolled", 5)].status == "ok"


def test_executor_errors_are_one_line(tmp_path, capsys, monkeypatch):
    args = ["run", "--problem", "gd", "--backend", "unrolled", "--framework", "torch",
            "--n", "4", "--K", "2", "--results", str(tmp_path), "--no-progress"]
    assert main([*args, "--address", "auto"]) == 2
    assert "--address: only applies to --executor ray" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    assert main([*args, "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "--executor: ray is not installed" in err and "pip install -e '.[ray]'" in err
    assert list(tmp_path.iterdir()) == []  # refused before a run directory was made
