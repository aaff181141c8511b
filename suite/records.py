"""The record schema (one row per point) and its file format: one JSON object per line,
appended and flushed (fsync) point by point, so an interrupted run keeps every point it
finished. Where that file lies, and what else a run directory holds, is
:class:`suite.rundir.RunDir`'s.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

STATUSES = ("ok", "error", "timeout", "oom", "unsupported", "skipped")
#: the record layout's version, written into every record. 1: no ``schema_version`` key and no
#: per-repeat ``times_s``; 2: both; 3: adds ``peer``, ``trace_note``, ``reference_source``,
#: ``problem_origin``, ``node`` and ``phases_s``; 4: ``time_ratios``; 5: ``predicted_need_bytes``
#: and ``predicted_need_from_K``, ``counts_note``. Bump it whenever a field
#: is added, removed or changes meaning, and teach ``Record.from_json`` to migrate the older
#: layouts.
SCHEMA_VERSION = 5
#: the fields each older layout lacks; reading such a record fills them with their defaults
ADDED_IN = {2: ("times_s",), 3: ("peer", "trace_note", "reference_source", "problem_origin",
                                 "node", "phases_s"), 4: ("time_ratios",),
            5: ("predicted_need_bytes", "predicted_need_from_K", "counts_note")}


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
    #: the R timed gradient calls, in the order they ran (``time_s`` is their median); the
    #: samples ``compare``'s rank test uses. None for records of schema version 1
    times_s: list[float] | None = None
    #: median over adjacent pairs of this gradient's time over ``time_ratio_to``'s, both timed
    #: in this process call by call alternately (set when a sweep pairs strategies: the gate)
    time_ratio: float | None = None
    time_ratio_to: str | None = None
    #: the per-pair ratios ``time_ratio`` is the median of, in the order they were timed: the
    #: samples the gate's rank test compares between two code versions on one machine
    time_ratios: list[float] | None = None
    #: the exact distribution-free 95 % interval of ``time_ratio`` (the median of
    #: ``time_ratios``: suite.intervals), from the blocks' order statistics
    time_ratio_low: float | None = None
    time_ratio_high: float | None = None
    # memory (bytes)
    peak_bytes: int | None = None
    peak_method: str | None = None
    trace_bytes: int | None = None
    #: why ``trace_bytes`` is null for a row whose tape the meter cannot see (a peer library
    #: keeping its factors outside autograd's saved tensors); null when it was measured
    trace_note: str | None = None
    rss_peak_bytes: int | None = None
    #: a point past the memory cap (``oom``, or ``skipped`` after its series' oom): the peak it
    #: would have needed, predicted from the peak's growth per step of the series' ok points at
    #: ``predicted_need_from_K`` (suite.memory_need); null where nothing could be predicted
    predicted_need_bytes: int | None = None
    predicted_need_from_K: list[int] | None = None
    # accuracy
    grad_rel_error: float | None = None
    reference: str | None = None
    #: who computed the float64 references: ``problem`` (its own ``reference_gradient``) or
    #: ``suite`` (generic float64 reverse mode / dense IFT, for problems that supply none)
    reference_source: str | None = None
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
    #: why the exact counts are null although the strategy has them (a counting pass skipped
    #: at a size where it would cost as much as the measurement); null when counted
    counts_note: str | None = None
    # context
    #: the library a peer row measures, with its version (``"jaxopt 0.8.5"``); null for ours
    peer: str | None = None
    #: where the problem's code came from: ``{"module", "file", "sha256"}`` (the file's hash),
    #: so that a results directory says what was measured
    problem_origin: dict[str, Any] | None = None
    #: hostname of the machine the point was measured on
    node: str | None = None
    dim_theta: int | None = None
    dim_x: int | None = None
    options_resolved: dict[str, Any] = field(default_factory=dict)
    #: strategy-specific measurements (reversible's buffer, IFT's adjoint error, …)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    timeout_s: float | None = None
    memory_cap_bytes: int | None = None
    wall_s: float | None = None
    #: where the point's wall time went, in seconds: ``start`` (process start and imports, up to
    #: the measurement), ``prepare``, ``first_call``, ``lock_wait`` (parallel points' turns),
    #: ``timed``, ``peak``, ``rss``, ``trace``,
    #: ``counting``, ``references``: the harness's own overhead beside the timed work
    phases_s: dict[str, float] | None = None
    started_at: str | None = None
    point_key: str | None = None
    run_id: str | None = None
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def for_point(cls, point: Any, settings: Any, **outcome: Any) -> Record:
        """The record of ``point`` (a :class:`suite.point.Point`) measured under ``settings``
        (its :class:`suite.point.Settings`): the one place a record's header is written — the
        point's identity, the settings it ran under, its key, this node and the problem's
        origin. ``outcome`` is the rest (status, error, meters); it may name ``node`` for a
        point measured elsewhere."""
        header = dict(problem=point.problem, backend=point.backend, framework=point.framework,
                      device=point.device, dtype=point.dtype, n=point.n, K=point.K,
                      seed=point.seed, options=dict(point.options), threads=settings.threads,
                      timeout_s=settings.timeout_s, memory_cap_bytes=settings.memory_cap_bytes,
                      point_key=point.key(), node=socket.gethostname(),
                      problem_origin=_origin(point.problem))
        return cls(**{**header, **outcome})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Record:
        """A record from its JSON object, migrated to the current layout.

        A record without ``schema_version`` is version 1; the fields its version lacked
        (``ADDED_IN``) take their defaults (None). A newer version, or a key this version does
        not know, raises a ``UsageError`` naming it: silently dropping fields would lose
        measurements.
        """
        from suite.plugin.errors import UsageError

        if not isinstance(d, dict):
            raise UsageError("record", f"a JSON {type(d).__name__}, not an object",
                             "one JSON object per line")
        version = d.get("schema_version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or \
                not 1 <= version <= SCHEMA_VERSION:
            raise UsageError("schema_version", f"{version!r} is not a record layout this "
                             f"ift-bench reads (a newer ift-bench wrote it?)",
                             f"integers 1 … {SCHEMA_VERSION}")
        later = {name for v, names in ADDED_IN.items() if v > version for name in names}
        known = {f.name for f in fields(cls)} - later
        unknown = sorted(set(d) - known)
        if unknown:
            raise UsageError(f"record key {unknown[0]!r}",
                             f"unknown in schema version {version}"
                             + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""),
                             "the fields of suite.records.Record")
        missing = [name for name in RECORD_IDENTITY if name not in d]
        if missing:
            raise UsageError(f"record key {missing[0]!r}", "missing",
                             "every identity field: " + ", ".join(RECORD_IDENTITY))
        return cls(**{**d, "schema_version": SCHEMA_VERSION})


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Record))
#: the fields without a default: what identifies a point; a record must have them all
RECORD_IDENTITY: tuple[str, ...] = tuple(
    f.name for f in fields(Record) if f.default is MISSING and f.default_factory is MISSING)


def append_record(path: Path, record: Record) -> None:
    """Append one line and make it durable before returning (crash-safe sweeps)."""
    line = json.dumps(record.to_json(), allow_nan=True, default=_jsonable) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


@dataclass
class RecordsFile:
    """What ``records.jsonl`` holds: the records, and what could not be read as one."""

    records: list[Record]
    #: (1-based line number, why) for every complete line that is not a record
    unreadable: list[tuple[int, str]] = field(default_factory=list)
    #: bytes after the last newline: a line a killed writer never finished (0: none)
    torn_bytes: int = 0

    def problems(self, path: Path) -> list[str]:
        """One message per unreadable line and for a torn tail, each naming where it is."""
        out = [f"{path}:{line}: unreadable line skipped ({why})" for line, why in self.unreadable]
        if self.torn_bytes:
            out.append(f"{path}: torn last line ({self.torn_bytes} bytes, no newline) ignored")
        return out


def read_records_checked(path: Path) -> RecordsFile:
    """Every record of ``records.jsonl``, with the line number and reason of each line that is
    not one (not UTF-8, not JSON, not an object, no point identity) and the size of a torn
    last line. A well-formed record of an unknown schema raises, with its line number: reading
    on would drop its fields."""
    from suite.plugin.errors import UsageError

    result = RecordsFile(records=[])
    path = Path(path)
    if not path.exists():
        return result
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(str(path), f"cannot read: {exc.strerror or exc}",
                         "a readable records.jsonl") from None
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    result.torn_bytes = len(tail)
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            result.unreadable.append((number, "empty line"))
            continue
        try:
            payload = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            result.unreadable.append((number, f"not UTF-8 at byte {exc.start}"))
            continue
        except json.JSONDecodeError as exc:
            result.unreadable.append((number, f"not JSON: {exc.msg} at column {exc.colno}"))
            continue
        if not isinstance(payload, dict):
            result.unreadable.append((number, f"a JSON {type(payload).__name__}, not an object"))
            continue
        missing = [name for name in RECORD_IDENTITY if name not in payload]
        if missing:
            result.unreadable.append((number, f"no {', '.join(missing)}"))
            continue
        wrong = wrong_type(payload)
        if wrong:
            result.unreadable.append((number, wrong))
            continue
        try:
            result.records.append(Record.from_json(payload))
        except UsageError as exc:
            raise UsageError(f"{path}:{number}: {exc.field}", exc.detail, exc.allowed) from None
        except (TypeError, ValueError) as exc:
            result.unreadable.append((number, f"not a record: {exc}"))
    return result


def _origin(spec: str) -> dict[str, Any] | None:
    """Where the problem's code came from (None where even that cannot be had: the record of
    a failure must still be written)."""
    try:
        import problems

        return problems.origin(spec)
    except Exception:  # noqa: BLE001
        return None


def _json_types(annotation: str) -> tuple[tuple[type, ...], bool]:
    """The JSON value types a field's annotation allows, and whether null is one of them."""
    kinds: tuple[type, ...] = ()
    for part in (p.strip() for p in annotation.split("|")):
        base = part.split("[", 1)[0]
        if base == "None":
            continue
        kinds += {"float": (int, float), "int": (int,), "str": (str,), "bool": (bool,),
                  "dict": (dict,), "list": (list,)}.get(base, (object,))
    return kinds, "None" in annotation


