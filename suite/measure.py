"""The meters and the measurement protocol of one point (runs inside the isolated worker).

Order, for one point: warm-up call (untimed; its excess over the median is JAX's ``compile_s``),
R interleaved timed repeats of the gradient and of the forward solve, one call under the peak
meter (memray on CPU, the device allocator on accelerators), one call under memory-profiler's
RSS sampler, the deterministic ``trace_bytes`` meter, the counting pass, then accuracy against
the problem's float64 reference. Every meter sees the same compiled program.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import backends
from backends.base import Run
from problems.base import REFERENCE_KINDS
from suite import references
from suite.frameworks import registry as framework_registry
from suite.intervals import median_interval
from suite.plugin.errors import UnsupportedError
from suite.plugin.framework import COUNT_KINDS, Framework, OpCounter
from suite.point import Point, Settings
from suite.program import prepare
from suite.records import Record
from suite.timing import timing_lock

# the strategies load with the meters: a worker forked from a process that imported this module
# (the fork server preloads it) starts with them imported, so that no import runs between the
# fork and the meters that could perturb them (under memray a JAX point's peak_bytes was seen
# to move by kilobytes in some runs when the strategy modules were imported after the fork)
backends.registry()


def memray_peak_bytes(fn: Callable[[], Any]) -> int:
    """Allocator high-water mark of ``fn()`` above the bytes live when it started.

    memray intercepts malloc/posix_memalign/mmap and (with ``trace_python_allocators``)
    pymalloc, so it sees torch's and XLA's native buffers and Python objects byte for byte;
    allocations made before tracking starts are not counted.
    """
    import memray

    with tempfile.TemporaryDirectory(prefix="ift-bench-memray-") as tmp:
        capture = Path(tmp) / "capture.bin"
        with memray.Tracker(capture, native_traces=False, trace_python_allocators=True,
                            follow_fork=False):
            out = fn()
            del out
        return int(memray.FileReader(capture).metadata.peak_memory)


def rss_peak_bytes(fn: Callable[[], Any]) -> int:
    """Process resident-set high-water mark while ``fn()`` runs (whole process, not above a
    baseline: pages the imports made resident count too).

    Linux: the kernel's own high-water mark — reset by writing 5 to /proc/self/clear_refs,
    read back as VmHWM — exact, and without the helper process a sampler needs. Elsewhere
    memory-profiler's sampler (2 ms; it can miss a short peak).
    """
    if _reset_rss_high_water_mark():
        fn()
        return _rss_high_water_mark()
    return _sampled_rss_peak_bytes(fn)


def _reset_rss_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _rss_high_water_mark() > 0
    except OSError:
        return False


def _rss_high_water_mark() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _sampled_rss_peak_bytes(fn: Callable[[], Any]) -> int:
    import multiprocessing

    from memory_profiler import memory_usage

    # memory-profiler samples from a helper process; forking a process that runs JAX's or
    # torch's threads can deadlock, so the helper is always spawned
    previous = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("spawn", force=True)
    try:
        peak_mib = memory_usage((fn, (), {}), max_usage=True, interval=0.002,
                                include_children=False, backend="psutil")
    finally:
        multiprocessing.set_start_method(previous, force=True)
    return int(float(np.max(peak_mib)) * 2**20)


def _timed(fw: Framework, fn: Callable[[], Any]) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        fw.synchronize(fn())
        return time.perf_counter() - start
    finally:
        gc.enable()


def _scalar(value: np.ndarray) -> Any:
    """0-d aux arrays as plain JSON numbers (bools stay bools, integral floats ints)."""
    value = np.asarray(value)
    if value.dtype == bool:
        return bool(value)
    item = value.item()
    if isinstance(item, float) and item.is_integer() and abs(item) < 2**53:
        return int(item)
    return item


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b) / denom) if denom > 0 else float(np.linalg.norm(a - b))


#: ABBA blocks of the paired time ratio (four gradient calls each)
PAIRED_BLOCKS = 11
def _paired_program(prep: Any, settings: Settings) -> Callable[[], Any] | None:
    """The gradient ``settings.pair_with`` is timed against, compiled and warmed up (outside
    the timing lock: compiling it is not timed work), as a call; None when it is this one."""
    if settings.pair_with is None or settings.pair_with == prep.point.backend:
        return None
    from dataclasses import replace as _replace

    fw = prep.fw
    # the options the other strategy reads too (a peer and ours share tol, restart, …)
    declared = ({o.name for o in prep.problem.options}
                | {o.name for o in backends.registry()[settings.pair_with].options})
    other = prepare(_replace(prep.point, backend=settings.pair_with,
                             options={k: v for k, v in prep.point.options.items()
                                      if k in declared}))
    other_fn = fw.compile_shared(other.gradient_program(), other.theta, other.arrays)
    fw.synchronize(other_fn(other.theta, other.arrays))  # warm-up / compile
    return lambda: other_fn(other.theta, other.arrays)


def _ratio_interval(ratios: list[float] | None) -> dict[str, float | None]:
    """``time_ratio_low`` and ``time_ratio_high``: the median's 95 % interval over the blocks."""
    if not ratios:
        return {"time_ratio_low": None, "time_ratio_high": None}
    interval = median_interval(ratios)
    return {"time_ratio_low": interval.low, "time_ratio_high": interval.high}


