"""The rules of ``ift-bench check``, each a function of the shared context returning
``(status, message)``; ``findings`` runs them in order.

One finding per rule, each ``pass``, ``warn`` or ``fail`` (or ``skip`` where a rule cannot
apply, e.g. torch against JAX for a single-framework problem) with the number that decided it:

1. determinism and shapes: ``generate`` twice with one seed gives identical data; θ and every
   state leaf are float64; ``step`` keeps the state's shapes; x and F = F(θ, x) are vectors of
   one length; ℓ is a scalar.
2. convergence: ‖F(θ, x_K)‖ / ‖F(θ, x₀)‖ ≤ 1e-8 within ``max_K`` steps (the K it took is
   stated), else a warning with the ratio still left at ``max_K``.
3. references: the k_step reference (the problem's own, else the suite's) against float64
   central differences of θ ↦ ℓ(x_K(θ), θ), and the converged one against central differences
   of the solution map θ ↦ ℓ(x_{K*}(θ), θ), K* the steps the solver needs to ‖F‖ ≤ 1e-12.
4. frameworks: torch and JAX give the same x_K and the same unrolled gradient.
5. Jacobian: ∂F/∂x at the solution — asymmetry ‖J − Jᵀ‖/‖J‖, the smallest eigenvalue of its
   symmetric part, its condition number — against the declared ``jacobian_structure``.
6. linear-map trap: the bytes reverse mode keeps per step (trace at 2K minus trace at K, over K)
   against the state's size; almost nothing per step means a (piecewise) linear step.
7. envelope trap: ‖∇ₓℓ(θ, x*)‖ against ‖∇ₓℓ(θ, x₀)‖, and the cosine of ∇ₓℓ and F at x₀: an
   outer loss that is the inner objective makes the implicit term vanish at the optimum.

A rule whose evaluation raises is a ``fail`` naming the exception: a broken problem is the
input this command exists for.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

import problems
from problems.base import Instance, Problem
from suite import references
from suite.frameworks import registry as framework_registry
from suite.point import Point

CONVERGED_RATIO = 1e-8
#: relative error of a reference against central differences: pass below, warn below WARN
FD_PASS, FD_WARN = 1e-6, 1e-4
FD_STEP = 1e-6
FD_COORDS = 6
#: relative torch–JAX difference of x_K and of the unrolled gradient
FRAMEWORK_PASS, FRAMEWORK_WARN = 1e-10, 1e-6
SYMMETRY_TOL = 1e-8
COND_WARN = 1e12
#: reverse mode keeping less than this fraction of the state's bytes per step is "nothing"
LINEAR_FRACTION = 0.5
ENVELOPE_RATIO = 1e-6
PARALLEL_COS = 1.0 - 1e-9
MAX_DENSE_DIM = 2000
#: once converged (rule 2), stop looking for ‖F‖ ≤ 1e-12 after this many steps without a new
#: smallest residual: the solver sits at its rounding floor (an interior point stops moving)
STALL_STEPS = 200


@dataclass
class Finding:
    rule: int
    name: str
    status: str  # pass | warn | fail | skip
    message: str

    def line(self) -> str:
        return f"{self.status:4s}  {self.rule}. {self.name}: {self.message}"



@dataclass
class Plan:
    """What to check, validated: everything a (child) process needs to run the rules."""

    spec: str
    n: int
    K: int
    max_K: int
    seed: int
    options: dict[str, Any]
    problem_options: dict[str, Any]
    frameworks: list[str]
    header: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Context(Plan):
    """What the rules share: the plan, the instance, and the solution rule 2 finds."""

    problem: Problem | None = None
    instance: Instance | None = None
    x_star: np.ndarray | None = None
    steps_to_solve: int | None = None  # steps to ‖F‖ ≤ 1e-12, None if never
    #: steps to the smallest residual found (the solution map is differenced there)
    steps_to_best: int | None = None
    converged: bool = False  # rule 2's verdict: ‖F‖ fell by 1e-8 within max_K
    residual_star: float | None = None


def findings(plan: Plan, first_rule: int = 1, solution: bool = True,
             begin: Callable[[int | str], None] = lambda step: None) -> Iterator[Finding]:
    """The findings of rules ``first_rule`` … 7; ``begin`` is called as each step starts:
    ``"generate"``, ``"solution"`` (rule 2 run unseen), then each rule's number.

    ``generate`` is rule 1's: when it raises, rule 1 fails with its message and the other
    rules are skipped. Starting past rule 2, rule 2 is first run unseen for the solution the
    later rules need, unless ``solution`` is False (it failed or ran out of time)."""
    problem = problems.get(plan.spec, "PROBLEM")
    begin("generate")
    try:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            instance = problem.generate(plan.n, plan.seed, plan.problem_options)
    except Exception as exc:  # noqa: BLE001 — the user's generate: rule 1 fails, not check
        yield Finding(1, RULES[0][0], "fail", f"generate(n={plan.n}, seed={plan.seed}) "
                                              f"{_raised(exc)}")
        for rule, (name, _) in enumerate(RULES[1:], start=2):
            if rule >= first_rule:
                yield Finding(rule, name, "skip", "no instance: generate() failed (rule 1)")
        return
    ctx = _Context(**plan.to_json(), problem=problem, instance=instance)
    for rule, (name, fn) in enumerate(RULES, start=1):
        if rule < first_rule:
            if rule == 2 and solution:  # the later rules' solution, found again
                begin("solution")
                _run_rule(fn, ctx)
            continue
        begin(rule)
        status, message = _run_rule(fn, ctx)
        yield Finding(rule, name, status, message)


def _run_rule(fn: Callable[[_Context], tuple[str, str]], ctx: _Context) -> tuple[str, str]:
    try:
        # a solver's own divisions by zero (step-length ratios) are its business; every
        # number a rule decides on is checked for finiteness
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return fn(ctx)
    except Exception as exc:  # noqa: BLE001 — a broken problem fails the rule, not check
        return "fail", _raised(exc)


def _raised(exc: BaseException) -> str:
    """``raised Name: message (file:line)``, on one line."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" ({tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    text = " ".join(str(exc).split())[:200]
    return f"raised {type(exc).__name__}{': ' + text if text else ''}{where}"


# ---- helpers ----------------------------------------------------------------------------
def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, tuple | list):
        return [leaf for part in tree for leaf in _leaves(part)]
    return [tree]


def _dtype(a: Any) -> str:
    return str(getattr(a, "dtype", type(a).__name__)).removeprefix("torch.")


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.linalg.norm(a)), float(np.linalg.norm(b)))
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else 0.0


