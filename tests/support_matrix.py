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

PROBLEMS = ("gd", "qp", "savi", "softmax", "sparsemax")
BACKENDS = ("unrolled", "forward", "forward-batched", "checkpoint-sqrt", "checkpoint-binomial",
            "reversible", "truncated", "ift-direct", "ift-cg", "ift-gmres", "ift-neumann",
            "ift-jfb")
FRAMEWORKS = ("torch", "jax")


def _not_momentum(problem: str) -> str:
    return f"reversible needs a momentum-descent solver; {problem}'s solver is not one"


def _not_spd(problem: str) -> str:
    return (f"ift-cg needs a symmetric positive definite ∂F/∂x; {problem}'s is general")


def _no_alpha(problem: str) -> str:
    return (f"{problem} has no default step α with ρ(I − α∂F/∂x) < 1; give --option alpha=…")


#: (problem, backend) → the reason it is unsupported, the same in both frameworks
UNSUPPORTED: dict[tuple[str, str], str] = {
    **{(p, "reversible"): _not_momentum(p) for p in ("qp", "softmax", "sparsemax")},
    **{(p, "ift-cg"): _not_spd(p) for p in ("qp", "softmax", "sparsemax")},
}

#: (problem, backend) → (the reason it is refused with the default options, the options that
#: make it measurable), the same in both frameworks
NEEDS_OPTIONS: dict[tuple[str, str], tuple[str, dict[str, str]]] = {
    ("gd", "reversible"): (
        "reversible needs momentum γ in (0, 1) (multiplying by γ = 0 destroys all information); "
        "run gd with --option momentum=0.9", {"momentum": "0.9"}),
    **{(p, b): (_no_alpha(p), {"alpha": "0.1"})
       for p in ("qp", "softmax", "sparsemax") for b in ("ift-neumann", "ift-jfb")},
}


def expected_list_rows() -> list[dict]:
    """What ``suite list --json`` must print, in its order (problems × backends × frameworks)."""
    rows = []
    for problem in PROBLEMS:
        for backend in BACKENDS:
            for framework in FRAMEWORKS:
                reason = UNSUPPORTED.get((problem, backend))
                needs = NEEDS_OPTIONS.get((problem, backend), (None, None))[0]
                rows.append({"problem": problem, "backend": backend, "framework": framework,
                             "supported": reason is None, "reason": reason,
                             "needs_options": needs})
    return rows


def runs(problem: str, backend: str, options: Mapping[str, str] | None = None) -> bool:
    """Whether the pinned matrix says (problem, backend) is measurable with ``options`` (in
    both frameworks): supported, and given the options it needs, if any."""
    assert problem in PROBLEMS and backend in BACKENDS, (problem, backend)
    if (problem, backend) in UNSUPPORTED:
        return False
    needed = NEEDS_OPTIONS.get((problem, backend))
    return needed is None or set(needed[1]) <= set(options or {})
