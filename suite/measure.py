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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from problems.base import REFERENCE_KINDS
from suite import references
from suite.diagnostics import adjoint_diagnostics, counterpart_difference
from suite.frameworks import registry as framework_registry
from suite.plugin.framework import COUNT_KINDS, Framework, OpCounter
from suite.point import Point, Settings
from suite.program import prepare
from suite.records import Record
from suite.timing import timing_lock

#: condition number of ∂F/∂x above which the IFT is flagged as inapplicable (float64)
JACOBIAN_COND_WARNING = 1e12
#: ‖F(θ, x_K)‖ / ‖F(θ, x_0)‖ above which an IFT gradient is flagged as taken off a solution
IFT_RESIDUAL_WARNING = 1e-6


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
    other = prepare(_replace(prep.point, backend=settings.pair_with,
                             options={k: v for k, v in prep.point.options.items()
                                      if k in {o.name for o in prep.problem.options}}))
    other_fn = fw.compile_shared(other.gradient_program(), other.theta, other.arrays)
    fw.synchronize(other_fn(other.theta, other.arrays))  # warm-up / compile
    return lambda: other_fn(other.theta, other.arrays)


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
    """Seconds spent in each phase of a point, accumulated between ``mark`` calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = now


def measure(point: Point, settings: Settings, dump_dir: Path | None = None,
            process_started: float | None = None) -> Record:
    """Measure one point in this process. The caller isolates it (see ``suite.runner``).

    ``process_started``: the epoch time the isolating process started, so that the record's
    ``phases_s["start"]`` charges process start-up and imports to the harness."""
    framework_registry()[point.framework].configure_threads(settings.threads)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    wall_start = time.perf_counter()
    phases = Phases()
    if process_started is not None:
        phases.seconds["start"] = max(0.0, time.time() - process_started)
    prep = prepare(point)
    phases.mark("prepare")
    fw, problem, strategy, instance = prep.fw, prep.problem, prep.strategy, prep.instance
    theta, arrays, opts, K = prep.theta, prep.arrays, prep.options, point.K

    raw_gradient = prep.gradient_program()
    grad_fn = fw.compile(raw_gradient)
    fwd_fn = fw.compile_shared(prep.forward_program(), theta, arrays)

    def call_gradient() -> Any:
        out = grad_fn(theta, arrays)
        fw.synchronize(out)
        return out

    # warm-up (compiles under JAX); its outputs serve accuracy and diagnostics
    start = time.perf_counter()
    grad, aux = grad_fn(theta, arrays)
    fw.synchronize((grad, aux))
    first_call_s = time.perf_counter() - start
    loss_K, x_K = fwd_fn(theta, arrays)
    fw.synchronize((loss_K, x_K))
    phases.mark("first_call")

    paired = _paired_program(prep, settings) if settings.pair_with is not None else None
    # the compiled programs and their caches outlive the timed loop: frozen, they are not
    # rescanned by the collection before every timed call
    gc.collect()
    gc.freeze()
    phases.mark("first_call")
    with timing_lock():
        phases.mark("lock_wait")  # a parallel point's timed section ran meanwhile
        times, fwd_times = [], []
        for _ in range(settings.repeats):  # interleaved so drift affects both alike
            times.append(_timed(fw, lambda: grad_fn(theta, arrays)))
            if not strategy.own_solver:
                fwd_times.append(_timed(fw, lambda: fwd_fn(theta, arrays)))

        time_ratio, time_ratios = None, None
        if settings.pair_with is not None:
            time_ratios = _paired_ratios(fw, lambda: grad_fn(theta, arrays), paired, settings)
            time_ratio = statistics.median(time_ratios) if time_ratios else 1.0
    phases.mark("timed")

    device_peak = fw.device_peak_bytes(call_gradient)
    if device_peak is None:
        peak, peak_method = memray_peak_bytes(call_gradient), "memray"
    else:
        peak, peak_method = device_peak, f"{point.framework}-{point.device}-allocator"
    phases.mark("peak")
    rss = rss_peak_bytes(call_gradient) if point.device == "cpu" else None
    phases.mark("rss")
    # a tape the meter cannot see is recorded as unmeasured, with why, never as a smaller number
    trace_note = strategy.trace_unmeasurable(point.framework)
    counter = OpCounter()
    if fw.counts_while_tracing and trace_note is None:
        # one run of the counting program under the tape meter gives both (the counters
        # save no tensor): a gradient's time saved, which for eager torch is the whole call
        with fw.counting(counter):
            trace = int(fw.trace_bytes(fw.compile(prep.gradient_program()), theta, arrays))
        phases.mark("trace")
    else:
        trace = None if trace_note is not None else \
            int(fw.trace_bytes(raw_gradient, theta, arrays))
        phases.mark("trace")
        with fw.counting(counter):
            counted_fn = fw.compile_for_counting(prep.gradient_program(), theta, arrays)
            fw.synchronize(counted_fn(theta, arrays))
    counts = counter.snapshot()
    phases.mark("counting")

    # accuracy against the float64 reference
    grad_np = fw.to_numpy(grad)
    warnings_refs: list[str] = []
    # the problem's own references, or the suite's (suite.references) where it has none; a
    # reference the suite cannot compute (no solution found) is a warning, not a dead point
    errors: dict[str, float | None] = {}
    for kind in REFERENCE_KINDS:
        try:
            ref = references.reference_gradient(problem, instance, K, kind)
            errors[kind] = _rel(grad_np, ref)
        except references.ReferenceUnavailable as exc:
            errors[kind] = None
            warnings_refs.append(f"no {kind} reference: {exc}")
    # a strategy running its own solver (qpth) never sees our x_K: our forward's time and
    # residual would describe our solver, not it, so they are recorded as unknown
    residual = None if strategy.own_solver else prep.residual_norm(x_K)
    phases.mark("references")

    warnings: list[str] = list(warnings_refs)
    aux_np = {k: fw.to_numpy(v) for k, v in aux.items()}
    solver_iters = aux_np.pop("solver_iters", None)
    solver_iters = None if solver_iters is None else int(solver_iters)
    converged = aux_np.pop("solver_converged", None)
    converged = None if converged is None else bool(converged)
    adjoint = aux_np.pop("adjoint", None)
    diagnostics = {k: _scalar(v) for k, v in aux_np.items()}
    if adjoint is not None:
        diagnostics.update(adjoint_diagnostics(prep, fw.to_numpy(x_K), adjoint))
    difference = counterpart_difference(prep, grad_np)  # peer rows: beside ours, untimed
    if difference is not None:
        diagnostics["grad_rel_diff_ours"] = difference
    if diagnostics.get("reconstruction_exact") is False:
        warnings.append("reversible: the backward pass did not reconstruct x₀ bit for bit")
    if diagnostics.get("buffer_overflow") is True:
        warnings.append("reversible: the information buffer overflowed its capacity")
    if converged is False:
        warnings.append(f"linear solver stopped at maxiter={opts.get('maxiter')} without "
                        f"reaching tol={opts.get('tol')}")
    if solver_iters is not None and solver_iters != counts["solver_iters"]:
        warnings.append(f"solver_iters: program returned {solver_iters}, counting pass saw "
                        f"{counts['solver_iters']}")
    if strategy.reference == "converged" and not strategy.own_solver:
        warnings.extend(problem.ift_warnings(instance, fw.to_numpy(x_K)))
        cond = diagnostics.get("jacobian_cond")
        if cond is not None and not cond < JACOBIAN_COND_WARNING:
            warnings.append(f"∂F/∂x is numerically singular at x_K (condition number {cond:.1e}): "
                            "the IFT does not apply here")
    if strategy.reference == "converged" and residual is not None and \
            residual > IFT_RESIDUAL_WARNING * prep.residual_0:
        warnings.append(f"IFT applied away from a solution: ‖F(θ, x_K)‖ = {residual:.2e} "
                        f"({residual / prep.residual_0:.1e} of ‖F(θ, x_0)‖)")

    if dump_dir is not None:
        dump_dir.mkdir(parents=True, exist_ok=True)
        instance.dump(dump_dir / "instance.npz")
        np.save(dump_dir / "grad.npy", grad_np.reshape(np.shape(instance.theta)))

    time_s = statistics.median(times)
    return Record.for_point(
        point, settings, status="ok", warnings=warnings,
        time_s=time_s, time_min_s=min(times),
        forward_time_s=statistics.median(fwd_times) if fwd_times else None,
        first_call_s=first_call_s,
        compile_s=max(0.0, first_call_s - time_s) if point.framework == "jax" else None,
        repeats=settings.repeats, times_s=times, time_ratio=time_ratio, time_ratios=time_ratios,
        time_ratio_to=settings.pair_with,
        peak_bytes=peak, peak_method=peak_method, trace_bytes=trace, trace_note=trace_note,
        rss_peak_bytes=rss, peer=strategy.peer_label(),
        grad_rel_error=errors[strategy.reference], reference=strategy.reference,
        reference_source=references.reference_source(problem),
        grad_error_k_step=errors["k_step"], grad_error_converged=errors["converged"],
        grad_norm=float(np.linalg.norm(grad_np)), inner_residual=residual,
        solver_converged=converged,
        **{k: (counts[k] if (k in strategy.counts or counts[k]) else None) for k in COUNT_KINDS},
        dim_theta=int(np.size(instance.theta)), dim_x=prep.dim_x,
        error_bound=diagnostics.pop("error_bound", None),
        options_resolved={**prep.problem_options, **opts}, diagnostics=diagnostics,
        wall_s=time.perf_counter() - wall_start, started_at=started,
        phases_s={k: round(v, 4) for k, v in phases.seconds.items()},
    )