def _grade(value: float, passing: float, warning: float) -> str:
    if value <= passing:
        return "pass"
    return "warn" if value <= warning else "fail"


# ---- the rules ----------------------------------------------------------------------------
def rule_determinism(ctx: _Context) -> tuple[str, str]:
    problem, inst = ctx.problem, ctx.instance
    again = problem.generate(ctx.n, ctx.seed, ctx.problem_options)
    pairs = [("θ", inst.theta, again.theta)]
    if set(inst.arrays) != set(again.arrays) or inst.consts != again.consts:
        return "fail", (f"generate(n={ctx.n}, seed={ctx.seed}) twice gives different array "
                        "names or constants")
    pairs += [(f"arrays[{k!r}]", v, again.arrays[k]) for k, v in inst.arrays.items()]
    for label, a, b in pairs:
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
            diff = (float(np.max(np.abs(a - b))) if a.shape == b.shape else float("nan"))
            return "fail", (f"generate(n={ctx.n}, seed={ctx.seed}) twice: {label} differs "
                            f"(max |Δ| = {diff:.3g}); draw everything from the seed")
    for label, a, _ in pairs:
        dtype = np.asarray(a).dtype
        # θ is what is differentiated: it must be float64 itself; data arrays may hold
        # integers (indices, labels), but no float of another precision
        if dtype != np.float64 and (label == "θ" or np.issubdtype(dtype, np.floating)):
            return "fail", f"{label} has dtype {dtype}, not float64"
    host = references.Host(problem, inst)
    s0 = host.init()
    s1 = host.step(s0)
    l0, l1 = _leaves(s0), _leaves(s1)
    shapes0 = [tuple(host.numpy(a).shape) for a in l0]
    shapes1 = [tuple(host.numpy(a).shape) for a in l1]
    if shapes0 != shapes1:
        return "fail", f"step changes the state's shapes: {shapes0} → {shapes1}"
    for label, leaves in (("s₀", l0), ("T(s₀)", l1)):
        bad = [_dtype(a) for a in leaves if "float" in _dtype(a) and _dtype(a) != "float64"]
        if bad:
            return "fail", f"{label} has a {bad[0]} leaf in float64 (compute in θ's dtype)"
    x0 = host.numpy(host.solution(s0))
    F0 = host.residual(host.asarray(x0))
    if x0.ndim != 1:
        return "fail", f"x = solution(s₀) has shape {x0.shape}, not a vector"
    if F0.shape != x0.shape:
        return "fail", f"F has shape {F0.shape} but x has shape {x0.shape}: len F ≠ len x"
    loss = host.numpy(ctx.problem.loss(host.xp, host.data, host.asarray(x0), host.theta))
    if loss.size != 1:
        return "fail", f"ℓ has shape {loss.shape}, not a scalar"
    bad = [label for label, v in (("x₀", x0), ("F(θ, x₀)", F0), ("ℓ", loss))
           if not np.all(np.isfinite(v))]
    if bad:
        return "fail", f"{bad[0]} is not finite"
    return "pass", (f"generate(n={ctx.n}, seed={ctx.seed}) identical twice (max |Δ| = 0); "
                    f"θ {tuple(np.shape(inst.theta))} {np.asarray(inst.theta).dtype}, "
                    f"state {len(l0)} leaf(s) "
                    f"{shapes0}, x and F ({x0.size},), ℓ scalar")