def _paired_ratios(fw: Any, own_call: Callable[[], Any], other_call: Callable[[], Any] | None,
                   settings: Settings) -> list[float] | None:
    """One ratio per ABBA block: the two gradients timed alternately in this process, B A then
    A B, and the block's ratio Σ t_self / Σ t_other. Load that comes and goes — a neighbouring
    point, a page-cache flush — hits both halves of a block alike, and so does the cost of
    switching programs: whichever gradient runs first after the other pays it (seen here: torch
    ift-cg's first call after unrolled's 2.2× its second), and in a block each pays it once.
    (Per-pair ratios instead split into two modes by order, and their median jumps between the
    modes.) The median of the blocks is the gate's time measure; None when a strategy is paired
    with itself (its ratio is 1)."""
    if other_call is None:
        return None
    ratios = []
    for _ in range(max(settings.repeats, PAIRED_BLOCKS)):
        theirs = _timed(fw, other_call)
        own = _timed(fw, own_call) + _timed(fw, own_call)
        theirs += _timed(fw, other_call)
        ratios.append(own / theirs)
    return ratios


class Phases:
    """Seconds spent in each phase of a point, accumulated between ``mark`` calls.

    ``process_started``: the epoch time the isolating process started, charged as ``start``."""

    def __init__(self, process_started: float | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()
        if process_started is not None:
            self.seconds["start"] = max(0.0, time.time() - process_started)

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = now


def measure(point: Point, settings: Settings, dump_dir: Path | None = None,
            process_started: float | None = None) -> Record:
    """Measure one point in this process, meter by meter in the module docstring's order (the
    order matters: each meter sees the caches the ones before it left). The caller isolates it
    in a fresh process (``suite.worker``).

    ``process_started``: the epoch time the isolating process started, so that the record's
    ``phases_s["start"]`` charges process start-up and imports to the harness."""
    framework_registry()[point.framework].configure_threads(settings.threads)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    wall_start = time.perf_counter()
    phases = Phases(process_started)
    prep = prepare(point)
    phases.mark("prepare")
    programs = _Programs.compiled(prep)
    first = _first_call(prep, programs)
    phases.mark("first_call")
    timing = _timed_repeats(prep, programs, settings, phases)
    peak, peak_method = _device_peak(prep, programs)
    if peak is None:  # memray called from here: the stack it sees is part of what it counts
        peak, peak_method = memray_peak_bytes(programs.call_gradient), "memray"
    phases.mark("peak")
    rss = rss_peak_bytes(programs.call_gradient) if point.device == "cpu" else None
    phases.mark("rss")
    trace, trace_note, counts = _trace_and_counts(prep, programs, phases)
    accuracy = _accuracy(prep, first)
    phases.mark("references")
    run = _diagnose(prep, first, counts, accuracy)
    if dump_dir is not None:
        _dump(prep, accuracy.gradient, dump_dir)
    return _record(prep, settings, first, timing, peak, peak_method, rss, trace, trace_note,
                   counts, accuracy, run, started=started,
                   wall_s=time.perf_counter() - wall_start, phases=phases)


@dataclass
class _Programs:
    """The point's compiled gradient (timed) and forward (x_K, ``forward_time_s``), and
    ``call_gradient``, the gradient called and synchronised, which the memory meters run."""

    raw_gradient: Callable[[Any, Any], Any]
    gradient: Callable[[Any, Any], Any]
    forward: Callable[[Any, Any], Any]
    call_gradient: Callable[[], Any]

    @classmethod
    def compiled(cls, prep: Any) -> _Programs:
        fw, theta, arrays = prep.fw, prep.theta, prep.arrays
        raw_gradient = prep.gradient_program()
        grad_fn = fw.compile(raw_gradient)
        fwd_fn = fw.compile_shared(prep.forward_program(), theta, arrays)

        # a closure over locals, not a method: the peak meter counts the Python allocations
        # of the call itself, and a bound method's attribute reads would add to them
        def call_gradient() -> Any:
            out = grad_fn(theta, arrays)
            fw.synchronize(out)
            return out

        return cls(raw_gradient, grad_fn, fwd_fn, call_gradient)


@dataclass
class _FirstCall:
    """The warm-up call's outputs (they serve accuracy and diagnostics) and its time."""

    grad: Any
    aux: dict[str, Any]
    seconds: float
    x_K: Any


def _first_call(prep: Any, programs: _Programs) -> _FirstCall:
    """The warm-up call, untimed (under JAX it compiles), then the forward's x_K."""
    fw, theta, arrays = prep.fw, prep.theta, prep.arrays
    start = time.perf_counter()
    grad, aux = programs.gradient(theta, arrays)
    fw.synchronize((grad, aux))
    first_call_s = time.perf_counter() - start
    loss_K, x_K = programs.forward(theta, arrays)
    fw.synchronize((loss_K, x_K))
    return _FirstCall(grad, aux, first_call_s, x_K)


@dataclass
class _Timing:
    times: list[float]
    forward_times: list[float]
    ratio: float | None
    ratios: list[float] | None


def _timed_repeats(prep: Any, programs: _Programs, settings: Settings,
                   phases: Phases) -> _Timing:
    """R interleaved timed repeats of the gradient and of the forward (so that drift affects
    both alike), then the paired ABBA blocks against ``settings.pair_with``, under the timing
    lock."""
    fw, theta, arrays = prep.fw, prep.theta, prep.arrays
    paired = _paired_program(prep, settings) if settings.pair_with is not None else None
    # the compiled programs and their caches outlive the timed loop: frozen, they are not
    # rescanned by the collection before every timed call
    gc.collect()
    gc.freeze()
    phases.mark("first_call")
    with timing_lock():
        phases.mark("lock_wait")  # a parallel point's timed section ran meanwhile
        # made before the timed calls: after their last collection, nothing is allocated on
        # the way to the peak meter that the collector counts (its next run would move)
        timing = _Timing([], [], None, None)
        for _ in range(settings.repeats):
            timing.times.append(_timed(fw, lambda: programs.gradient(theta, arrays)))
            if not prep.strategy.own_solver:
                timing.forward_times.append(_timed(fw, lambda: programs.forward(theta, arrays)))

        if settings.pair_with is not None:
            timing.ratios = _paired_ratios(fw, lambda: programs.gradient(theta, arrays),
                                           paired, settings)
            timing.ratio = statistics.median(timing.ratios) if timing.ratios else 1.0
    phases.mark("timed")
    return timing


def _device_peak(prep: Any, programs: _Programs) -> tuple[int | None, str | None]:
    """One gradient call under the device allocator's peak meter, where the framework has one
    (accelerators); (None, None) where it has none and memray meters the call instead."""
    device_peak = prep.fw.device_peak_bytes(programs.call_gradient)
    if device_peak is None:
        return None, None
    return device_peak, f"{prep.point.framework}-{prep.point.device}-allocator"


#: dim x above which a framework that cannot count while tracing (JAX: a second program with
#: host callbacks) skips the counting pass: at imaml n = 16384 (dim x 1.15 M, K = 30) it took
#: 2.0 s against 3.4 s for the timed repeats themselves; the counts of smaller sizes give the
#: laws (step_evals = K, …), which do not change with n
COUNTING_MAX_DIM = 2 ** 18


def _trace_and_counts(prep: Any, programs: _Programs,
                      phases: Phases) -> tuple[int | None, str | None, dict[str, Any]]:
    """``trace_bytes`` (or why it cannot be metered) and the counting pass's counts."""
    fw, theta, arrays = prep.fw, prep.theta, prep.arrays
    # a tape the meter cannot see is recorded as unmeasured, with why, never as a smaller number
    trace_note = prep.strategy.trace_unmeasurable(prep.point.framework)
    counter = OpCounter()
    if fw.counts_while_tracing and trace_note is None:
        # one run of the counting program under the tape meter gives both (the counters
        # save no tensor): a gradient's time saved, which for eager torch is the whole call
        with fw.counting(counter):
            trace = int(fw.trace_bytes(fw.compile(prep.gradient_program()), theta, arrays))
        phases.mark("trace")
    else:
        trace = None if trace_note is not None else \
            int(fw.trace_bytes(programs.raw_gradient, theta, arrays))
        phases.mark("trace")
        if counts_note(prep) is not None:
            phases.mark("counting")
            return trace, trace_note, dict.fromkeys(counter.snapshot())
        with fw.counting(counter):
            counted_fn = fw.compile_for_counting(prep.gradient_program(), theta, arrays)
            fw.synchronize(counted_fn(theta, arrays))
    counts = counter.snapshot()
    phases.mark("counting")
    return trace, trace_note, counts


def counts_note(prep: Any) -> str | None:
    """Why a point has no exact counts (None: it has them)."""
    if prep.fw.counts_while_tracing or prep.dim_x <= COUNTING_MAX_DIM:
        return None
    return (f"counting pass skipped: dim x = {prep.dim_x} > {COUNTING_MAX_DIM}, where a second "
            f"{prep.point.framework} program (compiled unoptimised, with a host callback per "
            "counted operation) costs as much as the measured gradients")


@dataclass
class _Accuracy:
    gradient: np.ndarray
    #: relative error against each reference kind (None: no such reference here)
    errors: dict[str, float | None]
    warnings: list[str]
    residual: float | None


def _accuracy(prep: Any, first: _FirstCall) -> _Accuracy:
    """The gradient against the problem's float64 references, and ‖F(θ, x_K)‖."""
    problem, instance, K = prep.problem, prep.instance, prep.point.K
    grad_np = prep.fw.to_numpy(first.grad)
    warnings: list[str] = []
    # the problem's own references, or the suite's (suite.references) where it has none; a
    # reference the suite cannot compute (no solution found) is a warning, not a dead point
    errors: dict[str, float | None] = {}
    for kind in REFERENCE_KINDS:
        try:
            ref = references.reference_gradient(problem, instance, K, kind)
            errors[kind] = _rel(grad_np, ref)
        except references.ReferenceUnavailable as exc:
            errors[kind] = None
            warnings.append(f"no {kind} reference: {exc}")
        except Exception as exc:  # noqa: BLE001 — only running out of memory is kept
            if not _out_of_memory(exc):
                raise
            # the measured point finished: a reference that needs more than the cap (a
            # converged solve at scale) costs its error column, not the point
            errors[kind] = None
            warnings.append(f"no {kind} reference: it ran out of memory under the point's "
                            f"cap ({type(exc).__name__}); the measurement itself finished")
    # a strategy running its own solver (qpth) never sees our x_K: our forward's time and
    # residual would describe our solver, not it, so they are recorded as unknown
    residual = None if prep.strategy.own_solver else prep.residual_norm(first.x_K)
    return _Accuracy(grad_np, errors, warnings, residual)


#: how an allocation that failed reads in an exception's text (numpy and torch raise
#: MemoryError under an address-space cap; XLA raises its own error with one of these)
_OOM_TEXT = ("RESOURCE_EXHAUSTED", "bad_alloc", "Cannot allocate memory", "can't allocate memory",
             "out of memory")


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or any(t in str(exc) for t in _OOM_TEXT)


def _diagnose(prep: Any, first: _FirstCall, counts: dict[str, Any],
              accuracy: _Accuracy) -> Run:
    """The program's aux as diagnostics, then the strategy's own checks (``diagnose``)."""
    fw = prep.fw
    aux_np = {k: fw.to_numpy(v) for k, v in first.aux.items()}
    solver_iters = aux_np.pop("solver_iters", None)
    converged = aux_np.pop("solver_converged", None)
    run = Run(prepared=prep, x=fw.to_numpy(first.x_K), gradient=accuracy.gradient,
              adjoint=aux_np.pop("adjoint", None),
              solver_iters=None if solver_iters is None else int(solver_iters),
              converged=None if converged is None else bool(converged),
              counts=counts, residual=accuracy.residual,
              gradient_of=lambda backend, options: _strategy_gradient(prep, backend, options),
              diagnostics={k: _scalar(v) for k, v in aux_np.items()},
              warnings=list(accuracy.warnings))
    prep.strategy.diagnose(run)
    return run


def _strategy_gradient(prep: Any, backend: str, options: dict[str, Any]) -> np.ndarray | None:
    """``backend``'s gradient on this point's instance with ``options``, untimed (a peer row's
    counterpart); None where it does not run with them."""
    try:
        other = prepare(replace(prep.point, backend=backend, options=options))
    except UnsupportedError:
        return None
    g, _ = other.fw.compile(other.gradient_program())(other.theta, other.arrays)
    return other.fw.to_numpy(g)


def _dump(prep: Any, grad_np: np.ndarray, dump_dir: Path) -> None:
    dump_dir.mkdir(parents=True, exist_ok=True)
    prep.instance.dump(dump_dir / "instance.npz")
    np.save(dump_dir / "grad.npy", grad_np.reshape(np.shape(prep.instance.theta)))


def _record(prep: Any, settings: Settings, first: _FirstCall, timing: _Timing, peak: int,
            peak_method: str, rss: int | None, trace: int | None, trace_note: str | None,
            counts: dict[str, Any], accuracy: _Accuracy, run: Run, *, started: str,
            wall_s: float, phases: Phases) -> Record:
    point, strategy, problem, instance = prep.point, prep.strategy, prep.problem, prep.instance
    times, errors, diagnostics = timing.times, accuracy.errors, run.diagnostics
    time_s = statistics.median(times)
    return Record.for_point(
        point, settings, status="ok", warnings=run.warnings,
        time_s=time_s, time_min_s=min(times),
        forward_time_s=statistics.median(timing.forward_times) if timing.forward_times else None,
        first_call_s=first.seconds,
        compile_s=max(0.0, first.seconds - time_s) if prep.fw.compiles else None,
        repeats=settings.repeats, times_s=times, time_ratio=timing.ratio,
        time_ratios=timing.ratios, time_ratio_to=settings.pair_with,
        **_ratio_interval(timing.ratios),
        peak_bytes=peak, peak_method=peak_method, trace_bytes=trace, trace_note=trace_note,
        counts_note=counts_note(prep),
        rss_peak_bytes=rss, peer=strategy.peer_label(),
        grad_rel_error=errors[strategy.reference], reference=strategy.reference,
        reference_source=references.reference_source(problem),
        grad_error_k_step=errors["k_step"], grad_error_converged=errors["converged"],
        grad_norm=float(np.linalg.norm(accuracy.gradient)), inner_residual=accuracy.residual,
        solver_converged=run.converged,
        **{k: (counts[k] if (k in strategy.counts or counts[k]) else None) for k in COUNT_KINDS},
        dim_theta=int(np.size(instance.theta)), dim_x=prep.dim_x,
        error_bound=diagnostics.pop("error_bound", None),
        options_resolved={**prep.problem_options, **prep.options}, diagnostics=diagnostics,
        wall_s=wall_s, started_at=started,
        phases_s={k: round(v, 4) for k, v in phases.seconds.items()},
    )
