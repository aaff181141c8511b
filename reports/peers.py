"""The peers table: each peer row beside the strategy of ours it corresponds to.

For every ok record of a peer row (``peer`` set) and the record of our corresponding strategy
(``Strategy.corresponds_to``) at the same problem, problem options, framework, device, dtype,
seed, n and K: both times, both peaks, both gradient errors (each against its own reference
kind, which is the same for the pair), the ratios ours/peer of time and peak (below 1: ours is
faster / smaller), and ‖g_ours − g_peer‖/‖g_peer‖. Records keep no gradients, so that last
number is the diagnostic ``grad_rel_diff_ours`` the harness computed when it measured the peer
(our strategy's gradient on the same instance, untimed,
``PeerStrategy.counterpart_difference`` in ``backends/peers/base.py``); a peer measured
without its counterpart still shows its own columns, the ratios then "–". Where ours does
not lead a row on time and on peak, the peer row's ``parity_note`` (the measured cause) stands
beside it.

The time ratio is paired where the sweep timed the peer against ours in one process, call by
call (a grid with ``pair_with = "counterpart"``: the median over ABBA blocks, with its exact
95 % interval); otherwise it divides the two records' median times, measured in separate
processes, which on a shared VM move by 15 % and more between runs.
"""

from __future__ import annotations

import math

import pandas as pd

import backends
from reports.cells import table
from suite import analysis
from suite.order import sort_rows

#: the keys a peer and our record must share to stand in one row
MATCH_KEYS = ["problem", "problem_options", "framework", "device", "dtype", "seed", "n", "K"]
COLUMNS = ["problem_options", "framework", "dtype", "n", "K", "backend", "peer", "ours",
           "time_s", "time_ours_s", "time_ratio", "time_interval", "time_measure", "peak_bytes",
           "peak_ours_bytes", "peak_ratio",
           "error", "error_ours", "grad_diff_error", "peer_steps", "converged_only",
           "trace_note", "note"]
HEADERS = {"problem_options": "problem options", "backend": "peer row", "peer": "library",
           "ours": "ours", "time_s": "time (peer)", "time_ours_s": "time (ours)",
           "time_ratio": "time ours/peer", "time_interval": "95 % interval",
           "time_measure": "time ratio from", "peak_bytes": "peak (peer)",
           "peak_ours_bytes": "peak (ours)", "peak_ratio": "peak ours/peer",
           "error": "error (peer)", "error_ours": "error (ours)",
           "grad_diff_error": "‖g_ours − g_peer‖/‖g_peer‖", "peer_steps": "steps (peer)",
           "converged_only": "converged-only", "trace_note": "trace bytes",
           "note": "where ours does not lead"}


def _counterpart(backend: str) -> str | None:
    strategy = backends.registry().get(backend)
    return None if strategy is None else strategy.counterpart()


def _ratio(ours: float, theirs: float) -> float:
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (ours, theirs)):
        return math.nan
    return float(ours) / float(theirs) if theirs else math.nan


def _paired(peer: pd.Series, ours_name: str | None) -> tuple[float, str, str] | None:
    """(ours/peer, its interval, how measured) from the peer record's paired blocks when the
    sweep timed it against ``ours_name`` in its process (a grid's ``pair_with``); None else.
    The record holds peer/ours: inverted, with the interval's ends swapped."""
    ratio, low, high = (peer.get(k) for k in ("time_ratio", "time_ratio_low", "time_ratio_high"))
    if (ours_name is None or peer.get("time_ratio_to") != ours_name
            or any(v is None or (isinstance(v, float) and math.isnan(v)) or v <= 0
                   for v in (ratio, low, high))):
        return None
    blocks = peer.get("time_ratios")
    count = len(blocks) if isinstance(blocks, list) else 0
    return (1.0 / ratio, f"[{1.0 / high:.3f}, {1.0 / low:.3f}]",
            f"paired, {count} ABBA blocks")