def rule_convergence(ctx: _Context) -> tuple[str, str]:
    host = references.Host(ctx.problem, ctx.instance)
    state = host.init()
    x = host.solution(state)
    r0 = host.residual_norm(x)
    reached, ratio, best = None, 1.0, (r0, 0, x)
    for k in range(1, ctx.max_K + 1):
        state = host.step(state)
        x = host.solution(state)
        r = host.residual_norm(x)
        if not np.isfinite(r):
            return "fail", f"‖F(θ, x_K)‖ is {r} at K = {k}: the solver diverges"
        if r < best[0]:
            best = (r, k, x)
        ratio = r / r0 if r0 > 0 else 0.0
        if reached is None and ratio <= CONVERGED_RATIO:
            reached = (k, ratio)
        if r <= references.SOLVE_TOL:
            ctx.steps_to_solve = k
            break
        if reached is not None and k - best[1] >= STALL_STEPS:
            break
    ctx.residual_star, ctx.steps_to_best, x_best = best
    ctx.converged = reached is not None or r0 == 0
    ctx.x_star = host.numpy(x_best)
    if r0 == 0:
        ctx.steps_to_solve = 0
        return "pass", "‖F(θ, x₀)‖ = 0: the starting point is already a solution"
    if reached is None:
        return "warn", (f"‖F(θ, x_K)‖/‖F(θ, x₀)‖ = {ratio:.1e} at K = {ctx.max_K}, still above "
                        f"{CONVERGED_RATIO:g}: IFT strategies are taken off a solution below "
                        f"that K (raise --max-K to look further)")
    floor = (f"‖F‖ ≤ {references.SOLVE_TOL:g} at K = {ctx.steps_to_solve}"
             if ctx.steps_to_solve is not None else
             f"‖F‖ never ≤ {references.SOLVE_TOL:g}: its floor is {ctx.residual_star:.1e} "
             f"(K = {ctx.steps_to_best})")
    return "pass", (f"‖F(θ, x_K)‖/‖F(θ, x₀)‖ = {reached[1]:.1e} ≤ {CONVERGED_RATIO:g} at "
                    f"K = {reached[0]} (of at most {ctx.max_K}); {floor}")


