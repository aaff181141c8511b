"""Claims from the literature the suite can test, each with its source and the rule deciding it.

Beside Chiu (2021)'s claims (``reports.claims``, whose :class:`Claim`, :class:`Verdict` and
verdicts these use): iMAML's memory flat in K (Rajeswaran et al. 2019), √K checkpointing at
about one extra forward pass (Chen et al. 2016), a DEQ's implicit backward memory constant in
the solver's steps (Bai et al. 2019), Jacobian-free backprop's bias for time (Fung et al. 2022),
truncated backprop's error for cost (Shaban et al. 2019). A claim whose source measured on a GPU
says so in its numbers when the run measured on CPUs only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from reports.claims import (
    CAVEAT,
    CONFIRMED,
    NOT_MEASURED,
    SERIES,
    SLOPE_TOLERANCE,
    Claim,
    Verdict,
    majority,
    panel_of_first,
    top_slope,
    where,
)
from reports.units import format_bytes, format_seconds

#: Chen et al. (2016): √K checkpointing costs one extra forward pass; confirmed while its time at
#: the largest K is at most this factor of unrolled's (one more forward at most doubles it)
CHECKPOINT_TIME_FACTOR = 2.0
#: Chen et al.'s measured cost of √K checkpointing: +30 % time on their networks (GPU)
CHEN_REFERENCE_RATIO = 1.3
#: Shaban et al. (2019): "approximates the exact gradient": truncated's error against the exact
#: K-step gradient at most this (relative, 2-norm)
TRUNCATED_ERROR_BOUND = 0.5
#: what identifies a point across strategies
POINT = ["problem", "problem_options", "dtype", "device", "seed", "n", "framework", "K"]


def _medians(data: pd.DataFrame, backend: str, columns: list[str]) -> pd.DataFrame:
    """Per point, the median of ``columns`` over ``backend``'s records (one strategy option set
    per point: the first, sorted, where a run has several)."""
    chosen = data[data["backend"] == backend]
    if chosen.empty:
        return pd.DataFrame(columns=POINT + columns)
    first = chosen.groupby(POINT)["strategy_options"].transform("min")
    chosen = chosen[chosen["strategy_options"] == first]
    return chosen.groupby(POINT, as_index=False)[columns].median()


def _error_vs(row: pd.Series | dict, column: str) -> float:
    """The error against one reference, falling back on ``grad_rel_error`` where the record
    gives no separate column but that is its own reference."""
    value = row.get(column)
    if value is not None and pd.notna(value):
        return float(value)
    ref = column.removeprefix("grad_error_")
    if row.get("reference") == ref and pd.notna(row.get("grad_rel_error")):
        return float(row["grad_rel_error"])
    return math.nan


def _memory_flat_against_unrolled(data: pd.DataFrame, problem: str,
                                  flat: Callable[[str], bool], flat_name: str) -> Verdict:
    """On ``problem``: peak slope over the top decade of K within SLOPE_TOLERANCE of 0 for every
    series of a ``flat`` strategy, of 1 for unrolled's (per n, framework and options)."""
    chosen = data[(data["problem"] == problem)
                  & ((data["backend"] == "unrolled") | data["backend"].map(flat).astype(bool))]
    numbers, failures, total, flat_total = [], 0, 0, 0
    for _, group in chosen.groupby(SERIES + ["n"], sort=True):
        backend = group["backend"].iloc[0]
        fit = top_slope(group, "K", "peak_bytes")
        if fit is None:
            continue
        slope, lo, hi = fit
        want = 1.0 if backend == "unrolled" else 0.0
        ok = abs(slope - want) <= SLOPE_TOLERANCE
        total += 1
        failures += not ok
        flat_total += backend != "unrolled"
        opts = f" ({group['strategy_options'].iloc[0]})" if group["strategy_options"].iloc[0] \
            else ""
        numbers.append(f"{'' if ok else '✗ '}{backend}{opts} {where(group.iloc[0])}: peak "
                       f"slope {slope:.2f} from K = {lo} to {hi} "
                       f"({format_bytes(_median_at(group, lo))} → "
                       f"{format_bytes(_median_at(group, hi))}; expected {want:g})")
    if not flat_total:
        return Verdict(NOT_MEASURED, (f"no {flat_name} series on {problem} over a decade of K",),
                       "decision")
    verdict = majority(failures, total)
    if total == flat_total:
        numbers.append(f"unrolled not measured on {problem} over a decade of K: only the "
                       "implicit half of the claim is tested")
        if verdict == CONFIRMED:
            verdict = CAVEAT
    return Verdict(verdict, tuple(numbers), panel_of_first(chosen, "n", "peak"))


