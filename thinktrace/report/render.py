"""Render a `Report` (thinktrace.report.model) to Markdown or to a self-contained HTML page, through the jinja2
templates beside this module. Markdown figures are PNG files in a folder next to the .md file; HTML figures are
inline (base64), so the page needs no files, scripts or network."""

from __future__ import annotations

import base64
import difflib
import re
from functools import lru_cache
from pathlib import Path

from thinktrace.report.model import Report, Strong

FIGURE_DIR = "figures"


def _parts(value) -> list:
    """Rich text (a str, a `Strong`, or a list of them) as a list of parts."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def md_text(value) -> str:
    """Rich text as Markdown: HTML tags escaped (text never becomes markup), `Strong` parts in bold."""
    out = []
    for part in _parts(value):
        text = str(part).replace("<", "&lt;").replace(">", "&gt;")
        out.append(f"**{text}**" if isinstance(part, Strong) else text)
    return "".join(out)


def md_cell(value) -> str:
    """A table cell as Markdown: one line, pipes escaped."""
    return re.sub(r"\s*\n\s*", " ", md_text(value)).replace("|", "\\|")


def html_text(value):
    """Rich text as HTML: every part escaped, `Strong` parts in <b>."""
    from markupsafe import Markup, escape

    return Markup("".join(f"<b>{escape(str(p))}</b>" if isinstance(p, Strong) else str(escape(str(p)))
                          for p in _parts(value)))


def diff_lines(before: str, after: str, a_name: str, b_name: str) -> list[tuple[str, str]]:
    """(class, line) of a unified diff: hunk, add, del or ctx."""
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), a_name, b_name, lineterm="", n=3)
    return [("hunk" if line.startswith("@@") else "add" if line.startswith("+") else
             "del" if line.startswith("-") else "ctx", line) for line in lines]


def fence(text: str) -> str:
    """A fence longer than any backtick run in `text`, so quoted text cannot close its code block."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


@lru_cache(maxsize=2)
def _env(html: bool):
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("thinktrace.report", "templates"),
                             autoescape=html, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(md_cell=md_cell, md_text=md_text, html_text=html_text, fence=fence,
                       b64=lambda png: base64.b64encode(png).decode("ascii"))
    env.globals.update(diff_lines=diff_lines)
    return env


def render_markdown(report: Report, out_dir: Path | None = None) -> str:
    """Markdown; with `out_dir`, figures are written to `out_dir/figures/` and linked, else only named."""
    if out_dir is not None and report.figures():
        folder = Path(out_dir) / FIGURE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        for fig in report.figures():
            (folder / fig.name).write_bytes(fig.png)
    text = _env(False).get_template("report.md.j2").render(report=report, figure_dir=FIGURE_DIR,
                                                           with_figures=out_dir is not None)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


def render_html(report: Report) -> str:
    return _env(True).get_template("report.html.j2").render(report=report)
