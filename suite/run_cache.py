"""The run's cache: what the points of one run share instead of recomputing it — the float64
references by instance (written by :mod:`suite.references`) and compiled JAX programs (here).

A leaf of the harness: it imports nothing of the project, so a framework adapter may use it.
The executor sets :data:`CACHE_ENV` to the run's cache directory for every point it starts.

**Compiled programs.** Every strategy measured on the same instance runs the same forward
solve, and every cell of the gate times its gradient against the same paired strategy; each
point is a fresh process, so each would compile that program again (0.15-1 s of XLA here). A
program whose compilation no record reports is instead serialised to the run's cache directory
by the first point that compiles it and loaded by the others. The gradient program whose first
call is recorded (``first_call_s``, ``compile_s``) is never taken from here, so those fields
keep measuring a compilation.

The key is a hash of the lowered StableHLO text (constants and shapes included), the JAX
version and the device, so two programs share an entry only if XLA would be given the same
module. A cache that cannot be read or written costs time, never a measurement.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: a directory where references are kept by instance and compiled programs by their StableHLO
#: (set per run by the executor): every strategy of a sweep measured on the same instance shares
#: them instead of recomputing them
CACHE_ENV = "IFT_BENCH_REFERENCE_CACHE"
#: compiled programs go in this subdirectory of the cache
SUBDIR = "programs"


def write_cache_entry(path: Path, write: Callable[[Any], None]) -> None:
    """An entry of the run's cache: ``write(file)`` into a temporary file beside ``path``,
    then renamed onto it, so that a concurrent reader sees all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as fh:
        write(fh)
    os.replace(fh.name, path)


def compiled(lowered: Any) -> Any:
    """``lowered.compile()``, read from or written to the run's program cache when one is
    set."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        return lowered.compile()
    import jax
    from jax.experimental import serialize_executable

    digest = hashlib.sha256(lowered.as_text(debug_info=False).encode())
    digest.update(f"{jax.__version__}|{jax.devices()[0].device_kind}".encode())
    path = Path(root) / SUBDIR / f"{digest.hexdigest()}.pkl"
    try:
        with open(path, "rb") as fh:
            payload, in_tree, out_tree = pickle.load(fh)
        return serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    except Exception:  # noqa: BLE001 — missing, partly written or unloadable: compile
        pass
    program = lowered.compile()
    try:
        entry = serialize_executable.serialize(program)
        write_cache_entry(path, lambda fh: pickle.dump(entry, fh))
    except Exception:  # noqa: BLE001 — e.g. a program with host callbacks does not serialise
        pass
    return program
