"""``report.html``: one self-contained file (figures embedded as SVG data URIs, no fetches).

Everything user-supplied (config names, option values, error text) passes through Jinja2's
autoescaping.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from reports import figures
from reports.units import format_bytes, format_seconds
from suite.records import load_frame

TEXT_COLUMNS = {"problem", "backend", "framework", "dtype", "options", "status", "reference"}


def _b64(svg: str | None) -> str | None:
    return None if svg is None else base64.b64encode(svg.encode()).decode()


def _cell(col: str, value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if col.endswith("_bytes"):
        return format_bytes(value)
    if col.endswith("_s"):
        return format_seconds(value)
    if col in {"grad_rel_error", "inner_residual"}:
        return f"{value:.2e}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    run_dir = Path(run_dir)
    frame = load_frame(run_dir)
    meta_path = run_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    config = meta.get("config", {"name": "?"})

    columns = ["problem", "backend", "framework", "dtype", "n", "K", "options", "status",
               "time_s", "forward_time_s", "peak_bytes", "trace_bytes", "grad_rel_error",
               "reference", "inner_residual", "step_evals", "vjp_evals", "hvp_evals",
               "solver_iters"]
    rows = []
    if not frame.empty:
        ordered = frame.sort_values(["problem", "backend", "framework", "dtype", "n", "K"])
        for rec in ordered.to_dict("records"):
            rec["options"] = rec.get("options_str", "")
            rows.append({c: (rec["options"] if c == "options" else _cell(c, rec.get(c)))
                         for c in columns})
    failures = [] if frame.empty else [
        {"label": f"{r['problem']}/{r['backend']}/{r['framework']} {r['dtype']} n={r['n']} "
                  f"K={r['K']} {r.get('options_str', '')}".strip(),
         "status": r["status"], "error": r["error"]}
        for r in frame[frame["status"] != "ok"].to_dict("records")]
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
        figures={"peak": _b64(figures.metric_vs_K(frame, "peak_bytes", "peak memory"))
                 if not frame.empty else None},
        table={"columns": columns, "rows": rows}, text_columns=TEXT_COLUMNS,
        failures=failures, environment=environment,
    )
    out = Path(out) if out else run_dir / "report.html"
    out.write_text(html, encoding="utf-8")
    return out
