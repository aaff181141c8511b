"""Storage for a Krylov basis: rows written one at a time, read back only as far as written.

GMRES keeps the vectors v₀, v₁, … of its Arnoldi basis, and the columns of its Hessenberg
matrix, up to a restart length m it *may* reach; the adjoint systems of a contractive fixed
point are usually solved in far fewer steps (deq, n = 256, batch 64: 26 of m = 200). Both the
memory and the work of an Arnoldi step must follow the rows written, not m:

* :class:`GrowingRows` (frameworks with dynamic shapes: torch) allocates rows in chunks as they
  are written, and reads whole chunks with one batched product each.
* :class:`StaticRows` (XLA, whose loop-carried arrays have shapes fixed at compile time) must
  allocate the m rows before the loop; it reads the written rows chunk by chunk in a loop whose
  length is the number of chunks written, so the work of a step still follows the rows used.

Rows have the shape (B, d): one row per block (the solver's blocks, ``backends.linear_solvers``).
A store is the value a loop carries (a tuple of chunk arrays, or one array); the
:class:`Rows` object that reads and writes it holds only the static layout.

``project(store, w, count)`` answers the (capacity, B) coefficients ⟨row_i, w⟩ per block for
i < count (rows not yet written are zero), ``combine(store, c, count)`` Σ_{i<count} c_i · row_i
per block, ``dense(store, count)`` the written rows as one (B, q, d) array, q ≥ count (q =
capacity when the shape is static).
"""

from __future__ import annotations

from typing import Any

#: a store up to this size is read whole, in one product: below it, a loop over chunks costs
#: more than the rows it skips (ift-bench pair, gd n = 50, K = 1000, backward against
#: jaxopt-gmres: 2.36 and 2.65 with 16 kB chunks, 0.97 and 0.98 read whole)
WHOLE_BYTES = 64 * 1024
#: bytes one chunk of rows holds otherwise (at least MIN_CHUNK rows), so that a step reads
#: little beyond the rows it uses (gd n = 200, full GMRES, same pairs: 0.85–1.06 with 16 kB)
CHUNK_BYTES = 16 * 1024
MIN_CHUNK = 8