def _median_at(group: pd.DataFrame, K: int) -> float:
    return float(group[group["K"] == K]["peak_bytes"].median())


def _imaml_memory(data: pd.DataFrame) -> Verdict:
    return _memory_flat_against_unrolled(data, "imaml", lambda b: b == "ift-cg", "ift-cg")


def _deq_memory(data: pd.DataFrame) -> Verdict:
    return _memory_flat_against_unrolled(data, "deq", lambda b: b.startswith("ift-"),
                                         "ift-* (implicit backward)")


def _checkpoint_time(data: pd.DataFrame) -> Verdict:
    """checkpoint-sqrt's time over unrolled's at each series' largest common K."""
    merged = _medians(data, "checkpoint-sqrt", ["time_s"]).merge(
        _medians(data, "unrolled", ["time_s"]), on=POINT, suffixes=("", "_unrolled"))
    merged = merged.dropna(subset=["time_s", "time_s_unrolled"])
    if merged.empty:
        return Verdict(NOT_MEASURED, ("checkpoint-sqrt and unrolled never timed at one point",),
                       "decision")
    numbers, heads, over = [], [], 0
    for _, group in merged.groupby(POINT[:-1], sort=True):
        last = group.sort_values("K").iloc[-1]
        ratio = float(last["time_s"] / last["time_s_unrolled"])
        over += ratio > CHECKPOINT_TIME_FACTOR
        heads.append(f"{ratio:.2f}× ({last['framework']})")
        numbers.append(f"{'' if ratio <= CHECKPOINT_TIME_FACTOR else '✗ '}{where(last)} K = "
                       f"{last['K']}: {format_seconds(last['time_s'])} against unrolled's "
                       f"{format_seconds(last['time_s_unrolled'])}: {ratio:.2f}×")
    numbers.append(f"Chen et al. measured {CHEN_REFERENCE_RATIO:g}× (+30 %); the rule: at most "
                   f"{CHECKPOINT_TIME_FACTOR:g}× (one extra forward pass)")
    verdict = majority(over, len(heads))
    return Verdict(verdict, tuple(numbers), panel_of_first(merged, "n", "time"),
                   headline="checkpoint-sqrt ÷ unrolled time " + ", ".join(heads))


def _jfb_trade(data: pd.DataFrame) -> Verdict:
    """ift-jfb against ift-cg (or ift-gmres where the point has no ift-cg) at each series'
    largest K: faster, and less accurate against the converged gradient?"""
    cols = ["time_s", "grad_error_converged"]
    chosen = data[data["backend"].isin(["ift-jfb", "ift-cg", "ift-gmres"])]
    if not (chosen["backend"] == "ift-jfb").any():
        return Verdict(NOT_MEASURED, ("no ift-jfb record",), "decision")
    chosen = chosen.assign(grad_error_converged=[
        _error_vs(r, "grad_error_converged") for _, r in chosen.iterrows()])
    jfb = _medians(chosen, "ift-jfb", cols)
    # ift-cg where the point has it, else ift-gmres (sorted by name: cg first)
    both = pd.concat([_medians(chosen, name, cols).assign(_exact=name)
                      for name in ("ift-cg", "ift-gmres")]).sort_values("_exact", kind="stable")
    both = both.drop_duplicates(subset=POINT, keep="first")
    merged = jfb.merge(both, on=POINT, suffixes=("", "_exact")).dropna(
        subset=["time_s", "time_s_exact"])
    if merged.empty:
        return Verdict(NOT_MEASURED, ("ift-jfb never measured at a point of ift-cg or "
                                      "ift-gmres",), "decision")
    numbers, heads, slower, free = [], [], 0, 0
    for _, group in merged.groupby(POINT[:-1], sort=True):
        last = group.sort_values("K").iloc[-1]
        speedup = float(last["time_s_exact"] / last["time_s"])
        e_jfb, e_exact = last["grad_error_converged"], last["grad_error_converged_exact"]
        faster = speedup > 1
        biased = pd.notna(e_jfb) and pd.notna(e_exact) and e_jfb > e_exact
        slower += not faster
        free += faster and not biased
        heads.append(f"{speedup:.2f}× faster, error {e_jfb:.1e} ({last['framework']})")
        mark = "" if faster and biased else "✗ " if not faster else "~ "
        numbers.append(f"{mark}{where(last)} K = {last['K']}: ift-jfb "
                       f"{format_seconds(last['time_s'])} against {last['_exact']}'s "
                       f"{format_seconds(last['time_s_exact'])} ({speedup:.2f}× faster); error "
                       f"against the converged gradient {e_jfb:.1e} against {e_exact:.1e}")
    verdict = majority(slower, len(heads))
    if verdict == CONFIRMED and free:
        verdict = CAVEAT
        numbers.append(f"at {free} of {len(heads)} points ift-jfb is faster without a larger "
                       "error: no bias to trade there (∂F/∂x close to the identity?)")
    return Verdict(verdict, tuple(numbers), panel_of_first(merged, "n", "time"),
                   headline="ift-jfb " + "; ".join(heads))


