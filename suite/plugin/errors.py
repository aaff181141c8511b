"""The one error type for mistakes a user can make (unknown names, bad sizes, bad options)."""

from __future__ import annotations

from collections.abc import Iterable


class UsageError(ValueError):
    """Bad input. The message names the offending field and, where finite, the allowed values.

    The CLI prints ``str(error)`` on one line and exits with status 2.
    """

    def __init__(self, field: str, problem: str, allowed: Iterable[object] | str | None = None):
        self.field = field
        self.detail = problem
        self.allowed = allowed
        message = f"{field}: {problem}"
        if allowed is not None:
            if not isinstance(allowed, str):
                allowed = ", ".join(str(a) for a in allowed)
            message += f" (allowed: {allowed})"
        super().__init__(message)


class UnsupportedError(UsageError):
    """A (problem, backend, framework) combination the suite cannot measure, with the reason."""


class ReferenceUnavailable(RuntimeError):
    """A reference gradient cannot be computed for this point (the solver never reaches the
    reference tolerance, or the reference's method does not scale to the point's size). A
    problem's ``reference_gradient`` may raise it with the reason; the point is still measured
    and its record says why that error column is empty."""
