"""The support matrix the code reports equals the one pinned in tests/support_matrix.py, cell
by cell, reason by reason — the anchor of every per-cell case list in the tests."""

from __future__ import annotations

import json

import pytest

import backends
import problems
from suite.cli import main
from suite.frameworks import registry as framework_registry
from suite.plugin.errors import UnsupportedError
from suite.point import Point, support_reason, validate_point

from . import support_matrix as matrix

CELLS = [(p, b) for p in matrix.PROBLEMS for b in matrix.BACKENDS]


def test_the_registries_are_the_pinned_ones():
    assert tuple(problems.registry()) == matrix.PROBLEMS
    assert tuple(backends.registry()) == matrix.BACKENDS
    assert tuple(framework_registry()) == matrix.FRAMEWORKS


def test_list_json_equals_the_pinned_matrix(capsys):
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == matrix.expected_list_rows()


@pytest.mark.parametrize("framework", matrix.FRAMEWORKS)
@pytest.mark.parametrize("problem, backend", CELLS)
def test_validate_point_follows_the_pinned_matrix(problem, backend, framework):
    """Defaults refused with exactly the pinned reason; the pinned options make a
    needs-options cell measurable; an unsupported cell stays refused with them too."""
    assert support_reason(problem, backend, framework) == matrix.unsupported(problem, backend,
                                                                             framework)
    point = Point(problem, backend, framework, n=4, K=3)
    refusal = (matrix.unsupported(problem, backend, framework)
               or matrix.NEEDS_OPTIONS.get((problem, backend), (None, None))[0])
    if refusal is None:
        validate_point(point)
        assert matrix.runs_in(problem, backend, framework)
        return
    with pytest.raises(UnsupportedError) as exc:
        validate_point(point)
    assert exc.value.detail == refusal
    assert not matrix.runs_in(problem, backend, framework)
    if (problem, backend) in matrix.NEEDS_OPTIONS and refusal == matrix.NEEDS_OPTIONS[
            (problem, backend)][0]:
        options = matrix.NEEDS_OPTIONS[(problem, backend)][1]
        validate_point(Point(problem, backend, framework, n=4, K=3, options=options))
        assert matrix.runs_in(problem, backend, framework, options)


def test_every_problem_has_unrolled_and_an_exact_ift_strategy_in_the_matrix():
    for problem in matrix.PROBLEMS:
        assert matrix.runs(problem, "unrolled")
        assert matrix.runs(problem, "ift-direct") and matrix.runs(problem, "ift-gmres")