def _finite_differences(ctx: _Context, K: int) -> tuple[np.ndarray, np.ndarray]:
    """(coordinates, central differences of θ ↦ ℓ(x_K(θ), θ) along them), float64."""
    theta = np.asarray(ctx.instance.theta, dtype=np.float64)
    flat = theta.ravel()
    idx = np.sort(np.random.default_rng(1).choice(flat.size, size=min(flat.size, FD_COORDS),
                                                  replace=False))
    host = references.Host(ctx.problem, ctx.instance)
    out = np.empty(idx.size)
    for j, i in enumerate(idx):
        h = FD_STEP * max(1.0, abs(flat[i]))
        plus, minus = flat.copy(), flat.copy()
        plus[i] += h
        minus[i] -= h
        f_plus = host.outer_after(K, host.asarray(plus.reshape(theta.shape)))
        f_minus = host.outer_after(K, host.asarray(minus.reshape(theta.shape)))
        out[j] = (f_plus - f_minus) / (2 * h)
    return idx, out


def rule_references(ctx: _Context) -> tuple[str, str]:
    _need_solution(ctx)
    problem, inst = ctx.problem, ctx.instance
    own = "problem's" if problem.has_reference else "suite's"
    idx, fd = _finite_differences(ctx, ctx.K)
    k_ref = references.reference_gradient(problem, inst, ctx.K, "k_step").ravel()[idx]
    k_err = _rel(k_ref, fd)
    parts = [f"k_step ({own}) vs central differences of the {ctx.K}-step map: {k_err:.1e}"]
    status = _grade(k_err, FD_PASS, FD_WARN)
    grades = ("pass", "warn", "fail")
    if not ctx.converged:
        parts.append(f"converged not checked: the solver did not converge (rule 2; best "
                     f"‖F‖ = {ctx.residual_star:.1e})")
        status = max(status, "warn", key=grades.index)
    else:
        K_star = max(ctx.steps_to_solve or ctx.steps_to_best or 0, 1)
        idx, fd_star = _finite_differences(ctx, K_star)
        try:
            c_ref = references.reference_gradient(problem, inst, K_star, "converged")
        except references.ReferenceUnavailable as exc:
            parts.append(f"no converged reference: {exc}")
            status = max(status, "warn", key=grades.index)
        else:
            c_err = _rel(c_ref.ravel()[idx], fd_star)
            parts.append(f"converged ({own}) vs the solution map θ ↦ ℓ(x_K*(θ)), "
                         f"K* = {K_star} (‖F‖ = {ctx.residual_star:.1e}): {c_err:.1e}")
            status = max(status, _grade(c_err, FD_PASS, FD_WARN), key=grades.index)
    parts.append(f"[{idx.size} coordinates, h = {FD_STEP:g}; pass ≤ {FD_PASS:g}, "
                 f"fail > {FD_WARN:g}]")
    return status, "; ".join(parts)


def _unrolled(ctx: _Context, framework: str, K: int) -> Any:
    from suite.program import prepare

    return prepare(Point(ctx.spec, "unrolled", framework, n=ctx.n, K=K, seed=ctx.seed,
                         options=ctx.options))


