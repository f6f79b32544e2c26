"""report.html: a self-contained page (inline CSS, plots as base64 PNG, no scripts, no external resources) built
from a run folder. Every piece of text that came from a user or an LM is HTML-escaped. Each section is optional:
a missing artifact gives a one-line note, a section that fails gives a note instead of costing the page.

    from thinktrace.html import write_html_report
    write_html_report(Path("runs/quickstart/20261128-140000"))   # -> .../report.html
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from thinktrace.html.blocks import Markup, esc, img, note, page, para, pre, safe_section, table
from thinktrace.html.sections import (_header, confusion, section_agreement, section_comparisons, section_confusion,
                                      section_cost, section_data, section_finetune, section_guideline,
                                      section_samples, section_traces)
from thinktrace.rundir import write_atomic
from thinktrace.runview import RunView

__all__ = ["Markup", "confusion", "esc", "img", "note", "page", "para", "pre", "render_html_report", "table",
           "write_html_report"]


SECTIONS: list[tuple[str, str, Callable[[RunView], str]]] = [
    ("data", "Data", section_data),
    ("agreement", "Agreement with humans", section_agreement),
    ("comparisons", "Paired comparisons", section_comparisons),
    ("confusion", "Confusion matrices", section_confusion),
    ("traces", "Inferred thinking traces", section_traces),
    ("finetune", "Fine-tuning", section_finetune),
    ("guideline", "Guideline refinement", section_guideline),
    ("samples", "Sample accepted traces", section_samples),
    ("cost", "Cost", section_cost),
]


def render_html_report(run: RunView) -> str:
    sections = [(sid, heading, safe_section(fn, run)) for sid, heading, fn in SECTIONS]
    return page(f"thinktrace run: {run.name}", sections, _header(run))


def write_html_report(run_dir: Path | str, metrics: dict | None = None) -> Path:
    """Build `report.html` in `run_dir` from its artifacts (metrics.json, or `metrics` when given: the document
    a finishing run is about to write); return its path."""
    run = RunView(Path(run_dir), metrics=metrics)
    path = run.path / "report.html"
    write_atomic(path, render_html_report(run))
    return path
