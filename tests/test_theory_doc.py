"""docs/theory.md lists every registered strategy, with the slope bands its ``theory``
attribute declares (the bands the analysis fits against)."""

from __future__ import annotations

from pathlib import Path

import backends

DOC = Path(__file__).resolve().parents[1] / "docs" / "theory.md"


def _band(text: str) -> tuple[float, float]:
    lo, _, hi = text.strip().partition("–")
    return float(lo), float(hi or lo)


def _table() -> dict[str, list[str]]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 8:
            rows[cells[0].strip("`")] = cells
    return rows


def test_doc_lists_every_registered_strategy_with_its_bands():
    rows = _table()
    assert set(rows) == set(backends.registry())
    for name, strategy in backends.registry().items():
        memory_K, memory_n, time_K = (_band(c) for c in rows[name][4:7])
        theory = strategy.theory
        assert memory_K == tuple(map(float, theory.memory_K)), name
        assert memory_n == tuple(map(float, theory.memory_n)), name
        assert time_K == tuple(map(float, theory.time_K)), name
        assert rows[name][7], f"{name}: no source"


def test_every_cited_source_is_listed():
    text = DOC.read_text(encoding="utf-8")
    cited = {tag for row in _table().values() for tag in row[7].replace(";", " ").split()
             if tag.startswith("[")}
    for tag in cited:
        assert f"* {tag}" in text, tag
