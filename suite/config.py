"""Sweep configurations: TOML files in ``suite/configs/`` (or anywhere), or CLI lists.

A config names problems, backends, frameworks, dtypes, seeds, how points are measured
(repeats, timeout, memory cap, threads) and one or more ``[[grid]]`` tables of n and K values
(a K sweep at fixed n and an n sweep at fixed K, say, without paying for the full product).
``[options]`` applies to every point that declares the option; ``[options.<backend>]`` to one
backend, where a list of values is a grid; a grid's own ``options`` table (scalars) overrides
``[options]`` for that grid's points (e.g. ``wrt = "encoder"`` for one savi sweep). Unknown
keys and bad values raise :class:`~suite.plugin.errors.UsageError` naming the key and its line.
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import backends
import problems
from suite.frameworks import DEVICES, DTYPES
from suite.frameworks import registry as framework_registry
from suite.inputs import K_MAX, N_MAX, SEED_MAX, safe_component, sanitize_component
from suite.order import framework_rank, strategy_rank
from suite.plugin.errors import UsageError
from suite.point import Point, Settings

CONFIG_DIR = Path(__file__).parent / "configs"
TOP_KEYS = {"name", "description", "problems", "backends", "frameworks", "dtypes", "device",
            "seeds", "repeats", "timeout_s", "memory_cap", "threads", "pair_with", "grid",
            "options"}
GRID_KEYS = {"n", "K", "problems", "backends", "frameworks", "dtypes", "options", "pair_with",
             "timeout_s", "repeats"}
#: a grid's ``pair_with`` that pairs each peer row with the strategy of ours it corresponds to
COUNTERPART = "counterpart"
_UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


@dataclass(frozen=True)
class Grid:
    n: tuple[int, ...]
    K: tuple[int, ...]
    problems: tuple[str, ...] | None = None
    backends: tuple[str, ...] | None = None
    frameworks: tuple[str, ...] | None = None
    dtypes: tuple[str, ...] | None = None
    #: options for this grid's points, over the config's ``[options]``
    options: dict[str, Any] | None = None
    #: time this grid's points against this strategy in their own process (ABBA blocks), over
    #: the config's ``pair_with``; ``"counterpart"``: each peer row against the strategy of ours
    #: it corresponds to (our own rows are then not paired)
    pair_with: str | None = None
    #: seconds before one of this grid's points is killed (over the config's ``timeout_s``):
    #: a grid of large points gets the time they need without lending it to every point
    timeout_s: float | None = None
    #: timed repeats of this grid's points (over the config's ``repeats``): at the largest
    #: sizes one gradient takes tens of seconds, and one repeat may be all a sweep can afford
    #: (its time is then one sample; the memory meters and errors do not depend on it)
    repeats: int | None = None

    def pair_for(self, backend: str) -> str | None:
        """The strategy a point of ``backend`` in this grid is timed against (None: none)."""
        if self.pair_with != COUNTERPART:
            return self.pair_with
        return backends.registry()[backend].counterpart()

    def to_json(self) -> dict[str, Any]:
        """Lists for the tuples, the options table as a table (meta.json must round-trip)."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if value is None or isinstance(value, str | float | int):
                out[key] = value
            elif isinstance(value, dict):
                out[key] = dict(value)
            else:
                out[key] = list(value)
        return out


