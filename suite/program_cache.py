"""Compiled JAX programs shared between the points of one run.

Every strategy measured on the same instance runs the same forward solve, and every cell of
the gate times its gradient against the same paired strategy; each point is a fresh process,
so each would compile that program again (0.15-1 s of XLA here). A program whose compilation
no record reports is instead serialised to the run's cache directory by the first point that
compiles it and loaded by the others. The gradient program whose first call is recorded
(``first_call_s``, ``compile_s``) is never taken from here, so those fields keep measuring a
compilation.

The key is a hash of the lowered StableHLO text (constants and shapes included), the JAX
version and the device, so two programs share an entry only if XLA would be given the same
module. A cache that cannot be read or written costs time, never a measurement.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

from suite.references import (  # the run's cache directory, set by the executor
    CACHE_ENV,
    write_cache_entry,
)

SUBDIR = "programs"


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
