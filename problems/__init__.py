"""Problems by name or by import path.

Built-in problems are the :class:`problems.base.Problem` subclasses of this package's modules
(adding one is adding a module here). Installed packages add problems by name through the
entry-point group ``ift_bench.problems`` (``name = "package.module:ClassName"``). Anything
else is given by import path: ``package.module:ClassName`` or ``path/to/file.py:ClassName``
(relative paths against the current directory). :func:`get` resolves all three, and every
command — ``list``, ``check``, ``point``, ``run``, configs, the worker subprocess — goes through
it, so a point's ``problem`` field (the spec as typed) means the same problem everywhere.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import pkgutil
import sys
from functools import cache
from pathlib import Path
from typing import Any

from problems import _vetting
from problems.base import REQUIRED_METHODS, Problem
from suite.plugin.errors import UsageError

ENTRY_POINT_GROUP = "ift_bench.problems"
#: what the ``problem`` field accepts besides a registered name
SPEC_FORMS = ("package.module:ClassName", "path/to/file.py:ClassName")


def _builtins() -> dict[str, Problem]:
    found: dict[str, Problem] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, Problem) and not inspect.isabstract(cls)
                    and cls.__module__ == module.__name__):
                if cls.name in found:
                    raise RuntimeError(f"two problems named {cls.name!r}")
                found[cls.name] = cls()
    return found


@cache
def registry() -> dict[str, Problem]:
    """Every problem known by name: this package's, then installed entry points, sorted.

    An entry point that does not load, or whose name shadows a built-in, is a
    :class:`UsageError` naming it (an installed package is the user's input too).
    """
    found = _builtins()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        field = f"entry point {ENTRY_POINT_GROUP}:{ep.name}"
        if ep.name in found:
            raise UsageError(field, f"{ep.name!r} is already a problem's name",
                             "a name no built-in problem uses")
        allowed = "an importable package.module:ClassName"
        _vetting.vet("entry", ep.value, f"{ep.value} ({field})", field, allowed)
        try:
            with _vetting.stdout_to_stderr():
                target = ep.load()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 — any failure is the package's
            raise UsageError(field, f"{ep.value} does not load: {_one_line(exc)}",
                             allowed) from None
        problem = _instantiate(target, f"{ep.value}", field)
        problem.name = ep.name  # the name the user types is the name it is registered under
        found[ep.name] = problem
    return dict(sorted(found.items()))


def get(spec: str, field: str = "problem") -> Problem:
    """The problem a spec names: a registered name, ``package.module:ClassName`` or
    ``path/to/file.py:ClassName``. Bad input is one :class:`UsageError` naming ``field``."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(field, f"{spec!r} is not a problem name", _allowed())
    names = registry()
    if spec in names:
        return names[spec]
    if ":" not in spec:
        raise UsageError(field, f"unknown {spec!r}", _allowed())
    target, _, class_name = spec.rpartition(":")
    if not target or not class_name.isidentifier():
        raise UsageError(field, f"{spec!r} is not TARGET:ClassName", _allowed())
    try:
        if target.endswith(".py") or "/" in target or "\\" in target:
            path = Path(target).expanduser().resolve()
            if path.is_dir():
                raise UsageError(field, f"{target!r} is a directory, not a Python file (in "
                                 f"{spec!r})", _allowed())
            if not path.is_file():
                raise UsageError(field, f"no such file {target!r} (in {spec!r})", _allowed())
            return _from_file(str(path), path.stat().st_mtime_ns, class_name, spec)
        return _from_module(target, class_name, spec)
    except UsageError as exc:  # resolved (and cached) once; named as the caller's field
        raise UsageError(field, exc.detail, exc.allowed) from None


def find(spec: str) -> Problem | None:
    """:func:`get`, or None where the spec no longer resolves (a report of an old run whose
    problem file has moved still renders)."""
    try:
        return get(spec)
    except UsageError:
        return None


def origin(spec: str) -> dict[str, Any] | None:
    """``{"module", "file", "sha256"}`` of the code a spec resolves to (the file's hash, so a
    results directory says exactly what was measured); None if it does not resolve."""
    problem = find(spec)
    if problem is None:
        return None
    cls = type(problem)
    try:
        path = Path(inspect.getfile(cls)).resolve()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except (OSError, TypeError):
        return {"module": f"{cls.__module__}:{cls.__qualname__}", "file": None, "sha256": None}
    return {"module": f"{cls.__module__}:{cls.__qualname__}", "file": str(path),
            "sha256": digest}


# ---- loading ---------------------------------------------------------------------------
def _allowed() -> list[str]:
    return [*registry(), *SPEC_FORMS]


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]


