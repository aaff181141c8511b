"""Child-process entry point: ``python -m suite.worker SPEC.json OUT.json``.

Runs one point in a fresh interpreter with the limits of its spec (address-space cap, CPU
affinity) and writes exactly one record to OUT.json, whatever happens. Heavy imports happen
inside ``main`` so that memory-profiler's spawned sampler does not re-import torch or JAX.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

OOM_MARKERS = ("MemoryError", "can't allocate memory", "Cannot allocate memory",
               "RESOURCE_EXHAUSTED", "out of memory", "std::bad_alloc", "CUDA out of memory")


def failure_status(text: str, returncode: int | None = None) -> str:
    """The status of a point that failed: ``oom`` when ``text`` (the worker's traceback, or
    the stderr of a worker that died without a record) names a failed allocation, or when the
    worker was SIGKILLed unasked (``returncode``: the kernel's OOM killer is the usual sender),
    else ``error``. The one place a failure is classified, in the worker and in the executor
    that outlived it."""
    import signal

    if any(marker in text for marker in OOM_MARKERS):
        return "oom"
    if returncode is not None and returncode == -signal.SIGKILL:
        return "oom"
    return "error"

#: test-only fault injection, e.g. ``IFT_BENCH_FAULT="crash"`` or ``"10=crash,20=hang,30=oom"``
#: (faults keyed by K); see tests/test_isolation.py
FAULT_ENV = "IFT_BENCH_FAULT"


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this worker if the sweep process dies (even by SIGKILL),
    since the worker runs in its own session and would otherwise outlive it."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _apply_limits(spec: dict) -> None:
    _die_with_parent()
    cpus = spec.get("cpus")
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))


def _load_framework(framework: str, device: str, dtype: str) -> None:
    """Import the point's framework and start its runtime, before the memory cap: the cap
    bounds what the measurement allocates, not the framework's own libraries."""
    import memray  # noqa: F401 — its shared libraries are mapped now, not under the cap
    import numpy as np

    import suite.measure  # noqa: F401
    from suite.frameworks import registry

    fw = registry()[framework](device, dtype)
    fw.synchronize(fw.asarray(np.zeros(1)))


def address_space_bytes() -> int:
    """This process's virtual address space now (VmSize), 0 where it cannot be read."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _apply_memory_cap(cap: int | None) -> None:
    """Cap the address space at what is mapped now (interpreter, frameworks) plus ``cap``: an
    allocation the measured work makes beyond ``cap`` fails (MemoryError, XLA's
    RESOURCE_EXHAUSTED: status ``oom``)."""
    if cap:
        import resource

        limit = address_space_bytes() + int(cap)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


_LEAKED: list = []
#: test-only: with ``hang-once``, the file whose existence means "hung once already"; with any
#: hang, ``<marker>.hanging-K<K>-<pid>`` announces that this process has reached its hang
FAULT_MARKER_ENV = "IFT_BENCH_FAULT_MARKER"


def _hang(K: int) -> None:
    import time

    marker = os.environ.get(FAULT_MARKER_ENV)
    if marker:
        open(f"{marker}.hanging-K{K}-{os.getpid()}", "w").close()
    time.sleep(10**6)


def _process_started(spec: dict) -> float | None:
    """Epoch seconds at which the executor asked for this process (None where unknown).

    The launcher's own clock reading, not the kernel's process start time: psutil derives
    that from the boot time, which /proc gives in whole seconds, so it is off by up to 1 s."""
    launched = spec.get("launched_at")
    return float(launched) if launched is not None else None


def _inject_fault(K: int) -> None:
    raw = os.environ.get(FAULT_ENV, "").strip()
    if not raw:
        return
    fault = raw
    if "=" in raw:
        table = dict(item.split("=", 1) for item in raw.split(","))
        fault = table.get(str(K), "")
    if fault == "crash":
        os.abort()
    elif fault == "hang":
        _hang(K)
    elif fault == "oom":
        import numpy as np

        cap = int(os.environ.get("IFT_BENCH_FAULT_BYTES", 2**40))
        np.ones(cap // 8)  # beyond the cap: MemoryError
    elif fault == "exit":
        os._exit(3)  # dies without writing a record
    elif fault == "leak":  # keeps 512 MiB resident for the rest of this process, then measures
        import numpy as np

        _LEAKED.append(np.ones(2**26))
    elif fault == "hang-once":  # hangs unless the marker file exists, which it creates
        marker = os.environ[FAULT_MARKER_ENV]
        if not os.path.exists(marker):
            open(marker, "w").close()
            _hang(K)


def main(argv: list[str]) -> int:
    import multiprocessing

    # memory-profiler samples RSS from a helper process; fork would copy JAX's threads.
    multiprocessing.set_start_method("spawn", force=True)
    spec_path, out_path = argv
    with open(spec_path, encoding="utf-8") as fh:
        spec = json.load(fh)
    _apply_limits(spec)

    from pathlib import Path

    from suite.point import Point, Settings
    from suite.records import Record, write_json

    point = Point.from_json(spec["point"])
    settings = Settings(**spec["settings"])
    try:
        _load_framework(point.framework, point.device, point.dtype)
        # what the imports and the runtime made lives as long as the process: moved out of
        # the collector's reach, so each gc.collect() in the timed loop scans only the
        # point's own objects (0.16-0.19 s a collection otherwise, here, with torch and JAX)
        import gc

        gc.collect()
        gc.freeze()
        _apply_memory_cap(settings.memory_cap_bytes)
        _inject_fault(point.K)
        from suite.measure import measure

        # measure() parses the point once more (suite.program.prepare → validate_point): the
        # executor that wrote the spec validated it (suite.executors.Executor.run), but this
        # is another process (a fresh interpreter, or a fork of a server that never saw the
        # point), the parse yields the options in their declared types (Option.parse: any
        # type, which the JSON spec would not carry faithfully), and prepare() has callers
        # of its own (measure's paired strategy, check, tests); it costs little beside the
        # problem's import, which the worker needs anyway
        dump = spec.get("dump_dir")
        record = measure(point, settings, Path(dump) if dump else None,
                         process_started=_process_started(spec))
    except BaseException as exc:  # noqa: BLE001 — every failure becomes a record
        text = "".join(traceback.format_exception(exc))
        record = Record.for_point(
            point, settings, status=failure_status(text),
            error=f"{type(exc).__name__}: {exc}"[:2000] + "\n" + text[-3000:])
    write_json(Path(out_path), record.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