def _truncated_tradeoff(data: pd.DataFrame) -> Verdict:
    """truncated against unrolled at each series' largest K where the truncation k < K."""
    chosen = data[data["backend"] == "truncated"].copy()
    if chosen.empty:
        return Verdict(NOT_MEASURED, ("no truncated record",), "decision")
    chosen["_error"] = [_error_vs(r, "grad_error_k_step") for _, r in chosen.iterrows()]
    chosen["_k"] = [(r if isinstance(r, dict) else {}).get("k") for r in
                    chosen["options_resolved"]]
    base = _medians(data, "unrolled", ["time_s", "peak_bytes"])
    numbers, heads, wrong = [], [], 0
    for _, group in chosen.groupby(SERIES + ["n"], sort=True):
        points = group.groupby("K", as_index=False).agg(
            time_s=("time_s", "median"), peak_bytes=("peak_bytes", "median"),
            _error=("_error", "median"), _k=("_k", "first"))
        points = points[points["_k"].isna() | (points["_k"] < points["K"])]
        row = group.iloc[0]
        points = points.assign(**{k: row[k] for k in POINT if k != "K"}).merge(
            base, on=POINT, suffixes=("", "_unrolled"))
        if points.empty:
            continue
        last = points.sort_values("K").iloc[-1]
        t = last["time_s"] / last["time_s_unrolled"]
        m = last["peak_bytes"] / last["peak_bytes_unrolled"]
        cheaper = bool(t < 1 or m < 1)
        close = bool(pd.notna(last["_error"]) and last["_error"] <= TRUNCATED_ERROR_BOUND)
        wrong += not (cheaper and close)
        k = "?" if pd.isna(last["_k"]) else int(last["_k"])
        heads.append(f"k = {k}: error {last['_error']:.1e}, time {t:.2f}×, peak {m:.2f}× "
                     f"({last['framework']})")
        numbers.append(f"{'' if cheaper and close else '✗ '}{where(last)} K = {last['K']}, "
                       f"k = {k}: error against the exact K-step gradient "
                       f"{last['_error']:.1e} (bound {TRUNCATED_ERROR_BOUND:g}); time "
                       f"{format_seconds(last['time_s'])} = {t:.2f}× unrolled's, peak "
                       f"{format_bytes(last['peak_bytes'])} = {m:.2f}× unrolled's")
    if not heads:
        return Verdict(NOT_MEASURED, ("truncated never measured beside unrolled with k < K",),
                       "decision")
    return Verdict(majority(wrong, len(heads)), tuple(numbers),
                   panel_of_first(chosen, "n", "time"), headline="truncated " + "; ".join(heads))