def _diag(row: pd.Series, key: str) -> float:
    diagnostics = row.get("diagnostics")
    value = diagnostics.get(key) if isinstance(diagnostics, dict) else None
    return math.nan if value is None else float(value)


def peers_table(frame: pd.DataFrame, problem: str | None = None) -> pd.DataFrame:
    """One row per ok peer record (of ``problem``, or all), with our matching record's numbers
    beside it; empty when no peer row was measured."""
    if frame.empty or "peer" not in frame:
        return pd.DataFrame(columns=COLUMNS)
    ok = analysis.ok_rows(frame)
    if problem is not None:
        ok = ok[ok["problem"] == problem]
    peers = ok[ok["peer"].notna()]
    rows = []
    for _, peer in peers.iterrows():
        ours_name = _counterpart(peer["backend"])
        mine = ok[(ok["backend"] == ours_name)
                  & (ok[MATCH_KEYS] == peer[MATCH_KEYS]).all(axis=1)] if ours_name else ok[:0]
        if len(mine) > 1:  # several option sets of ours: the one the peer shares, else defaults
            declared = {o.name for o in backends.registry()[ours_name].options}
            own = ",".join(f"{k}={v}" for k, v in sorted((peer["options"] or {}).items())
                           if k in declared)
            mine = mine[mine["strategy_options"] == own] if own in set(
                mine["strategy_options"]) else mine[mine["strategy_options"] == ""]
        ours = mine.iloc[0] if len(mine) else None
        get = (lambda col, r=ours: math.nan if r is None else r[col])  # noqa: E731
        strategy = backends.registry().get(peer["backend"])
        paired = _paired(peer, ours_name)
        time_ratio, interval, measure = paired or (
            _ratio(get("time_s"), peer["time_s"]), "–",
            "separate runs" if ours is not None else "–")
        peak_ratio = _ratio(get("peak_bytes"), peer["peak_bytes"])
        behind = not (time_ratio < 1 and peak_ratio < 1)  # NaN: not shown ahead either
        note = getattr(strategy, "parity_note", None)
        rows.append({
            **{k: peer[k] for k in MATCH_KEYS}, "backend": peer["backend"],
            "peer": peer["peer"], "ours": ours_name or "–",
            "time_s": peer["time_s"], "time_ours_s": get("time_s"),
            "time_ratio": time_ratio, "time_interval": interval, "time_measure": measure,
            "peak_bytes": peer["peak_bytes"], "peak_ours_bytes": get("peak_bytes"),
            "peak_ratio": peak_ratio,
            "error": peer["grad_rel_error"], "error_ours": get("grad_rel_error"),
            "grad_diff_error": _diag(peer, "grad_rel_diff_ours"),
            "peer_steps": _diag(peer, "peer_steps"),
            "converged_only": bool(getattr(strategy, "converged_only", False)),
            "trace_note": peer.get("trace_note") if isinstance(peer.get("trace_note"), str)
            else "metered",
            "note": note if note and behind and ours is not None else "–",
        })
    out = pd.DataFrame(rows, columns=COLUMNS)
    if out.empty:
        return out
    # grouped by our strategy in the registry's order, then by peer, then by size
    # (framework here by name, as the table always listed it)
    return sort_rows(out, ["problem_options", "framework", "dtype", "ours", "backend", "n", "K"],
                     ranked=("ours",)).reset_index(drop=True)


def peers_view(frame: pd.DataFrame, problem: str) -> dict | None:
    """The template's table for one problem (None when it has no peer rows)."""
    data = peers_table(frame, problem)
    if data.empty:
        return None
    # a column with one value and some gaps is not constant ("–" where nothing was measured;
    # pandas' string cast leaves NaN missing, which nunique would not count)
    data = data.astype(object).where(data.notna(), "–")
    return table(data, COLUMNS, HEADERS,
                 keep=("backend", "ours", "n", "K", "time_ratio", "time_measure", "peak_ratio",
                       "grad_diff_error"))