@cache
def _from_module(module_name: str, class_name: str, spec: str,
                 field: str = "problem") -> Problem:
    if module_name not in sys.modules:  # not yet imported: the user's code runs now
        _vetting.vet("module", module_name, f"module {module_name!r}", field, _allowed())
    try:
        with _vetting.stdout_to_stderr():
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name) and exc.name in module_name:
            raise UsageError(field, f"no module named {exc.name!r} (in {spec!r})",
                             _allowed()) from None
        raise UsageError(field, f"module {module_name!r} does not import: {_one_line(exc)}",
                         _allowed()) from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 — whatever the user's module raises
        raise UsageError(field, f"module {module_name!r} does not import: {_one_line(exc)}",
                         _allowed()) from None
    return _instantiate(_attribute(module, class_name, spec, field), spec, field)


@cache
def _from_file(path: str, mtime_ns: int, class_name: str, spec: str,
               field: str = "problem") -> Problem:
    """Import a file as a module of its own (a private name, so that a user's ``json.py``
    shadows nothing); keyed by path and modification time, so an edited file is re-read."""
    digest = hashlib.sha256(path.encode()).hexdigest()[:8]
    module_name = f"ift_bench_external.{Path(path).stem}_{digest}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise UsageError(field, f"{path!r} is not a Python file", _allowed())
    _vetting.vet("file", path, repr(path), field, _allowed())
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    try:
        with _vetting.stdout_to_stderr():
            loader_spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 — whatever the user's file raises
        sys.modules.pop(module_name, None)
        raise UsageError(field, f"{path!r} does not import: {_one_line(exc)}",
                         _allowed()) from None
    return _instantiate(_attribute(module, class_name, spec, field), spec, field)


def _attribute(module: Any, class_name: str, spec: str, field: str) -> Any:
    if not hasattr(module, class_name):
        raise UsageError(field, f"{spec!r}: the module has no {class_name!r}",
                         [n for n, v in vars(module).items()
                          if inspect.isclass(v) and issubclass(v, Problem) and v is not Problem]
                         or ["a subclass of problems.base.Problem"])
    return getattr(module, class_name)


def _instantiate(target: Any, spec: str, field: str) -> Problem:
    """Check that ``target`` is a complete Problem class and return its instance."""
    if not inspect.isclass(target) or not issubclass(target, Problem):
        raise UsageError(field, f"{spec!r} is not a problem: {target!r} is not a subclass of "
                         "problems.base.Problem", "a subclass of problems.base.Problem")
    missing = sorted(getattr(target, "__abstractmethods__", ()))
    missing += [m for m in REQUIRED_METHODS
                if m not in missing and not callable(getattr(target, m, None))]
    if missing:
        raise UsageError(field, f"{spec!r} does not implement {', '.join(missing)}",
                         f"a Problem with {', '.join(REQUIRED_METHODS)}")
    try:
        with _vetting.stdout_to_stderr():
            problem = target()
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        raise UsageError(field, f"{spec!r} cannot be constructed without arguments: "
                         f"{_one_line(exc)}", "a Problem class whose __init__ takes no "
                         "arguments") from None
    bad = problem.protocol_errors()
    if bad:
        raise UsageError(field, f"{spec!r}: {bad[0]}", "see README: Measuring your own problem")
    if not isinstance(getattr(problem, "name", None), str):
        problem.name = target.__name__
    return problem
