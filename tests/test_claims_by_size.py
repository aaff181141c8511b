"""Claims judged per size band, and the claims from the literature, on frames built by hand
with known laws at several n: where the verdict flips, the crossover K*(n) and its fitted
exponent, and each literature claim confirmed, refuted and left unmeasured."""

from __future__ import annotations

import math
import re

import pytest

from reports import claims, literature_claims, views

from .test_claims import _frame, _rec

KS = (10, 100, 1000)


def _claim(claim_id: str) -> claims.Claim:
    return {c.id: c for c in (*claims.CLAIMS, *literature_claims.LITERATURE_CLAIMS)}[claim_id]


# --- the bands themselves --------------------------------------------------------------------

def test_one_size_gets_no_bands_and_bands_merge_consecutive_sizes_with_one_verdict():
    rows = [_rec(b, K, peak_bytes=int(1e3 * K) if b == "unrolled" else 5000)
            for b in ("unrolled", "ift-cg") for K in KS]
    verdict = _claim("unrolled-memory-linear").evaluate(_frame(rows))
    assert verdict.verdict == claims.CONFIRMED and verdict.bands == () and verdict.changes == ""

    def band(n: int, v: str) -> claims.Band:
        return claims.Band("gd", (n,), v, (f"at {n}",))
    R, C = claims.REFUTED, claims.CONFIRMED
    merged = claims.merged_bands((band(50, R), band(100, R), band(200, C), band(400, C),
                                  band(800, R)))
    assert [(b.label, b.verdict) for b in merged] == [
        ("n ≤ 100", R), ("200 ≤ n ≤ 400", C), ("n = 800", R)]
    assert merged[0].numbers == ("at 50", "at 100") and merged[0].sizes == (50, 100)
    assert claims.changes_line((band(50, R), band(100, C), band(200, C))) \
        == "gd: refuted at n = 50; confirmed at n ≥ 100"
    assert claims.changes_line((band(50, C), band(100, C))) == "gd: confirmed at every n (50, 100)"
    with pytest.raises(ValueError, match="verdict"):
        claims.Band("gd", (50,), "plausible", ())


def _memory_frame(cg_exponent_at: dict[int, float]) -> list[dict]:
    """unrolled peak ∝ K, ift-cg's ∝ K^e with e given per n (0: flat)."""
    return [_rec(b, K, n=n, peak_bytes=int(10 * n * K) if b == "unrolled"
                 else int(5e4 * K ** cg_exponent_at[n]))
            for n in cg_exponent_at for b in ("unrolled", "ift-cg") for K in KS]


def test_memory_claim_per_size_flips_where_built():
    same = _claim("unrolled-memory-linear").evaluate(_frame(_memory_frame({100: 0, 1000: 0})))
    assert same.verdict == claims.CONFIRMED
    assert [(b.label, b.verdict) for b in same.bands] == [
        ("n = 100", claims.CONFIRMED), ("n = 1000", claims.CONFIRMED)]
    assert same.changes == "gd: confirmed at every n (100, 1000)"
    # at n = 1000 the IFT's memory grows like unrolled's: one series of two fails there
    flips = _claim("unrolled-memory-linear").evaluate(_frame(_memory_frame({100: 0, 1000: 1})))
    assert flips.verdict == claims.CAVEAT  # the whole run: 1 failure in 4 series
    assert [(b.label, b.verdict) for b in flips.bands] == [
        ("n = 100", claims.CONFIRMED), ("n = 1000", claims.CAVEAT)]
    assert flips.changes == "gd: confirmed at n = 100; confirmed with a caveat at n = 1000"
    assert any("✗ ift-cg gd n=1000 momentum=0.9 torch: peak slope 1.00" in line
               for line in flips.bands[1].numbers)
    view = views.claims_view([(_claim("unrolled-memory-linear"), flips)])[0]
    assert [(b["label"], b["cls"]) for b in view["bands"]] == [
        ("gd n = 100", "confirmed"), ("gd n = 1000", "confirmed")]
    assert view["changes"] == flips.changes


# --- the K > n² crossover: K*(n) per size and its exponent -------------------------------------

def test_crossover_K_is_interpolated_on_log_scale():
    assert claims.crossover_K([10, 100], [2.0, 0.5]) == (pytest.approx(10 ** 1.5), "≈ 31.6")
    assert claims.crossover_K([10, 100], [0.5, 0.4]) == (None, "≤ 10")
    assert claims.crossover_K([10, 100], [2.0, 3.0]) == (None, "> 100")
    assert claims.crossover_K([10, 100, 1000], [0.5, 2.0, 2.0])[0] is None