#: field → (JSON types it may hold, whether it may be null); from the dataclass annotations
FIELD_TYPES = {f.name: _json_types(str(f.type)) for f in fields(Record)}


def wrong_type(payload: dict[str, Any]) -> str | None:
    """Why a record's JSON object has a field of the wrong type (``time_s = "fast"``), or
    None: such a line is reported like a garbage line instead of shown as a blank."""
    for name, value in payload.items():
        if name not in FIELD_TYPES or name == "schema_version":
            continue  # unknown keys and layouts are Record.from_json's to refuse, loudly
        kinds, nullable = FIELD_TYPES[name]
        if value is None:
            if nullable:
                continue
        elif object in kinds or (isinstance(value, kinds)
                                 and not (isinstance(value, bool) and bool not in kinds)):
            continue
        want = " or ".join(dict.fromkeys({int: "a number" if float in kinds else "an integer",
                                          float: "a number", str: "a string",
                                          bool: "a boolean", dict: "an object",
                                          list: "a list"}[k] for k in kinds if k is not object))
        return (f"field {name!r} is {json.dumps(value)[:40]}, not {want}"
                f"{' or null' if nullable else ''}")
    return None


def read_records(path: Path) -> list[Record]:
    """Every record of ``records.jsonl`` (see :func:`read_records_checked` for what is not)."""
    return read_records_checked(path).records


def records_frame(records: list[Record]):
    """``records`` as a pandas DataFrame, one row per point, every schema column."""
    import pandas as pd

    rows = [r.to_json() for r in records]
    frame = pd.DataFrame(rows, columns=list(RECORD_FIELDS))
    if not frame.empty:
        frame["options_str"] = frame["options"].map(
            lambda o: ",".join(f"{k}={v}" for k, v in sorted((o or {}).items())))
    return frame


def write_json(path: Path, payload: Any) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed over it); the temporary
    file never outlives a failure."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_jsonable) + "\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


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
