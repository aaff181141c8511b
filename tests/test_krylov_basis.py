"""The Krylov basis store (backends.krylov_basis) and what it buys GMRES: reads and memory
that follow the rows written, not the restart length."""

from __future__ import annotations

import numpy as np
import pytest

from backends import krylov_basis
from backends.krylov_basis import GrowingRows, StaticRows
from backends.linear_solvers import GMRES, Operator, default_restart, gmres

from .conftest import FRAMEWORKS
from .helpers import rel


def _framework(name: str):
    from suite.frameworks import registry

    return registry()[name]("cpu", "float64")


def _dtype(fw):
    return fw.asarray(np.zeros(1)).dtype


def _kinds(framework: str) -> list[type]:
    # a growing store writes in place, which XLA's arrays do not allow
    return [StaticRows] if _framework(framework).static_shapes else [StaticRows, GrowingRows]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("written", [1, 4, 9, 13])
def test_a_store_reads_back_what_was_written(framework, written):
    """Rows written one at a time and two at once, across chunk boundaries (chunk 4 of 13
    rows): projections, combinations and the dense rows against numpy."""
    fw = _framework(framework)
    rng = np.random.default_rng(written)
    B, d, capacity = 3, 5, 13
    rows = rng.standard_normal((capacity, B, d))
    w = rng.standard_normal((B, d))
    co = rng.standard_normal((capacity, B))
    for kind in _kinds(framework):
        store_of = kind(fw, capacity, (B, d), _dtype(fw), chunk=4)
        store = store_of.empty()
        i = 0
        while i < written:
            if i + 2 <= written and i % 3 == 1:
                store = store_of.write_rows(store, i, fw.asarray(rows[i:i + 2]))
                i += 2
            else:
                store = store_of.write(store, i, fw.asarray(rows[i]))
                i += 1
        h = fw.to_numpy(store_of.project(store, fw.asarray(w), written))
        expected = np.zeros((capacity, B))
        expected[:written] = np.einsum("ibd,bd->ib", rows[:written], w)
        assert h.shape == (capacity, B) and rel(h, expected) < 1e-14
        total = fw.to_numpy(store_of.combine(store, fw.asarray(co[:written]), written))
        assert rel(total, np.einsum("ib,ibd->bd", co[:written], rows[:written])) < 1e-14
        dense = fw.to_numpy(store_of.dense(store, written))
        assert dense.shape[1] >= written
        assert np.array_equal(dense[:, :written], np.transpose(rows[:written], (1, 0, 2)))
        assert rel(fw.to_numpy(store_of.row(store, written - 1)), rows[written - 1]) == 0


def test_rows_written_together_are_computed_from_the_old_ones():
    """write_rows at a chunk boundary replaces rows 3 and 4 with values computed from row 3:
    both see its old value (the Givens update of GMRES writes two rows this way)."""
    fw = _framework("torch")
    store_of = GrowingRows(fw, 8, (1, 2), _dtype(fw), chunk=4)
    store = store_of.empty()
    for i in range(4):
        store = store_of.write(store, i, fw.asarray(np.full((1, 2), float(i + 1))))
    old = store_of.row(store, 3)
    store = store_of.write_rows(store, 3, fw.xp.stack([old * 2, old * 3]))
    assert fw.to_numpy(store_of.row(store, 3)).tolist() == [[8.0, 8.0]]
    assert fw.to_numpy(store_of.row(store, 4)).tolist() == [[12.0, 12.0]]
    assert len(store) == 2


def test_a_growing_store_allocates_chunks_only_as_rows_arrive():
    fw = _framework("torch")
    store_of = GrowingRows(fw, 100, (2, 3), _dtype(fw), chunk=8)
    store = store_of.empty()
    sizes = []
    for i in range(17):
        store = store_of.write(store, i, fw.asarray(np.ones((2, 3))))
        sizes.append(len(store))
    assert sizes == [1] * 8 + [2] * 8 + [3]


def test_chunks_are_sized_from_the_row_bytes():
    assert krylov_basis.chunk_rows(51, 400) == 51  # 20 kB in all: read whole
    assert krylov_basis.chunk_rows(201, 1600) == 10  # 16 kB chunks of 1.6 kB rows
    assert krylov_basis.chunk_rows(32, 131072) == krylov_basis.MIN_CHUNK


def test_the_default_restart_is_full_gmres_while_its_basis_fits():
    four_mib = 4 * 1024 * 1024
    assert default_restart(200, 200 * 8) == 200  # gd n = 200: full
    assert default_restart(64 * 88, 64 * 88 * 8) == four_mib // (64 * 88 * 8) - 1  # 92
    assert default_restart(64 * 256, 64 * 256 * 8) == 31  # deq, batch 64 × 256
    assert default_restart(10**6, 8 * 10**6) == 20  # a vector alone is 8 MB
    resolved = GMRES().resolve_defaults({"restart": None, "tol": None}, "float64", 64 * 256)
    assert resolved["restart"] == 31 and resolved["tol"] > 0
    assert GMRES().resolve_defaults({"restart": 7}, "float64", 64 * 256)["restart"] == 7


def _count_basis_use(monkeypatch, n: int) -> dict[str, int]:
    """Counts the chunk reads and allocations of the stores whose rows are (·, n): the basis."""
    counts = {"chunk reads": 0, "chunks allocated": 0}
    project, combine, zeros = (GrowingRows._project_chunk, GrowingRows._combine_chunk,
                               GrowingRows._zeros)

    def counted(name, method):
        def wrapped(self, *args):
            if self.shape[1] == n:
                counts[name] += 1
            return method(self, *args)
        return wrapped

    monkeypatch.setattr(GrowingRows, "_project_chunk", counted("chunk reads", project))
    monkeypatch.setattr(GrowingRows, "_combine_chunk", counted("chunk reads", combine))
    monkeypatch.setattr(GrowingRows, "_zeros", counted("chunks allocated", zeros))
    return counts


def test_gmres_work_and_memory_follow_the_iterations_not_the_restart(monkeypatch):
    """One system of 400 unknowns that GMRES solves in fewer than 40 steps: the basis chunks
    it reads and allocates are the same whether it may keep 40, 150 or 400 vectors (torch),
    and it allocates ⌈(iterations + 1)/8⌉ chunks of 8 vectors."""
    fw = _framework("torch")
    rng = np.random.default_rng(0)
    n = 400
    A = np.eye(n) * 4 + rng.standard_normal((n, n)) / np.sqrt(n)
    b = rng.standard_normal(n)
    A_fw = fw.asarray(A)
    seen = {}
    for restart in (40, 150, 400):
        counts = _count_basis_use(monkeypatch, n)
        result = gmres(fw, Operator(lambda v: A_fw @ v), fw.asarray(b),
                       {"tol": 1e-12, "restart": restart, "maxiter": 1000})
        assert rel(fw.to_numpy(result.solution), np.linalg.solve(A, b)) < 1e-10
        iterations = int(fw.to_numpy(result.iterations))
        assert iterations < 40 and krylov_basis.chunk_rows(restart + 1, n * 8) == 8
        assert counts["chunks allocated"] == -(-(iterations + 1) // 8)
        seen[restart] = (iterations, counts["chunk reads"], counts["chunks allocated"])
    assert len(set(seen.values())) == 1, seen