def chunk_rows(capacity: int, row_bytes: int) -> int:
    """Rows per chunk for ``capacity`` rows of ``row_bytes`` bytes."""
    if capacity * row_bytes <= WHOLE_BYTES:
        return capacity
    return max(1, min(capacity, max(MIN_CHUNK, CHUNK_BYTES // max(row_bytes, 1))))


def make_rows(fw: Any, capacity: int, shape: tuple[int, int], dtype: Any) -> Rows:
    """The storage that suits ``fw`` for ``capacity`` rows of ``shape`` (B, d)."""
    chunk = chunk_rows(capacity, shape[0] * shape[1] * dtype.itemsize)
    kind = StaticRows if fw.static_shapes else GrowingRows
    return kind(fw, capacity, shape, dtype, chunk)


class Rows:
    """The layout of a store of ``capacity`` rows of shape (B, d) in chunks of ``chunk``, kept
    as (B, rows, d) so that reading a chunk is one batched matrix product per block (XLA's CPU
    reductions over a leading axis are several times slower than its dot)."""

    def __init__(self, fw: Any, capacity: int, shape: tuple[int, int], dtype: Any, chunk: int):
        self.fw, self.xp = fw, fw.xp
        self.capacity, self.shape, self.dtype, self.chunk = capacity, shape, dtype, chunk

    def empty(self) -> Any:
        """A store with no row written."""
        raise NotImplementedError

    def write(self, store: Any, index: Any, row: Any) -> Any:
        """``store`` with row ``index`` set to ``row`` (B, d)."""
        return self.write_rows(store, index, row[None])

    def write_rows(self, store: Any, start: Any, rows: Any) -> Any:
        """``store`` with rows ``start``, ``start`` + 1, … set to ``rows`` (r, B, d) at once:
        values computed from the rows being replaced stay valid."""
        raise NotImplementedError

    def row(self, store: Any, index: Any) -> Any:
        """Row ``index`` (B, d)."""
        raise NotImplementedError

    def project(self, store: Any, w: Any, count: Any) -> Any:
        """(capacity, B): ⟨row_i, w⟩ per block for the rows i < ``count``, zero beyond."""
        raise NotImplementedError

    def combine(self, store: Any, coefficients: Any, count: Any) -> Any:
        """(B, d): Σ_{i < count} coefficients_i · row_i per block; ``coefficients`` (k, B),
        k ≤ capacity (rows past k weigh zero)."""
        raise NotImplementedError

    def dense(self, store: Any, count: Any) -> Any:
        """(B, q, d): the rows i < q, q ≥ ``count`` (q = capacity where shapes are static)."""
        raise NotImplementedError

    def _zeros(self, rows: int) -> Any:
        return self.xp.zeros((self.shape[0], rows, self.shape[1]), dtype=self.dtype)

    # one block (B = 1) is a plain matrix–vector product: XLA's batched dot with a batch of
    # one is up to 4× slower on CPU (combining a (1, 208, 200) chunk: 17 µs against 4.5 µs)
    def _project_chunk(self, chunk: Any, w: Any) -> Any:  # (B, c, d), (B, d) -> (B, c)
        if self.shape[0] == 1:
            return self.xp.matmul(chunk[0], w[0])[None]
        return self.xp.matmul(chunk, w[..., None])[..., 0]

    def _combine_chunk(self, chunk: Any, co: Any) -> Any:  # (B, c, d), (B, c) -> (B, d)
        xp = self.xp
        if self.shape[0] == 1:
            return xp.matmul(co[0], chunk[0])[None]
        return xp.matmul(xp.matrix_transpose(chunk), co[..., None])[..., 0]


class GrowingRows(Rows):
    """A tuple of chunks (B, chunk, d), one more allocated when a write reaches past the last;
    written in place (nothing else holds a chunk)."""

    def empty(self) -> tuple:
        return ()

    def write_rows(self, store: tuple, start: Any, rows: Any) -> tuple:
        rows = [rows[r] for r in range(rows.shape[0])]  # all read before any is written
        for offset, row in enumerate(rows):
            i, r = divmod(int(start) + offset, self.chunk)
            if i == len(store):
                store = (*store, self._zeros(self.chunk))
            store[i][:, r] = row
        return store

    def row(self, store: tuple, index: Any) -> Any:
        i, r = divmod(int(index), self.chunk)
        return store[i][:, r]

    def project(self, store: tuple, w: Any, count: Any) -> Any:
        xp = self.xp
        # rows past those written are zero in their chunk, so whole chunks can be read
        parts = [self._project_chunk(c, w) for c in store]
        pad = self.capacity - len(store) * self.chunk
        if pad > 0:
            parts.append(xp.zeros((self.shape[0], pad), dtype=self.dtype))
        return xp.permute_dims(xp.concat(parts, axis=1)[:, : self.capacity], (1, 0))

    def combine(self, store: tuple, coefficients: Any, count: Any) -> Any:
        xp = self.xp
        total = xp.zeros(self.shape, dtype=self.dtype)
        for i, c in enumerate(store):
            co = coefficients[i * self.chunk:(i + 1) * self.chunk]  # (r, B)
            if co.shape[0] == 0:
                break
            total = total + self._combine_chunk(c[:, : co.shape[0]], xp.permute_dims(co, (1, 0)))
        return total

    def dense(self, store: tuple, count: Any) -> Any:
        return self.xp.concat(store, axis=1)[:, : int(count)]


class StaticRows(Rows):
    """One (B, capacity rounded up to whole chunks, d) array, read chunk by chunk in a loop that
    runs over the chunks written so far (one chunk: read whole, without a loop)."""

    def _rounded(self) -> int:
        return -(-self.capacity // self.chunk) * self.chunk


    def empty(self) -> Any:
        return self._zeros(self._rounded())

    def write_rows(self, store: Any, start: Any, rows: Any) -> Any:
        return self.fw.dynamic_update_slice(store, start, self.xp.permute_dims(rows, (1, 0, 2)),
                                            axis=1)

    def row(self, store: Any, index: Any) -> Any:
        return store[:, index]

    def _chunks(self, count: Any) -> Any:
        return (count + self.chunk - 1) // self.chunk

    def project(self, store: Any, w: Any, count: Any) -> Any:
        fw, xp, c = self.fw, self.xp, self.chunk
        if self._rounded() == c:
            h = self._project_chunk(store, w)
        else:
            def read(i: Any, h: Any) -> Any:
                part = self._project_chunk(fw.dynamic_slice(store, i * c, c, axis=1), w)
                return fw.dynamic_update_slice(h, i * c, part, axis=1)

            h = fw.fori_loop(0, self._chunks(count), read,
                             xp.zeros((self.shape[0], self._rounded()), dtype=self.dtype))
        return xp.permute_dims(h[:, : self.capacity], (1, 0))

    def combine(self, store: Any, coefficients: Any, count: Any) -> Any:
        fw, xp, c = self.fw, self.xp, self.chunk
        co = xp.permute_dims(coefficients, (1, 0))  # (B, k)
        pad = self._rounded() - co.shape[1]
        if pad > 0:
            co = xp.concat([co, xp.zeros((self.shape[0], pad), dtype=self.dtype)], axis=1)
        if self._rounded() == c:
            return self._combine_chunk(store, co)

        def add(i: Any, total: Any) -> Any:
            return total + self._combine_chunk(fw.dynamic_slice(store, i * c, c, axis=1),
                                               fw.dynamic_slice(co, i * c, c, axis=1))

        return fw.fori_loop(0, self._chunks(count), add, xp.zeros(self.shape, dtype=self.dtype))

    def dense(self, store: Any, count: Any) -> Any:
        return store[:, : self.capacity]