@dataclass(frozen=True)
class SweepConfig:
    name: str
    problems: tuple[str, ...]
    backends: tuple[str, ...]
    frameworks: tuple[str, ...]
    grids: tuple[Grid, ...]
    dtypes: tuple[str, ...] = ("float64",)
    device: str = "cpu"
    seeds: tuple[int, ...] = (0,)
    settings: Settings = field(default_factory=Settings)
    #: options for every point (applied where the point's problem or backend declares them)
    options: dict[str, Any] = field(default_factory=dict)
    #: per-backend options; a list value is a grid of values
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    source: str | None = None

    def points(self) -> list[Point]:
        """Every point, deduplicated, ordered so each series runs K upwards."""
        return sorted(self._grid_of_points().values(), key=lambda p: (
            p.problem, strategy_rank(p.backend), framework_rank(p.framework), p.dtype, p.n, p.seed,
            sorted((k, str(v)) for k, v in p.options.items()), p.K))

    def _grid_of_points(self) -> dict[str, Point]:
        """Every point by key, each from the first grid that names it."""
        seen: dict[str, Point] = {}
        for _, p in self._grid_points():
            seen.setdefault(p.key(), p)
        return seen

    def _grid_points(self):
        for grid in self.grids:
            for prob, back, fw, dtype, n, seed in itertools.product(
                grid.problems or self.problems, grid.backends or self.backends,
                grid.frameworks or self.frameworks, grid.dtypes or self.dtypes, grid.n,
                self.seeds,
            ):
                for opts in self._option_grid(prob, back, grid.options or {}):
                    for K in grid.K:
                        yield grid, Point(prob, back, fw, n=n, K=K, device=self.device,
                                          dtype=dtype, seed=seed, options=opts)

    def grid_settings(self) -> dict[str, dict[str, Any]]:
        """Point key → the settings its first grid sets over the config's (``pair_with``: the
        strategy it is timed against; ``timeout_s``; ``repeats``), for the points whose grid
        sets any."""
        out: dict[str, dict[str, Any]] = {}
        for grid, p in self._grid_points():
            key = p.key()
            if key in out:
                continue
            own: dict[str, Any] = {}
            if grid.pair_with is not None:
                own["pair_with"] = grid.pair_for(p.backend)
            if grid.timeout_s is not None:
                own["timeout_s"] = grid.timeout_s
            if grid.repeats is not None:
                own["repeats"] = grid.repeats
            out[key] = own
        return {k: v for k, v in out.items() if v}

    def settings_for(self, point: Point,
                     grid_settings: dict[str, dict[str, Any]] | None = None) -> Settings:
        """How ``point`` is measured: the config's settings, with what its grid sets over them
        (``grid_settings``: :meth:`grid_settings`, computed once by a sweep)."""
        grid_settings = self.grid_settings() if grid_settings is None else grid_settings
        own = grid_settings.get(point.key())
        return replace(self.settings, **own) if own else self.settings

    def _option_grid(self, problem: str, backend: str,
                     grid_options: dict[str, Any]) -> list[dict[str, Any]]:
        declared = ({o.name for o in problems.get(problem).options}
                    | {o.name for o in backends.registry()[backend].options})
        base = {k: v for k, v in {**self.options, **grid_options}.items() if k in declared}
        own = self.backend_options.get(backend, {})
        keys = sorted(own)
        values = [v if isinstance(v, list) else [v] for v in (own[k] for k in keys)]
        return [{**base, **dict(zip(keys, combo, strict=True))}
                for combo in itertools.product(*values)]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "source": self.source,
            "problems": list(self.problems), "backends": list(self.backends),
            "frameworks": list(self.frameworks), "dtypes": list(self.dtypes),
            "device": self.device, "seeds": list(self.seeds),
            "grids": [g.to_json() for g in self.grids],
            "settings": self.settings.__dict__, "options": self.options,
            "backend_options": self.backend_options,
        }


