"""The record schema (one row per point) and the results layout on disk.

``results/<run-id>/records.jsonl`` — one JSON object per line, appended and flushed (fsync)
point by point, so an interrupted run keeps every point it finished.
``results/<run-id>/meta.json`` — environment and configuration of the run.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

STATUSES = ("ok", "error", "timeout", "oom", "unsupported", "skipped")


@dataclass
class Record:
    # identity of the point
    problem: str
    backend: str
    framework: str
    device: str
    dtype: str
    n: int
    K: int
    seed: int
    options: dict[str, Any]
    # outcome
    status: str = "ok"
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    # time (seconds)
    time_s: float | None = None
    time_min_s: float | None = None
    forward_time_s: float | None = None
    first_call_s: float | None = None
    compile_s: float | None = None
    repeats: int | None = None
    #: median over adjacent pairs of this gradient's time over ``time_ratio_to``'s, both timed
    #: in this process call by call alternately (set when a sweep pairs strategies: the gate)
    time_ratio: float | None = None
    time_ratio_to: str | None = None
    # memory (bytes)
    peak_bytes: int | None = None
    peak_method: str | None = None
    trace_bytes: int | None = None
    rss_peak_bytes: int | None = None
    # accuracy
    grad_rel_error: float | None = None
    reference: str | None = None
    #: the error against each float64 reference (``grad_rel_error`` is the one of ``reference``)
    grad_error_k_step: float | None = None
    grad_error_converged: float | None = None
    grad_norm: float | None = None
    inner_residual: float | None = None
    solver_converged: bool | None = None
    #: a-priori bound on the strategy's error where theory gives one (ift-neumann: ρ^{k+1})
    error_bound: float | None = None
    # exact counts
    step_evals: int | None = None
    vjp_evals: int | None = None
    jvp_evals: int | None = None
    hvp_evals: int | None = None
    solver_iters: int | None = None
    # context
    dim_theta: int | None = None
    dim_x: int | None = None
    options_resolved: dict[str, Any] = field(default_factory=dict)
    #: strategy-specific measurements (reversible's buffer, IFT's adjoint error, …)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    timeout_s: float | None = None
    memory_cap_bytes: int | None = None
    wall_s: float | None = None
    started_at: str | None = None
    point_key: str | None = None
    run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Record:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Record))


def append_record(path: Path, record: Record) -> None:
    """Append one line and make it durable before returning (crash-safe sweeps)."""
    line = json.dumps(record.to_json(), allow_nan=True, default=_jsonable) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_records(path: Path) -> list[Record]:
    """Every complete line of ``records.jsonl``; a torn last line (killed writer) is ignored."""
    out: list[Record] = []
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            try:
                out.append(Record.from_json(json.loads(line)))
            except json.JSONDecodeError:
                continue
    return out


def load_frame(run_dir: str | Path):
    """The run's records as a pandas DataFrame, one row per point, every schema column."""
    import pandas as pd

    path = Path(run_dir) / "records.jsonl" if Path(run_dir).is_dir() else Path(run_dir)
    rows = [r.to_json() for r in read_records(path)]
    frame = pd.DataFrame(rows, columns=list(RECORD_FIELDS))
    if not frame.empty:
        frame["options_str"] = frame["options"].map(
            lambda o: ",".join(f"{k}={v}" for k, v in sorted((o or {}).items())))
    return frame


def write_json(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
