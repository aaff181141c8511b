"""A run is one version of the code: what a run's points were measured with, and where not.

``meta.json`` keeps the code identity a run began with (:func:`code_identity`: each problem's
``problem_origin`` — module, file, sha256 of the file — and the suite's version and commit).
``run --resume`` compares the problems' files with it (:func:`changed_problems`) and refuses a
changed one unless told to continue. A run that nevertheless holds several versions of one
problem's code (``--allow-code-change``, or records from before this check) is told apart by
the ``problem_origin.sha256`` of its records: :func:`separate_versions` gives each version its
own problem label, so no table row, series or fit of the report mixes two versions.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pandas as pd

from suite.env import git_state

#: characters of a file's sha256 shown in messages and version labels
SHORT = 12


def suite_identity() -> dict[str, Any]:
    try:
        version = importlib.metadata.version("ift-bench")
    except importlib.metadata.PackageNotFoundError:
        version = None
    git = git_state()
    return {"version": version, "commit": git.get("commit"), "dirty": git.get("dirty")}


def code_identity(config: Any) -> dict[str, Any]:
    """``{"suite": …, "problems": {spec: {"module", "file", "sha256"}}}`` of a config's
    problems as they resolve now."""
    import problems

    return {"suite": suite_identity(),
            "problems": {spec: problems.origin(spec) for spec in config.problems}}


def _sha(origin: Any) -> str | None:
    return origin.get("sha256") if isinstance(origin, dict) else None


def changed_problems(earlier_meta: dict, records: list, now: dict[str, Any]
                     ) -> list[tuple[str, str | None, str, str]]:
    """(spec, file, sha256 the run began with, sha256 now) for each problem whose code
    differs from the run's: meta.json's identity where it has one, else its records' (runs
    from before meta.json kept it)."""
    began = (earlier_meta.get("code") or {}).get("problems") or {}
    out = []
    for spec, origin in now["problems"].items():
        current = _sha(origin)
        before = _sha(began.get(spec))
        if before is None:  # an older run: the version its first record of spec was made with
            before = next((_sha(r.problem_origin) for r in records
                           if r.problem == spec and _sha(r.problem_origin)), None)
        if before is not None and current is not None and before != current:
            out.append((spec, origin.get("file"), before, current))
    return out


def describe_change(change: tuple[str, str | None, str, str]) -> str:
    spec, file, before, current = change
    return (f"problem {spec!r} changed since the run began: {file or spec} had sha256 "
            f"{before[:SHORT]}…, now {current[:SHORT]}…")


def versions(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Problem → the distinct sha256 of its records, for problems with more than one."""
    if frame.empty or "problem_origin" not in frame:
        return {}
    shas = frame["problem_origin"].map(_sha)
    out = {}
    for problem, group in shas.groupby(frame["problem"]):
        distinct = list(dict.fromkeys(s for s in group if s is not None))
        if len(distinct) > 1:
            out[str(problem)] = distinct
    return out


def version_label(problem: str, sha: str | None) -> str:
    return f"{problem}@{(sha or 'unknown')[:8]}"


def separate_versions(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the ``problem`` of every problem that holds several code versions
    replaced by ``PROBLEM@SHA8`` (its records' file hash): grouping by problem, as every
    table and fit does, then never mixes two versions."""
    mixed = versions(frame)
    if not mixed:
        return frame
    out = frame.copy()
    rows = out["problem"].isin(list(mixed))
    out.loc[rows, "problem"] = [version_label(p, _sha(o)) for p, o in
                                zip(out.loc[rows, "problem"], out.loc[rows, "problem_origin"],
                                    strict=True)]
    return out


def versions_note(frame: pd.DataFrame) -> str | None:
    """One sentence for the top of a report when a run holds several versions of the code."""
    mixed = versions(frame)
    if not mixed:
        return None
    shas = frame["problem_origin"].map(_sha)
    parts = []
    for problem, distinct in mixed.items():
        mine = frame["problem"] == problem
        counts = [f"{version_label(problem, s)} ({int((mine & (shas == s)).sum())} records)"
                  for s in distinct]
        parts.append(", ".join(counts))
    return ("This run holds several versions of the code: " + "; ".join(parts)
            + ". Each version is shown as its own problem; no table or fit mixes them.")