def _crossover_frame(sizes, ks, c: float = 0.5, overhead: float = 0.0) -> list[dict]:
    """unrolled: 1e-6·K·n s; dense IFT: c·1e-6·n³ s, so that K*(n) = c·n² exactly (the log
    of the time ratio is linear in log K); ``overhead`` adds a constant to unrolled's time."""
    rows = []
    for n in sizes:
        for K in ks:
            rows.append(_rec("unrolled", K, n=n, time_s=1e-6 * K * n + overhead,
                             grad_error_converged=1e-15))
            rows.append(_rec("ift-direct", K, n=n, time_s=c * 1e-6 * n ** 3,
                             grad_error_converged=1e-12))
    return rows


def test_crossover_per_size_and_fitted_exponent_two():
    # K* = n²/2 = 50, 450, 45000: faster at K = 100 ≤ n² = 100 (n = 10: refuted), first
    # faster at K = 1000 > 900 (n = 30) and 10⁵ > 9·10⁴ (n = 300): confirmed there
    ks = (10, 100, 1000, 10_000, 100_000)
    verdict = _claim("ift-time-crossover").evaluate(_frame(_crossover_frame((10, 30, 300), ks)))
    assert verdict.verdict == claims.REFUTED  # the whole run: refuted at n = 10
    assert [(b.label, b.verdict) for b in verdict.bands] == [
        ("n = 10", claims.REFUTED), ("n = 30", claims.CONFIRMED),
        ("n = 300", claims.CONFIRMED)]
    assert [b.headline for b in verdict.bands] == [
        "crossover K* ≈ 50", "crossover K* ≈ 450", "crossover K* ≈ 45000"]
    assert verdict.changes == ("gd: refuted at n = 10 (crossover K* ≈ 50); confirmed at n ≥ 30 "
                               "(n = 30: crossover K* ≈ 450; n = 300: crossover K* ≈ 45000)")
    assert "n² = 100); at K = 100" in verdict.numbers[0]
    assert verdict.numbers[0].endswith("crossover K* ≈ 50")
    assert verdict.numbers[-1] == (
        "gd momentum=0.9 torch: crossover K*(n) ∝ n^2.00 (least squares on logs over 3 sizes, "
        "dim x = 10, 30, 300: K* ≈ 50, 450, 45000); the claim: K* ∝ n^2")


def test_crossover_exponent_near_two_with_an_overhead_and_a_coarse_grid():
    # a constant 20 µs on unrolled's time bends the log-ratio; K* stays ≈ n²/2 within the fit
    ks = (10, 30, 100, 300, 1000, 3000, 10_000, 30_000)
    verdict = _claim("ift-time-crossover").evaluate(
        _frame(_crossover_frame((20, 40, 80, 160), ks, overhead=2e-5)))
    line = next(x for x in verdict.numbers if "K*(n) ∝" in x)
    exponent = float(re.search(r"n\^(-?[0-9.]+)", line).group(1))
    assert abs(exponent - 2) <= 0.05, line


def test_crossover_one_size_with_a_crossover_prints_no_exponent():
    verdict = _claim("ift-time-crossover").evaluate(_frame(_crossover_frame((10,), KS)))
    assert not any("∝ n^" in x for x in verdict.numbers) and verdict.bands == ()


def test_memory_in_n_is_judged_per_doubling():
    rows = []
    for n, dense in ((50, 8 * 50 ** 2), (100, 8 * 100 ** 2), (200, 8 * 100 ** 2 * 2)):
        rows.append(_rec("ift-direct", 1000, n=n, peak_bytes=dense))
        rows.append(_rec("ift-cg", 1000, n=n, peak_bytes=800 * n))
    verdict = _claim("ift-memory-n").evaluate(_frame(rows))
    assert verdict.verdict == claims.REFUTED  # the top doubling: dense no steeper than CG
    assert [(b.label, b.verdict) for b in verdict.bands] == [
        ("n = 50 → 100", claims.CONFIRMED), ("n = 100 → 200", claims.REFUTED)]
    assert verdict.changes == "gd: confirmed at n = 50 → 100; refuted at n = 100 → 200"


# --- claims from the literature ----------------------------------------------------------------

def test_literature_claims_name_their_source_and_are_unmeasured_on_an_empty_run():
    ids = [c.id for c in literature_claims.LITERATURE_CLAIMS]
    assert ids == ["imaml-memory", "chen-checkpoint-time", "deq-memory", "jfb-trade",
                   "truncated-backprop"]
    assert not set(ids) & {c.id for c in claims.CLAIMS}
    for claim in literature_claims.LITERATURE_CLAIMS:
        assert re.search(r"\(\d{4}\)", claim.source) and claim.test and claim.statement
        assert claim.evaluate(_frame([])).verdict == claims.NOT_MEASURED