def config_from_json(payload: Any, where: str = "meta.json") -> SweepConfig:
    """Rebuild (and re-validate) a config from its ``to_json`` form, e.g. a run's meta.json.

    A payload that is not that form (hand-edited, truncated) is a UsageError naming ``where``.
    """
    if not isinstance(payload, dict):
        raise UsageError(f"{where}: config",
                         f"expected a JSON object, got {type(payload).__name__}",
                         "the config object a run writes")
    for key in ("name", "problems", "backends", "frameworks", "grids"):
        if key not in payload:
            raise UsageError(f"{where}: config.{key}", "missing", "the config object a run writes")
    for key, kind in (("settings", dict), ("options", dict), ("backend_options", dict),
                      ("grids", list)):
        if not isinstance(payload.get(key, kind()), kind):
            raise UsageError(f"{where}: config.{key}", f"expected a JSON {kind.__name__}",
                             "the config object a run writes")
    if not all(isinstance(g, dict) for g in payload["grids"]):
        raise UsageError(f"{where}: config.grids", "expected a list of objects",
                         "the config object a run writes")
    settings = payload.get("settings", {})
    raw = {
        "name": payload["name"], "description": payload.get("description", ""),
        "problems": payload["problems"], "backends": payload["backends"],
        "frameworks": payload["frameworks"], "dtypes": payload.get("dtypes", ["float64"]),
        "device": payload.get("device", "cpu"), "seeds": payload.get("seeds", [0]),
        "repeats": settings.get("repeats", 5), "timeout_s": settings.get("timeout_s", 300),
        "memory_cap": settings.get("memory_cap_bytes"), "threads": settings.get("threads", 1),
        "pair_with": settings.get("pair_with"),
        "grid": [{k: v for k, v in g.items() if v is not None} for g in payload["grids"]],
        "options": {**payload.get("options", {}), **payload.get("backend_options", {})},
    }
    source = payload.get("source")
    return build_config(raw, name=str(payload["name"]),
                        source=source if isinstance(source, str) else None,
                        where=lambda key: f"{where}: config.{key}")


# ---- parsing ------------------------------------------------------------------------------
def parse_bytes(value: Any, field_name: str = "memory_cap") -> int | None:
    """``8589934592``, ``"8GiB"``, ``"512 MiB"`` → bytes; ``None``/``0``/``"none"`` → no cap."""
    if isinstance(value, bool) or isinstance(value, float) and not math.isfinite(value):
        raise UsageError(field_name, f"cannot read {value!r} as a size",
                         "bytes as an integer, or a number with KiB, MiB, GiB, KB, MB, GB")
    if value is None or value == 0 or (isinstance(value, str) and value.lower() in {"none", ""}):
        return None
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise UsageError(field_name, f"cannot read {value!r} as a size",
                         "bytes as an integer, or a number with KiB, MiB, GiB, KB, MB, GB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _names(value: Any, field_name: str, allowed: dict | tuple) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise UsageError(field_name, f"expected a non-empty list of names, got {value!r}",
                         list(allowed))
    for item in items:
        if not isinstance(item, str):
            raise UsageError(field_name, f"{item!r} is not a name", list(allowed))
        if item not in allowed:
            raise UsageError(field_name, f"unknown {item!r}", list(allowed))
    return tuple(items)


def _problem_names(value: Any, field_name: str) -> tuple[str, ...]:
    """Problem names, each a registered name or an import path (``package.module:Class``,
    ``path/to/file.py:Class``, relative to the current directory) that resolves to a problem."""
    allowed = [*problems.registry(), *problems.SPEC_FORMS]
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise UsageError(field_name, f"expected a non-empty list of names, got {value!r}",
                         allowed)
    for item in items:
        if not isinstance(item, str):
            raise UsageError(field_name, f"{item!r} is not a name", allowed)
        problems.get(item, field_name)
    return tuple(items)


