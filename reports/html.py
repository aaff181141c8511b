"""``report.html``: one self-contained file (figures embedded as SVG data URIs, no fetches).

Everything user-supplied (config names, option values, error text) passes through Jinja2's
autoescaping; tables are rendered cell by cell in the template, never as raw HTML.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from reports import figures
from reports.units import format_bytes, format_seconds
from suite import analysis
from suite.records import load_frame


def _b64(svg: str | None) -> str | None:
    return None if svg is None else base64.b64encode(svg.encode()).decode()


def _cell(col: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if col.endswith("_bytes"):
        return format_bytes(value)
    if col.endswith("_s"):
        return format_seconds(value)
    if "error" in col or col in {"inner_residual", "error_bound"}:
        return f"{value:.2e}"
    if "exponent" in col or col in {"slope", "theory_lo", "theory_hi"}:
        return f"{value:.2f}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _table(frame: pd.DataFrame, columns: list[str], headers: dict[str, str] | None = None) -> dict:
    headers = headers or {}
    present = [c for c in columns if c in frame.columns]
    return {"columns": [headers.get(c, c) for c in present],
            "rows": [[_cell(c, row[c]) for c in present] for _, row in frame.iterrows()]}


def _problem_section(problem: str, frame: pd.DataFrame, crossovers: pd.DataFrame,
                     pareto: pd.DataFrame, exponents: pd.DataFrame) -> dict:
    sub = frame[frame["problem"] == problem]
    figs = {
        "peak_vs_K": figures.framework_panels(sub, "K", "peak_bytes", guides=(1, 0.5),
                                              title="peak memory"),
        "trace_vs_K": figures.framework_panels(sub, "K", "trace_bytes", guides=(1, 0.5),
                                               title="trace bytes"),
        "peak_vs_n": figures.framework_panels(sub, "n", "peak_bytes", guides=(1, 2),
                                              title="peak memory"),
        "time_vs_K": figures.framework_panels(sub, "K", "time_s", guides=(1,), title="time"),
        "error_vs_K": figures.framework_panels(sub, "K", "grad_rel_error", title="error"),
        "grad_norm_vs_K": figures.framework_panels(sub, "K", "grad_norm",
                                                   title="gradient norm"),
    }
    par = pareto[pareto["problem"] == problem] if len(pareto) else pareto
    figs["pareto"] = figures.pareto_plot(par, title=f"{problem}: at the largest K") \
        if len(par) else None
    cross = crossovers[crossovers["problem"] == problem] if len(crossovers) else crossovers
    exps = exponents[exponents["problem"] == problem] if len(exponents) else exponents
    return {
        "name": problem,
        "figures": {k: _b64(v) for k, v in figs.items()},
        "crossovers": _table(cross, ["backend", "strategy_options", "framework", "dtype", "n",
                                     "problem_options",
                                     "K_grid", "crossover_time_K", "crossover_memory_K",
                                     "n_squared"],
                             {"strategy_options": "options", "crossover_time_K": "faster from K",
                              "crossover_memory_K": "smaller from K", "n_squared": "n²"}),
        "pareto": _table(par.sort_values(["pareto", "peak_bytes"], ascending=[False, True])
                         if len(par) else par,
                         ["backend", "strategy_options", "framework", "n", "problem_options", "K",
                          "peak_bytes", "time_s", "error", "pareto"],
                         {"strategy_options": "options", "problem_options": "problem options"}),
        "exponents": _table(exps, ["backend", "strategy_options", "framework", "variable", "n", "K",
                                   "metric", "slope", "theory_lo", "theory_hi", "x_min", "x_max",
                                   "agrees"], {"strategy_options": "options"}),
    }


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    run_dir = Path(run_dir)
    frame = load_frame(run_dir)
    meta_path = run_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    config = meta.get("config", {"name": "?"})

    if frame.empty:
        exponents = crossovers = pareto = summary = pd.DataFrame()
    else:
        frame = analysis.annotate(frame)
        exponents = pd.concat([analysis.scaling_exponents(frame, "K"),
                               analysis.scaling_exponents(frame, "n")], ignore_index=True)
        crossovers = analysis.crossovers(frame)
        pareto = analysis.pareto_front(frame)
        summary = analysis.summary(frame)

    sections = [_problem_section(p, frame, crossovers, pareto, exponents)
                for p in sorted(frame["problem"].unique())] if not frame.empty else []
    failures = [] if frame.empty else [
        {"label": f"{r['problem']}/{r['backend']}/{r['framework']} {r['dtype']} n={r['n']} "
                  f"K={r['K']} {r.get('options_str', '')}".strip(),
         "status": r["status"], "error": r["error"]}
        for r in frame[frame["status"] != "ok"].to_dict("records")]
    warnings = [] if frame.empty else [
        {"label": f"{r['problem']}/{r['backend']}/{r['framework']} n={r['n']} K={r['K']}",
         "warning": w}
        for r in frame.to_dict("records") for w in (r.get("warnings") or [])]

    env = meta.get("environment", {})
    versions = env.get("versions", {})
    threads = sorted(set(frame["threads"].dropna().astype(int))) if not frame.empty else []
    environment = [
        ("CPU", f"{env.get('cpu_model', '?')} ({env.get('cpu_count', '?')} cores)"),
        ("threads per point", ", ".join(map(str, threads)) or "–"),
        ("platform", env.get("platform", "?")),
        ("git commit", f"{env.get('git', {}).get('commit')}"
                       f"{' (dirty)' if env.get('git', {}).get('dirty') else ''}"),
    ] + [(name, version or "not installed") for name, version in versions.items()]

    by_status = sorted(frame["status"].value_counts().items()) if not frame.empty else []
    tmpl_env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                           autoescape=select_autoescape(["html", "j2"]))
    html = tmpl_env.get_template("report.html.j2").render(
        run_id=meta.get("run_id", run_dir.name), meta=meta, config=config,
        config_json=json.dumps(config, indent=2),
        counts={"total": len(frame), "by_status": by_status},
        summary=_table(summary, ["problem", "backend", "framework", "memory_exponent",
                                 "memory_theory", "time_exponent", "error_at_max_K", "max_K",
                                 "agrees"],
                       {"memory_exponent": "memory exponent in K", "memory_theory": "theory",
                        "time_exponent": "time exponent in K", "error_at_max_K":
                        "error at largest K", "max_K": "largest K", "agrees": "agrees"}),
        tolerance=analysis.EXPONENT_TOLERANCE, tail=analysis.TAIL_POINTS,
        sections=sections, failures=failures, warnings=warnings[:200],
        warnings_total=len(warnings), environment=environment,
    )
    out = Path(out) if out else run_dir / "report.html"
    out.write_text(html, encoding="utf-8")
    return out