def _slope_frame(problem: str, flat: tuple[str, ...], flat_exponent: float,
                 unrolled_exponent: float, sizes=(4, 16)) -> list[dict]:
    return [_rec(b, K, n=n, problem=problem, options={},
                 peak_bytes=int(1e3 * n * K ** (unrolled_exponent if b == "unrolled"
                                                else flat_exponent)))
            for n in sizes for b in ("unrolled", *flat) for K in KS]


def test_imaml_memory_flat_against_maml_linear():
    claim = _claim("imaml-memory")
    ok = claim.evaluate(_frame(_slope_frame("imaml", ("ift-cg",), 0.0, 1.0)))
    assert ok.verdict == claims.CONFIRMED
    assert "ift-cg imaml n=4 torch: peak slope 0.00 from K = 100 to 1000 (3.91 KiB → 3.91 KiB; " \
           "expected 0)" in ok.numbers
    assert [(b.label, b.verdict) for b in ok.bands] == [
        ("n = 4", claims.CONFIRMED), ("n = 16", claims.CONFIRMED)]
    bad = claim.evaluate(_frame(_slope_frame("imaml", ("ift-cg",), 1.0, 0.0)))
    assert bad.verdict == claims.REFUTED
    half = claim.evaluate(_frame([r for r in _slope_frame("imaml", ("ift-cg",), 0.0, 1.0)
                                  if r["backend"] == "ift-cg"]))
    assert half.verdict == claims.CAVEAT and "only the implicit half" in half.numbers[-1]
    # the default sweep has no imaml: not measured, even with gd's ift-cg flat
    gd = claim.evaluate(_frame(_slope_frame("gd", ("ift-cg",), 0.0, 1.0)))
    assert gd.verdict == claims.NOT_MEASURED and gd.bands == ()


def test_deq_memory_constant_in_solver_steps():
    claim = _claim("deq-memory")
    ok = claim.evaluate(_frame(_slope_frame("deq", ("ift-gmres", "ift-jfb"), 0.0, 1.0)))
    assert ok.verdict == claims.CONFIRMED and len(ok.bands) == 2
    assert ok.numbers[-1].startswith("measured on CPU only: Bai et al.'s memory figures are GPU")
    bad = claim.evaluate(_frame(_slope_frame("deq", ("ift-gmres", "ift-jfb"), 1.0, 0.0)))
    assert bad.verdict == claims.REFUTED
    assert claim.evaluate(_frame(_slope_frame("gd", ("ift-gmres",), 0.0, 1.0))).verdict \
        == claims.NOT_MEASURED
    # measured on a GPU: the note that the CPU cannot speak to the GPU's numbers goes away
    gpu = _frame(_slope_frame("deq", ("ift-gmres",), 0.0, 1.0))
    gpu["device"] = "cuda"
    assert not any("CPU only" in line for line in claim.evaluate(gpu).numbers)


def _checkpoint_frame(ratio_at: dict[int, float]) -> list[dict]:
    return [_rec(b, K, n=n, time_s=1e-4 * K * (ratio_at[n] if b == "checkpoint-sqrt" else 1))
            for n in ratio_at for b in ("unrolled", "checkpoint-sqrt") for K in KS]


def test_chen_checkpoint_time_ratio():
    claim = _claim("chen-checkpoint-time")
    ok = claim.evaluate(_frame(_checkpoint_frame({50: 1.3})))
    assert ok.verdict == claims.CONFIRMED
    assert ok.numbers[0] == "gd n=50 momentum=0.9 torch K = 1000: 130 ms against unrolled's " \
                            "100 ms: 1.30×"
    assert ok.numbers[1] == "Chen et al. measured 1.3× (+30 %); the rule: at most 2× (one extra " \
                            "forward pass)"
    assert ok.numbers[-1].startswith("measured on CPU only: Chen et al.'s +30 % is a GPU")
    assert claim.evaluate(_frame(_checkpoint_frame({50: 3.0}))).verdict == claims.REFUTED
    mixed = claim.evaluate(_frame(_checkpoint_frame({50: 1.3, 200: 3.0})))
    assert mixed.verdict == claims.CAVEAT  # one series of two above 2×
    assert mixed.changes == ("gd: confirmed at n = 50 (checkpoint-sqrt ÷ unrolled time 1.30× "
                             "(torch)); refuted at n = 200 (checkpoint-sqrt ÷ unrolled time "
                             "3.00× (torch))")


def _jfb_frame(speedup: float, jfb_error: float, exact: str = "ift-cg") -> list[dict]:
    rows = []
    for n in (50, 200):
        for K in KS:
            rows.append(_rec(exact, K, n=n, time_s=1e-3 * n, grad_error_converged=1e-10))
            rows.append(_rec("ift-jfb", K, n=n, time_s=1e-3 * n / speedup,
                             grad_error_converged=jfb_error))
    return rows


