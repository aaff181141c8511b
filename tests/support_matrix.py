"""The expected support matrix, pinned in one place: which (problem, backend, framework) cells
can be measured, why the others cannot, and which need an option their defaults lack.

tests/test_support_matrix.py asserts that ``suite list --json`` and ``validate_point`` agree
with this table exactly, and every per-cell case list in the tests (exact strategies, IFT
strategies, torch vs JAX) is built from :func:`runs` rather than by asking the code under test
what it supports — so a regression that makes a cell unsupported fails a test instead of
silently dropping that cell's tests.
"""

from __future__ import annotations

from collections.abc import Mapping

PROBLEMS = ("deq", "gd", "imaml", "qp", "savi", "softmax", "sparsemax")
BACKENDS = ("unrolled", "forward", "forward-batched", "checkpoint-sqrt", "checkpoint-binomial",
            "reversible", "truncated", "ift-direct", "ift-cg", "ift-gmres", "ift-neumann",
            "ift-jfb") + (
    # peer rows (backends/peers/), after ours, by name
    "jaxopt-cg", "jaxopt-gmres", "jaxopt-lu", "optimistix-cg", "optimistix-checkpoint",
    "optimistix-gmres", "optimistix-lu", "qpth", "torchopt-cg", "torchopt-unrolled")
FRAMEWORKS = ("torch", "jax")

#: peer row → (the one framework it runs in, the strategy of ours it corresponds to, whether it
#: runs its own solver to convergence rather than our K-step forward)
PEERS: dict[str, tuple[str, str, bool]] = {
    "jaxopt-cg": ("jax", "ift-cg", False),
    "jaxopt-gmres": ("jax", "ift-gmres", False),
    "jaxopt-lu": ("jax", "ift-direct", False),
    "optimistix-cg": ("jax", "ift-cg", False),
    "optimistix-checkpoint": ("jax", "checkpoint-binomial", False),
    "optimistix-gmres": ("jax", "ift-gmres", False),
    "optimistix-lu": ("jax", "ift-direct", False),
    "qpth": ("torch", "ift-direct", True),
    "torchopt-cg": ("torch", "ift-cg", False),
    "torchopt-unrolled": ("torch", "unrolled", False),
}
#: peer rows that fit only some problems → those problems (the reason comes before ours)
PEER_PROBLEMS: dict[str, tuple[str, ...]] = {
    "qpth": ("qp",), "torchopt-cg": ("gd", "savi"), "torchopt-unrolled": ("gd", "savi"),
}


def _not_momentum(problem: str) -> str:
    return f"reversible needs a momentum-descent solver; {problem}'s solver is not one"


def _not_spd(problem: str) -> str:
    return (f"ift-cg needs a symmetric positive definite ∂F/∂x; {problem}'s is general")


def _no_alpha(problem: str) -> str:
    return (f"{problem} has no default step α with ρ(I − α∂F/∂x) < 1; give --option alpha=…")


#: (problem, backend) → the reason it is unsupported, the same in both frameworks (a peer row
#: is refused outside its framework first, see :func:`unsupported`)
UNSUPPORTED: dict[tuple[str, str], str] = {
    **{(p, "reversible"): _not_momentum(p) for p in ("deq", "qp", "softmax", "sparsemax")},
    **{(p, "ift-cg"): _not_spd(p) for p in ("deq", "qp", "softmax", "sparsemax")},
}
# a peer row is refused where the strategy of ours it corresponds to is, with our reason
UNSUPPORTED.update({(p, peer): UNSUPPORTED[(p, ours)] for peer, (_, ours, _) in PEERS.items()
                    for p in PROBLEMS if (p, ours) in UNSUPPORTED})
# optimistix's CG runs on T(s) − s, symmetric definite for plain gradient descent only
UNSUPPORTED.update({(p, "optimistix-cg"): (
    "optimistix-cg needs T(s) − s with a symmetric definite Jacobian (plain gradient descent); "
    f"{p}'s solver is not gradient descent") for p in ("deq", "qp", "softmax", "sparsemax")
    if (p, "optimistix-cg") not in UNSUPPORTED})