def rule_frameworks(ctx: _Context) -> tuple[str, str]:
    if len(ctx.frameworks) < 2:
        why = ("--framework chose one" if ctx.problem.frameworks is None
               else f"the problem declares frameworks = {tuple(ctx.problem.frameworks)!r}")
        return "skip", f"only {ctx.frameworks[0]} runs here ({why})"
    out = {}
    for fw_name in ctx.frameworks:
        prep = _unrolled(ctx, fw_name, ctx.K)
        fw = prep.fw
        grad, _ = fw.compile(prep.gradient_program())(prep.theta, prep.arrays)
        _, x_K = fw.compile(prep.forward_program())(prep.theta, prep.arrays)
        out[fw_name] = (fw.to_numpy(x_K), fw.to_numpy(grad))
    (a_name, (xa, ga)), (b_name, (xb, gb)) = list(out.items())[:2]
    dx, dg = _rel(xa, xb), _rel(ga, gb)
    status = _grade(max(dx, dg), FRAMEWORK_PASS, FRAMEWORK_WARN)
    return status, (f"{a_name} vs {b_name} at K = {ctx.K}: x_K differs by {dx:.1e}, the "
                    f"unrolled gradient by {dg:.1e} (relative; pass ≤ {FRAMEWORK_PASS:g}, "
                    f"fail > {FRAMEWORK_WARN:g})")


def _need_solution(ctx: _Context) -> None:
    if ctx.x_star is None:
        raise RuntimeError("no solution estimate: rule 2 (convergence) did not run through")


def _where(ctx: _Context) -> str:
    if ctx.converged:
        return f"at the solution (‖F‖ = {ctx.residual_star:.1e})"
    return f"at the best iterate (‖F‖ = {ctx.residual_star:.1e}, not a solution)"


def rule_jacobian(ctx: _Context) -> tuple[str, str]:
    _need_solution(ctx)
    if ctx.x_star.size > MAX_DENSE_DIM:
        return "skip", f"dim x = {ctx.x_star.size} > {MAX_DENSE_DIM}: no dense ∂F/∂x"
    _need_solution(ctx)
    J, _ = references.jacobian_and_loss_gradient(ctx.problem, ctx.instance, ctx.x_star)
    norm = float(np.linalg.norm(J))
    asym = float(np.linalg.norm(J - J.T) / norm) if norm > 0 else 0.0
    sym_part = 0.5 * (J + J.T)
    eigs = np.linalg.eigvalsh(sym_part)
    lam_min, lam_max = float(eigs[0]), float(eigs[-1])
    cond = float(np.linalg.cond(J))
    symmetric = asym <= SYMMETRY_TOL
    spd = symmetric and lam_min > 0
    measured = "spd" if spd else ("symmetric" if symmetric else "general")
    declared = ctx.problem.jacobian_structure
    facts = (f"∂F/∂x {_where(ctx)} ({J.shape[0]}×{J.shape[1]}): asymmetry ‖J − Jᵀ‖/‖J‖ = "
             f"{asym:.1e}, λ_min(sym. part) = {lam_min:.3g} (λ_max {lam_max:.3g}), "
             f"cond = {cond:.1e}; measured {measured}, declared {declared!r}")
    if declared == "spd" and not spd:
        why = (f"asymmetry {asym:.1e} > {SYMMETRY_TOL:g}" if not symmetric
               else f"λ_min = {lam_min:.3g} ≤ 0")
        return "fail", f"{facts}: declared spd but {why} (ift-cg would be wrong here)"
    if declared == "symmetric" and not symmetric:
        return "fail", f"{facts}: declared symmetric but asymmetry {asym:.1e} > {SYMMETRY_TOL:g}"
    if ctx.problem.jacobian_spd_everywhere:
        host = references.Host(ctx.problem, ctx.instance)
        x0 = host.numpy(host.solution(host.init()))
        J0, _ = references.jacobian_and_loss_gradient(ctx.problem, ctx.instance, x0)
        asym0 = float(np.linalg.norm(J0 - J0.T) / max(float(np.linalg.norm(J0)), 1e-300))
        lam0 = float(np.linalg.eigvalsh(0.5 * (J0 + J0.T))[0])
        if asym0 > SYMMETRY_TOL or lam0 <= 0:
            return "fail", (f"{facts}: declared jacobian_spd_everywhere but at x₀ asymmetry "
                            f"{asym0:.1e}, λ_min = {lam0:.3g} (ift-direct's Cholesky would "
                            "fail short of the solution)")
    if not cond < COND_WARN:
        return "warn", (f"{facts}: numerically singular (cond > {COND_WARN:g}), the IFT does "
                        "not apply")
    return "pass", facts


