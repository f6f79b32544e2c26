"""A run's reports: one view model (`thinktrace.report.model`), built once from the run folder, rendered twice,
to report.md (figures as PNG files in `figures/`) and to report.html (self-contained: inline CSS, figures as base64,
no scripts, no external resources; every piece of user or LM text escaped). Each section is optional: a missing
artifact gives a one-line note, and a section that fails to build gives a note instead of costing the report.

    from thinktrace.report import write_reports
    write_reports(Path("runs/quickstart/20261128-140000"))   # -> report.md, report.html
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from thinktrace.report.format import fmt_diff, fmt_est, fmt_p, pct
from thinktrace.report.model import Block, Report, ReportSection, Text
from thinktrace.report.render import render_html, render_markdown
from thinktrace.report.sections import agreement, findings, guideline, run as run_parts, traces
from thinktrace.rundir import write_atomic
from thinktrace.runview import RunView

__all__ = ["Report", "ReportSection", "build_run_report", "fmt_diff", "fmt_est", "fmt_p", "pct", "render_html",
           "render_markdown", "write_reports"]

SECTIONS: list[tuple[str, str, Callable[[RunView], list[Block]]]] = [
    ("findings", "Does it work? The paper's questions, read off this run", findings.findings),
    ("data", "Data", run_parts.data),
    ("agreement", "Agreement with humans", agreement.agreement),
    ("comparisons", "Paired comparisons", agreement.comparisons),
    ("confusion", "Confusion matrices", agreement.confusions),
    ("traces", "Inferred thinking traces (rejection sampling, train split)", traces.traces),
    ("trace_quality", "Trace quality (does each accepted trace carry its label?)", traces.trace_quality),
    ("finetune", "Fine-tuning", traces.finetune),
    ("prompts", "Prompt variants (original guideline; the best per rater chosen on dev)", agreement.prompts),
    ("guideline", "Guideline refinement (candidates scored on the dev split by mean α across raters)",
     guideline.guideline),
    ("samples", "Sample accepted traces", traces.samples),
    ("calls", "LM calls", run_parts.calls),
    ("cost", "Cost", run_parts.cost),
]

#: what the report of an incomplete run shows: no agreement numbers (they would be computed on survivors)
INCOMPLETE_SECTIONS = ("calls", "cost")


def _safe(fn: Callable[[RunView], list[Block]], view: RunView) -> list[Block]:
    """A section's blocks, or a note when building it failed (a bad artifact never costs the whole report)."""
    try:
        return fn(view)
    except Exception as err:  # noqa: BLE001 (a report section must not take the report down)
        return [Text(f"this section could not be built: {err.__class__.__name__}: {err}", "note")]


def build_run_report(view: RunView) -> Report:
    """The report of one run folder (its metrics document and artifacts)."""
    incomplete = (view.metrics.get("status") or {}).get("state") == "incomplete"
    sections = [ReportSection(sid, heading, _safe(fn, view)) for sid, heading, fn in SECTIONS
                if not incomplete or sid in INCOMPLETE_SECTIONS]
    title = f"thinktrace run: {view.name}" + (" (incomplete)" if incomplete else "")
    return Report(title, run_parts.header(view), sections)


def write_reports(run_dir: Path | str, metrics: dict | None = None, html: bool = True) -> list[Path]:
    """Write report.md (with its figures) and report.html into `run_dir` from its artifacts (metrics.json, or
    `metrics` when given: the document a finishing run is about to write); return their paths."""
    view = RunView(Path(run_dir), metrics=metrics)
    report = build_run_report(view)
    md = view.path / "report.md"
    write_atomic(md, render_markdown(report, view.path))
    if not html:
        return [md]
    page = view.path / "report.html"
    write_atomic(page, render_html(report))
    return [md, page]