# optimistix's implicit rows need T to define the solution by a differentiable fixed point
UNSUPPORTED.update({("sparsemax", b): (
    f"{b} applies the IFT to the solver's fixed point T(s) = s; sparsemax's bisection step is "
    "piecewise constant in θ, so that IFT gives dτ/dθ = 0, not the projection's derivative "
    "(16 % off ours at n = 6)") for b in ("optimistix-gmres", "optimistix-lu")})
UNSUPPORTED.update({(p, peer): f"{peer} fits {', '.join(fits)} only"
                    for peer, fits in PEER_PROBLEMS.items() for p in PROBLEMS if p not in fits})

#: (problem, backend) → (the reason it is refused with the default options, the options that
#: make it measurable), the same in both frameworks
NEEDS_OPTIONS: dict[tuple[str, str], tuple[str, dict[str, str]]] = {
    **{(p, "reversible"): (
        "reversible needs momentum γ in (0, 1) (multiplying by γ = 0 destroys all information); "
        f"run {p} with --option momentum=0.9", {"momentum": "0.9"}) for p in ("gd", "imaml")},
    **{(p, b): (_no_alpha(p), {"alpha": "0.1"})
       for p in ("qp", "softmax", "sparsemax") for b in ("ift-neumann", "ift-jfb")},
    **{("qp", b): (
        f"{b} applies the IFT to the solver's fixed point T(s) = s; qp's interior-point step is "
        "the identity once converged, so T(s) − s has a zero Jacobian (singular); run qp with "
        "--option solver=admm", {"solver": "admm"}) for b in ("optimistix-gmres", "optimistix-lu")},
    ("savi", "optimistix-cg"): (
        "optimistix-cg needs T(s) − s with a symmetric Jacobian: with momentum the state is "
        "(w, v) and it is not; run savi with --option momentum=0", {"momentum": "0"}),
}


def expected_list_rows() -> list[dict]:
    """What ``suite list --json`` must print, in its order (problems × backends × frameworks)."""
    rows = []
    for problem in PROBLEMS:
        for backend in BACKENDS:
            for framework in FRAMEWORKS:
                reason = unsupported(problem, backend, framework)
                needs = None if reason else NEEDS_OPTIONS.get((problem, backend), (None, None))[0]
                peer = PEERS.get(backend, (None, None, False))
                rows.append({"problem": problem, "backend": backend, "framework": framework,
                             "supported": reason is None, "reason": reason,
                             "needs_options": needs, "corresponds_to": peer[1],
                             "converged_only": peer[2]})
    return rows


def unsupported(problem: str, backend: str, framework: str) -> str | None:
    """Why the pinned matrix refuses (problem, backend, framework), None when it does not."""
    if backend in PEERS and PEERS[backend][0] != framework:
        return f"{backend} is a {PEERS[backend][0]} library"
    return UNSUPPORTED.get((problem, backend))


def runs(problem: str, backend: str, options: Mapping[str, str] | None = None) -> bool:
    """Whether the pinned matrix says (problem, backend) is measurable with ``options`` (in
    both frameworks): supported, and given the options it needs, if any."""
    assert problem in PROBLEMS and backend in BACKENDS, (problem, backend)
    if (problem, backend) in UNSUPPORTED or backend in PEERS:  # a peer runs in one framework
        return False
    needed = NEEDS_OPTIONS.get((problem, backend))
    return needed is None or set(needed[1]) <= set(options or {})


def runs_in(problem: str, backend: str, framework: str,
            options: Mapping[str, str] | None = None) -> bool:
    """Whether the pinned matrix says (problem, backend, framework) is measurable with
    ``options`` (peer rows, which run in one framework)."""
    assert problem in PROBLEMS and backend in BACKENDS, (problem, backend)
    if unsupported(problem, backend, framework) is not None:
        return False
    needed = NEEDS_OPTIONS.get((problem, backend))
    return needed is None or set(needed[1]) <= set(options or {})