def _ints(value: Any, field_name: str, minimum: int, maximum: int) -> tuple[int, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    allowed = f"integers from {minimum} to {maximum}"
    if not items:
        raise UsageError(field_name, "expected at least one value", allowed)
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or not minimum <= item <= maximum:
            raise UsageError(field_name, f"{item!r} is not an integer from {minimum} to {maximum}",
                             allowed)
        out.append(item)
    return tuple(out)


def build_config(raw: dict[str, Any], *, name: str, source: str | None = None,
                 where: Any = None) -> SweepConfig:
    """Validate a config mapping. ``where(key)`` names the key's location for messages.

    The keys are checked in the order a reader meets them (identity, settings, grids,
    options), so the first mistake in a file is the one reported."""
    loc = where or (lambda key: key)
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise UsageError(loc(unknown[0]), "unknown key", sorted(TOP_KEYS))
    swept = _what_to_sweep(raw, loc, name, source)
    settings = _settings(raw, loc)
    grids = tuple(_grid(g, i, loc) for i, g in enumerate(_grid_tables(raw.get("grid"), loc)))
    config = SweepConfig(**swept, settings=settings, grids=grids, **_options(raw, loc))
    _check_options(config, loc)
    return config


def _what_to_sweep(raw: dict[str, Any], loc: Any, name: str,
                   source: str | None) -> dict[str, Any]:
    """The config's name and description, and the problems, strategies, frameworks, dtypes,
    device and seeds every grid sweeps unless it names its own."""
    # the name becomes the run directory's name: one safe path component, never a path
    config_name = (safe_component(loc("name"), raw["name"]) if "name" in raw
                   else sanitize_component(name))
    if not isinstance(raw.get("description", ""), str):
        raise UsageError(loc("description"), "not a string", "a string")
    kwargs: dict[str, Any] = {"name": config_name, "source": source,
                              "description": raw.get("description", "")}
    if "problems" not in raw:
        raise UsageError(loc("problems"), "missing", [*problems.registry(), *problems.SPEC_FORMS])
    kwargs["problems"] = _problem_names(raw["problems"], loc("problems"))
    for key, allowed in (("backends", backends.registry()), ("frameworks", framework_registry())):
        if key not in raw:
            raise UsageError(loc(key), "missing", list(allowed))
        kwargs[key] = _names(raw[key], loc(key), allowed)
    kwargs["dtypes"] = _names(raw.get("dtypes", ["float64"]), loc("dtypes"), DTYPES)
    device = raw.get("device", "cpu")
    if device not in DEVICES:
        raise UsageError(loc("device"), f"unknown {device!r}", DEVICES)
    kwargs["device"] = device
    kwargs["seeds"] = _ints(raw.get("seeds", [0]), loc("seeds"), 0, SEED_MAX)
    return kwargs


def _settings(raw: dict[str, Any], loc: Any) -> Settings:
    """How each point is measured: repeats, timeout, memory cap, threads, the paired strategy."""
    defaults = Settings()
    settings = replace(
        defaults,
        repeats=raw.get("repeats", defaults.repeats),
        timeout_s=raw.get("timeout_s", defaults.timeout_s),
        memory_cap_bytes=parse_bytes(raw.get("memory_cap"), loc("memory_cap")),
        threads=raw.get("threads", defaults.threads),
        pair_with=raw.get("pair_with"),
    ).validate({"repeats": loc("repeats"), "timeout_s": loc("timeout_s"),
                "memory_cap_bytes": loc("memory_cap"), "threads": loc("threads"),
                "pair_with": loc("pair_with")})
    return replace(settings, timeout_s=float(settings.timeout_s))


def _grid_tables(grids_raw: Any, loc: Any) -> list[Any]:
    if not isinstance(grids_raw, list) or not grids_raw:
        raise UsageError(loc("grid"), "expected at least one [[grid]] table with n and K",
                         sorted(GRID_KEYS))
    return grids_raw


def _grid(g: Any, i: int, loc: Any) -> Grid:
    """The ``i``-th ``[[grid]]`` table: its n and K, and what it sweeps in place of the top's."""
    if not isinstance(g, dict):
        raise UsageError(loc(f"grid[{i}]"), f"{g!r} is not a table with n and K",
                         sorted(GRID_KEYS))
    unknown = sorted(set(g) - GRID_KEYS)
    if unknown:
        raise UsageError(loc(f"grid[{i}].{unknown[0]}"), "unknown key", sorted(GRID_KEYS))
    for required in ("n", "K"):
        if required not in g:
            raise UsageError(loc(f"grid[{i}].{required}"), "missing", "a list of integers")
    return Grid(
        n=_ints(g["n"], loc(f"grid[{i}].n"), 1, N_MAX),
        K=_ints(g["K"], loc(f"grid[{i}].K"), 1, K_MAX),
        problems=_problem_names(g["problems"], loc(f"grid[{i}].problems"))
        if "problems" in g else None,
        backends=_names(g["backends"], loc(f"grid[{i}].backends"), backends.registry())
        if "backends" in g else None,
        frameworks=_names(g["frameworks"], loc(f"grid[{i}].frameworks"), framework_registry())
        if "frameworks" in g else None,
        dtypes=_names(g["dtypes"], loc(f"grid[{i}].dtypes"), DTYPES)
        if "dtypes" in g else None,
        options=_grid_options(g["options"], loc(f"grid[{i}].options"))
        if "options" in g else None,
        pair_with=_grid_pair_with(g["pair_with"], loc(f"grid[{i}].pair_with"))
        if "pair_with" in g else None,
        timeout_s=_grid_timeout(g["timeout_s"], loc(f"grid[{i}].timeout_s"))
        if "timeout_s" in g else None,
        repeats=_grid_repeats(g["repeats"], loc(f"grid[{i}].repeats"))
        if "repeats" in g else None,
    )


def _grid_timeout(value: Any, where: str) -> float:
    checked = replace(Settings(), timeout_s=value).validate({"timeout_s": where})
    return float(checked.timeout_s)


def _grid_repeats(value: Any, where: str) -> int:
    return replace(Settings(), repeats=value).validate({"repeats": where}).repeats


def _grid_pair_with(value: Any, where: str) -> str:
    allowed = [COUNTERPART, *sorted(backends.registry())]
    if not isinstance(value, str) or (value != COUNTERPART and value not in backends.registry()):
        raise UsageError(where, f"unknown {value!r}", allowed)
    return value


def _options(raw: dict[str, Any], loc: Any) -> dict[str, Any]:
    """``[options]`` (every point's) and ``[options.<strategy>]`` tables (one strategy's)."""
    options, per_backend = {}, {}
    options_raw = raw.get("options", {})
    if not isinstance(options_raw, dict):
        raise UsageError(loc("options"), f"{options_raw!r} is not a table",
                         "[options] with name = value, and [options.<backend>] tables")
    strats = backends.registry()
    for key, value in options_raw.items():
        if isinstance(value, dict):
            if key not in strats:
                raise UsageError(loc(f"options.{key}"), "not a backend", list(strats))
            for opt, v in value.items():
                if isinstance(v, list) and not v:
                    raise UsageError(loc(f"options.{key}.{opt}"), "empty list",
                                     "a value, or a non-empty list of values (a grid)")
            per_backend[key] = dict(value)
        else:
            options[key] = value
    return {"options": options, "backend_options": per_backend}


def _check_options(config: SweepConfig, loc: Any) -> None:
    """Parse every option value now, so a typo fails before the first point runs."""
    from suite.plugin.options import resolve

    declared_anywhere = set()
    for name in config.backends:
        declared_anywhere |= {o.name for o in backends.registry()[name].options}
    for name in config.problems:
        declared_anywhere |= {o.name for o in problems.get(name).options}
    for key in config.options:
        if key not in declared_anywhere:
            raise UsageError(loc(f"options.{key}"),
                             "not an option of any problem or backend in this config",
                             sorted(declared_anywhere) or ["(none)"])
    for i, grid in enumerate(config.grids):
        for key in grid.options or {}:
            if key not in declared_anywhere:
                raise UsageError(loc(f"grid[{i}].options.{key}"),
                                 "not an option of any problem or backend in this config",
                                 sorted(declared_anywhere) or ["(none)"])
    def owners(problem_names, backend_names):
        return ([(f"problem {n}", problems.get(n).options) for n in problem_names]
                + [(f"backend {n}", backends.registry()[n].options) for n in backend_names])

    # a grid's options are read by its own problems and backends only (two problems may
    # declare the same option name with different choices: deq's and qp's ``solver``)
    scopes = [("options", config.options, owners(config.problems, config.backends))] + [
        (f"grid[{i}].options", g.options or {},
         owners(g.problems or config.problems, g.backends or config.backends))
        for i, g in enumerate(config.grids)]
    for scope, opts, scope_owners in scopes:
        for key, value in opts.items():
            for owner, declared in scope_owners:
                if key in {o.name for o in declared}:
                    try:
                        resolve(declared, {key: value}, owner)
                    except UsageError as exc:
                        raise UsageError(loc(f"{scope}.{key}"),
                                         str(exc).split(": ", 1)[1]) from None
    for backend, opts in config.backend_options.items():
        strategy = backends.registry()[backend]
        for key, value in opts.items():
            values = value if isinstance(value, list) else [value]
            for v in values:
                try:
                    resolve(strategy.options, {key: v}, f"backend {backend}")
                except UsageError as exc:
                    raise UsageError(loc(f"options.{backend}.{key}"),
                                     str(exc).split(": ", 1)[1]) from None


def _grid_options(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or any(isinstance(v, dict | list) for v in value.values()):
        raise UsageError(where, f"{value!r} is not a table of scalar options",
                         'e.g. options = { wrt = "encoder" }')
    return dict(value)


def _line_locator(text: str, path: str):
    """``key`` (``repeats``, ``grid[1].K``, ``options.ift-cg.tol``) → ``"path:line: key"``."""
    lines = text.splitlines()

    def find(pattern: str, start: int = 0, nth: int = 0) -> int | None:
        hits = [i for i in range(start, len(lines)) if re.search(pattern, lines[i])]
        return hits[nth] if len(hits) > nth else None

    def where(key: str) -> str:
        start, leaf = 0, key
        grid = re.fullmatch(r"grid\[(\d+)\]\.(.+)", key)
        if grid:
            start, leaf = find(r"^\s*\[\[\s*grid\s*\]\]", nth=int(grid.group(1))), grid.group(2)
        elif key.startswith("options."):
            parts = key.split(".")
            header = find(rf"^\s*\[\s*options\.\"?{re.escape(parts[1])}\"?\s*\]")
            if len(parts) == 2 and header is not None:
                return f"{path}:{header + 1}: {key}"
            if len(parts) == 3 and header is not None:
                start, leaf = header, parts[2]
            else:
                start, leaf = find(r"^\s*\[\s*options\s*\]") or 0, parts[-1]
        line = None if start is None else find(rf'^\s*"?{re.escape(leaf)}"?\s*=', start)
        return f"{path}:{line + 1}: {key}" if line is not None else f"{path}: {key}"

    return where


def resolve_config_path(name_or_path: str) -> Path:
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise UsageError("--config", "empty", sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
    path = Path(name_or_path)
    if path.is_dir():
        raise UsageError("--config", f"{name_or_path!r} is a directory",
                         "a config name or a TOML file")
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise UsageError("--config", f"no such file {name_or_path!r}",
                             sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.toml"
    if not candidate.exists():
        raise UsageError("--config", f"unknown config {name_or_path!r}",
                         sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
    return candidate


def load_config(name_or_path: str) -> SweepConfig:
    path = resolve_config_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError("--config", f"{str(path)!r} is not UTF-8 text (byte {exc.start})",
                         "a UTF-8 TOML file") from None
    except OSError as exc:
        raise UsageError("--config", f"cannot read {str(path)!r}: {exc.strerror or exc}",
                         "a readable TOML file") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(str(path), f"not valid TOML: {exc}", "a TOML file (toml.io)") from None
    return build_config(raw, name=path.stem, source=str(path),
                        where=_line_locator(text, str(path)))