LITERATURE_CLAIMS: tuple[Claim, ...] = (
    Claim("imaml-memory", "Rajeswaran et al. 2019 (NeurIPS)",
          "iMAML's implicit meta-gradient needs the memory of one inner-loop gradient, "
          "whatever the number of inner steps K; MAML's (reverse mode through the K steps) "
          "grows linearly in K.",
          _imaml_memory,
          f"on imaml, per n and framework: ift-cg's peak slope over the top decade of K within "
          f"{SLOPE_TOLERANCE} of 0, unrolled's (MAML) within {SLOPE_TOLERANCE} of 1; a "
          "minority of exceptions, or unrolled not measured: caveat",
          source="A. Rajeswaran, C. Finn, S. Kakade, S. Levine (2019), \"Meta-Learning with "
                 "Implicit Gradients\", NeurIPS"),
    Claim("chen-checkpoint-time", "Chen et al. 2016 (arXiv:1604.06174)",
          "√K checkpointing pays for its sublinear memory with about one extra forward pass: "
          f"+30 % time ({CHEN_REFERENCE_RATIO:g}×) on their networks.",
          _checkpoint_time,
          f"checkpoint-sqrt's time over unrolled's at the largest K, per n and framework, at "
          f"most {CHECKPOINT_TIME_FACTOR:g}× (one more forward pass at most doubles the cost); "
          "a minority above: caveat",
          source="T. Chen, B. Xu, C. Zhang, C. Guestrin (2016), \"Training Deep Nets with "
                 "Sublinear Memory Cost\", arXiv:1604.06174",
          gpu_note="Chen et al.'s +30 % is a GPU measurement on deep networks; these are CPU "
                   "times, which say how much recomputation costs here, not on a GPU"),
    Claim("deq-memory", "Bai, Kolter & Koltun 2019 (NeurIPS)",
          "A deep equilibrium model's implicit backward pass needs memory constant in the "
          "number of solver steps; backpropagating through the steps needs memory linear "
          "in them.",
          _deq_memory,
          f"on deq, per n and framework: every ift-* strategy's peak slope over the top decade "
          f"of K within {SLOPE_TOLERANCE} of 0, unrolled's within {SLOPE_TOLERANCE} of 1; a "
          "minority of exceptions, or unrolled not measured: caveat",
          source="S. Bai, J. Z. Kolter, V. Koltun (2019), \"Deep Equilibrium Models\", NeurIPS",
          gpu_note="Bai et al.'s memory figures are GPU memory of large sequence models; the "
                   "slope in K is the algorithm's and carries over, their absolute savings do "
                   "not"),
    Claim("jfb-trade", "Fung et al. 2022 (AAAI)",
          "Jacobian-free backprop trades bias for time: dropping the Jacobian solve makes the "
          "backward pass cheaper at the price of an inexact gradient.",
          _jfb_trade,
          "at each series' largest K: ift-jfb faster than ift-cg (or ift-gmres where ift-cg is "
          "not measured) and its error against the converged gradient larger; not faster at a "
          "minority of points, or faster with no larger error: caveat; not faster at most: "
          "refuted",
          source="S. Wu Fung, H. Heaton, Q. Li, D. McKenzie, S. Osher, W. Yin (2022), \"JFB: "
                 "Jacobian-Free Backpropagation for Implicit Networks\", AAAI",
          gpu_note="Fung et al. timed training on a GPU; CPU times say what the skipped solve "
                   "costs here, not what it costs among a GPU's kernels"),
    Claim("truncated-backprop", "Shaban et al. 2019 (AISTATS)",
          "Back-propagating through only the last few steps approximates the exact gradient "
          "at a fraction of the cost of full reverse mode.",
          _truncated_tradeoff,
          "at each series' largest K above the truncation k: truncated's time or peak below "
          "unrolled's and its error against the exact K-step gradient at most "
          f"{TRUNCATED_ERROR_BOUND:g}; a minority of exceptions: caveat",
          source="A. Shaban, C.-A. Cheng, N. Hatch, B. Boots (2019), \"Truncated "
                 "Back-propagation for Bilevel Optimization\", AISTATS"),
)


def evaluate_literature(frame: pd.DataFrame) -> list[tuple[Claim, Verdict]]:
    """The claims from the literature, each with its verdict on ``frame``."""
    return [(claim, claim.evaluate(frame)) for claim in LITERATURE_CLAIMS]