def rule_linear_map(ctx: _Context) -> tuple[str, str]:
    # preferably a framework whose trace bytes come from analysing the compiled program (JAX)
    # rather than from running it
    registry = framework_registry()
    fw_name = next((f for f in ctx.frameworks if not registry[f].counts_while_tracing),
                   ctx.frameworks[0])
    traces, state_bytes = [], 0
    for K in (ctx.K, 2 * ctx.K):
        prep = _unrolled(ctx, fw_name, K)
        traces.append(int(prep.fw.trace_bytes(prep.gradient_program(), prep.theta,
                                              prep.arrays)))
    host = references.Host(ctx.problem, ctx.instance)
    state_bytes = sum(8 * host.numpy(leaf).size for leaf in _leaves(host.init()))
    per_step = (traces[1] - traces[0]) / ctx.K
    facts = (f"{fw_name} reverse mode keeps {per_step:.0f} B per step (trace {traces[0]} B at "
             f"K = {ctx.K}, {traces[1]} B at K = {2 * ctx.K}) against a {state_bytes} B state")
    if per_step < LINEAR_FRACTION * state_bytes:
        return "warn", (f"{facts}: the step is linear (or piecewise linear) in the state, so "
                        "reverse mode stores (almost) no residuals and memory-against-K "
                        "comparisons are degenerate for this problem")
    return "pass", f"{facts}: nonlinear in the state"


def rule_envelope(ctx: _Context) -> tuple[str, str]:
    _need_solution(ctx)
    host = references.Host(ctx.problem, ctx.instance)
    x0 = host.numpy(host.solution(host.init()))
    g_star = references.loss_gradient_x(ctx.problem, ctx.instance, ctx.x_star).ravel()
    g0 = references.loss_gradient_x(ctx.problem, ctx.instance, x0).ravel()
    F0 = host.residual(host.asarray(x0))
    n0, n_star = float(np.linalg.norm(g0)), float(np.linalg.norm(g_star))
    ratio = n_star / n0 if n0 > 0 else n_star
    denom = n0 * float(np.linalg.norm(F0))
    cos = float(abs(g0 @ F0) / denom) if denom > 0 else 0.0
    facts = (f"‖∇ₓℓ‖ {_where(ctx)} is {ratio:.1e} of its value at x₀; |cos(∇ₓℓ, F)| at x₀ = "
             f"{cos:.6f}")
    if ratio <= ENVELOPE_RATIO or cos >= PARALLEL_COS:
        return "warn", (f"{facts}: the outer loss acts as the inner objective, so the implicit "
                        "term (∂F/∂θ)ᵀ(∂F/∂x)⁻ᵀ∇ₓℓ vanishes at the optimum (envelope theorem) "
                        "and IFT strategies measure nothing; use a different outer loss")
    return "pass", f"{facts}: the implicit term does not vanish"


RULES: list[tuple[str, Callable[[_Context], tuple[str, str]]]] = [
    ("determinism and shapes", rule_determinism),
    ("convergence", rule_convergence),
    ("references vs finite differences", rule_references),
    ("torch vs JAX", rule_frameworks),
    ("∂F/∂x structure", rule_jacobian),
    ("linear-map trap", rule_linear_map),
    ("envelope trap", rule_envelope),
]