def test_jfb_trades_bias_for_time():
    claim = _claim("jfb-trade")
    ok = claim.evaluate(_frame(_jfb_frame(2.0, 0.3)))
    assert ok.verdict == claims.CONFIRMED
    assert ok.numbers[0] == ("gd n=50 momentum=0.9 torch K = 1000: ift-jfb 25 ms against "
                             "ift-cg's 50 ms (2.00× faster); error against the converged "
                             "gradient 3.0e-01 against 1.0e-10")
    assert [b.verdict for b in ok.bands] == [claims.CONFIRMED] * 2
    gmres = claim.evaluate(_frame(_jfb_frame(2.0, 0.3, exact="ift-gmres")))
    assert gmres.verdict == claims.CONFIRMED and "ift-gmres's 50 ms" in gmres.numbers[0]
    slower = claim.evaluate(_frame(_jfb_frame(0.5, 0.3)))
    assert slower.verdict == claims.REFUTED and slower.numbers[0].startswith("✗ ")
    free = claim.evaluate(_frame(_jfb_frame(2.0, 1e-10)))
    assert free.verdict == claims.CAVEAT and "no bias to trade" in free.numbers[-2]
    assert claim.evaluate(_frame([r for r in _jfb_frame(2.0, 0.3)
                                  if r["backend"] == "ift-cg"])).verdict == claims.NOT_MEASURED


def _truncated_frame(error: float, time_ratio: float, peak_ratio: float) -> list[dict]:
    rows = []
    for n in (50, 200):
        for K in KS:
            rows.append(_rec("unrolled", K, n=n, time_s=1e-4 * K, peak_bytes=1000 * K))
            rows.append(_rec("truncated", K, n=n, options={"momentum": 0.9, "k": 10},
                             options_resolved={"k": 10}, grad_error_k_step=error,
                             time_s=1e-4 * K * time_ratio, peak_bytes=int(1000 * K * peak_ratio)))
    return rows


def test_truncated_backprop_cheaper_and_close():
    claim = _claim("truncated-backprop")
    ok = claim.evaluate(_frame(_truncated_frame(0.1, 0.2, 0.01)))
    assert ok.verdict == claims.CONFIRMED
    assert ok.numbers[0] == ("gd n=50 momentum=0.9 torch K = 1000, k = 10: error against the "
                             "exact K-step gradient 1.0e-01 (bound 0.5); time 20 ms = 0.20× "
                             "unrolled's, peak 9.77 KiB = 0.01× unrolled's")
    assert [b.label for b in ok.bands] == ["n = 50", "n = 200"]
    assert claim.evaluate(_frame(_truncated_frame(0.9, 0.2, 0.01))).verdict == claims.REFUTED
    assert claim.evaluate(_frame(_truncated_frame(0.1, 1.1, 1.0))).verdict == claims.REFUTED
    assert claim.evaluate(_frame([r for r in _truncated_frame(0.1, 0.2, 0.01)
                                  if r["backend"] == "unrolled"])).verdict == claims.NOT_MEASURED


def test_literature_claims_render_in_the_report(tmp_path, monkeypatch):
    from reports import html
    from suite.records import Record, append_record

    # the per-problem figures are test_report's business (and take seconds): none drawn here
    monkeypatch.setattr(html, "_problem_section", lambda problem, frame: {
        "name": problem, "origin": [], "k_groups": [], "n_groups": []})

    for n in (50, 200):
        for K in KS:
            for backend, ratio in (("unrolled", 1.0), ("checkpoint-sqrt", 1.3)):
                append_record(tmp_path / "records.jsonl", Record(
                    problem="gd", backend=backend, framework="torch", device="cpu",
                    dtype="float64", n=n, K=K, seed=0, options={"momentum": 0.9},
                    time_s=1e-4 * K * ratio, peak_bytes=1000 * K, trace_bytes=800 * K))
    text = html.write_report(tmp_path).read_text()
    literature = text[text.index('id="claims-literature"'):text.index('id="summary"')]
    for claim in literature_claims.LITERATURE_CLAIMS:
        assert f'id="claim-{claim.id}"' in literature
    assert "Rajeswaran" in literature and "arXiv:1604.06174" in literature
    assert literature.count("not measured in this run") == 4  # only Chen's is measured here
    row = literature[literature.index('id="claim-chen-checkpoint-time"'):]
    assert "gd every n (50, 200)" in row[:row.index("</tr>")]
    assert math.isclose(literature_claims.CHEN_REFERENCE_RATIO, 1.3)
