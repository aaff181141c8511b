"""``report.html``: one self-contained file (figures embedded as SVG data URIs, no fetches).

Everything user-supplied (config names, option values, error text) passes through Jinja2's
autoescaping; tables are rendered cell by cell in the template, never as raw HTML.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from reports import (
    cells,
    claims,
    decision,
    literature_claims,
    predictions_checked,
    problem_sections,
    record_tables,
    views,
)
from suite import analysis, provenance
from suite.rundir import RunDir

THEORY_DOC = Path(__file__).resolve().parents[1] / "docs" / "theory.md"


def theory_html() -> Markup | None:
    """docs/theory.md rendered into the report, so the file stays self-contained and the theory
    the fits are judged against travels with the numbers (None where the doc is not shipped,
    e.g. a non-editable install)."""
    if not THEORY_DOC.exists():
        return None
    from markdown_it import MarkdownIt

    # our own document, not user input: rendered as HTML (html=False keeps raw tags inert)
    return Markup(MarkdownIt("commonmark", {"html": False}).enable("table")
                  .render(THEORY_DOC.read_text(encoding="utf-8")))


def _problem_section(problem: str, frame: pd.DataFrame) -> dict:
    """One problem's figure groups and tables (``reports.problem_sections``)."""
    return problem_sections.problem_section(problem, frame)


def _compact(table: pd.DataFrame, headers: dict[str, str], title: str) -> dict:
    """A record table with its constant columns stated once ("common") instead of repeated."""
    shown, common = record_tables.drop_constant_columns(table)
    return {"title": title, "table": cells.record_table(shown, headers),
            "common": "; ".join(f"{headers.get(k, k)} = {v}" for k, v in common.items()
                                if k != "problem")}


def _record_sections(frame: pd.DataFrame, config: dict, decision_csv: Path) -> dict:
    """The report's own sections beside the per-problem figures: the decision table (also
    written to ``decision_csv``), the claims of Chiu (2021) and from the literature with
    verdicts (overall and per size), exact counts, the strategies' diagnostics, warnings
    grouped by kind, and the configuration."""
    table = decision.decision_table(frame)
    decision.write_csv(table, decision_csv)
    counts = record_tables.counts_table(frame)
    headers = {"problem_options": "problem options", "strategy_options": "options",
               "dim_theta": "dim θ"}
    return {
        "decision": views.decision_view(table, decision.DEFAULT_TOLERANCE),
        "decision_tolerance": cells.tolerance_text(decision.DEFAULT_TOLERANCE),
        "decision_csv": decision_csv.name,
        "theory_html": theory_html(),
        "claims": views.claims_view(claims.evaluate_all(frame)),
        "literature_claims": views.claims_view(literature_claims.evaluate_literature(frame)),
        "count_tables": [_compact(record_tables.merge_identical_frameworks(
            counts[counts["problem"] == p]), headers, title=p)
            for p in sorted(counts["problem"].unique())],
        "diagnostics": [{"family": family, **_compact(table_, headers, title=title)}
                        for family, title in (("ift", "IFT strategies"),
                                              ("reversible", "reversible"))
                        for table_ in [record_tables.diagnostics_table(frame, family)]
                        if len(table_)],
        "warning_groups": record_tables.warning_groups(frame),
        "memory_wall": record_tables.memory_wall(frame),
        "config_view": record_tables.config_view(config),
        "nodes": cells.record_table(nodes) if len(nodes := record_tables.nodes_table(frame))
        else None,
        "harness": cells.record_table(harness)
        if len(harness := record_tables.harness_table(frame)) else None,
    }


def write_report(run_dir: Path, out: Path | None = None,
                 predicted_from: Path | None = None) -> Path:
    """Write the run's report (``out``, or RUN_DIR/report.html). ``predicted_from``: another
    run whose fitted laws predict this one's points ("Predictions checked")."""
    run = RunDir(run_dir)
    run_dir = run.path
    frame = run.frame()
    meta = json.loads(run.meta_file.read_text()) if run.has_meta() else {}
    config = meta.get("config", {"name": "?"})

    # the laws read the records as written (their own series keys, defaults filled in)
    predictions = None if predicted_from is None else predictions_checked.predictions_checked(
        RunDir(predicted_from).frame(), frame, RunDir(predicted_from).path.name)
    versions_note = provenance.versions_note(frame)
    if not frame.empty:
        frame = provenance.separate_versions(analysis.annotate(frame))
    summary = problem_sections.summary_view(frame) if not frame.empty else []
    sections = [_problem_section(p, frame)
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

    out = Path(out) if out else run.report_file
    # the decision table's CSV lies beside the report (RUN_DIR/decision.csv by default)
    own = _record_sections(frame, config, RunDir.decision_file_beside(out))
    by_status = sorted(frame["status"].value_counts().items()) if not frame.empty else []
    tmpl_env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                           autoescape=select_autoescape(["html", "j2"]))
    html = tmpl_env.get_template("report.html.j2").render(
        run_id=meta.get("run_id", run_dir.name), meta=meta, config=config,
        versions_note=versions_note,
        counts={"total": len(frame), "by_status": by_status},
        summary=summary,
        tolerance=analysis.EXPONENT_TOLERANCE, min_fit_points=analysis.MIN_FIT_POINTS,
        min_fit_span=analysis.MIN_FIT_SPAN,
        sections=sections, failures=failures, warnings=warnings[:200],
        predictions=predictions,
        warnings_total=len(warnings), environment=environment, **own,
    )
    out.write_text(html, encoding="utf-8")
    return out
