"""The building blocks of the HTML pages (escaped text, tables, images, notes, the page with its inline CSS, a
unified diff); also used by thinktrace.compare."""

from __future__ import annotations

import base64
import difflib
import html as _html
from typing import Callable, Iterable, Sequence

from thinktrace.runview import RunView


# -- building blocks (also used by thinktrace.compare) --------------------------------------------------------


class Markup(str):
    """Text that is already HTML (a table cell or body part that must not be escaped again)."""


def esc(value) -> str:
    if isinstance(value, Markup):
        return value
    return _html.escape("" if value is None else str(value), quote=True)


def table(head: Sequence | None, rows: Iterable[Sequence], cls: str = "") -> Markup:
    """An HTML table (no header row when head is None); cells are escaped unless they are Markup."""
    out = [f'<table class="{esc(cls)}">' if cls else "<table>"]
    if head is not None:
        out += ["<thead><tr>", *[f"<th>{esc(h)}</th>" for h in head], "</tr></thead>"]
    out.append("<tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return Markup("".join(out))


def img(png: bytes, alt: str, cls: str = "plot") -> Markup:
    data = base64.b64encode(png).decode("ascii")
    return Markup(f'<img class="{esc(cls)}" alt="{esc(alt)}" src="data:image/png;base64,{data}">')


def note(text: str) -> Markup:
    return Markup(f'<p class="note">{esc(text)}</p>')


def para(text: str) -> Markup:
    return Markup(f"<p>{esc(text)}</p>")


def pre(text: str) -> Markup:
    return Markup(f"<pre>{esc(text)}</pre>")


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1150px;padding:1em 2em;
color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f3f3f3}tbody tr:nth-child(even){background:#fafafa}
.note{color:#777;font-style:italic}.sub{color:#555}.warn{color:#a40000}
img.plot{max-width:100%;border:1px solid #eee;margin:.4em 0}
.grid{display:flex;flex-wrap:wrap;gap:.8em}.grid figure{margin:0}
figcaption{font-size:.8em;color:#555;text-align:center}
pre{background:#f7f7f7;padding:.6em;white-space:pre-wrap;word-break:break-word;font-size:.85em}
.diff{background:#fbfbfb;border:1px solid #ddd;padding:.4em;font-family:monospace;font-size:.82em;
white-space:pre-wrap;word-break:break-word}
.diff .add{background:#e6ffec;display:block}.diff .del{background:#ffebe9;display:block}
.diff .hunk{color:#0550ae;display:block}.diff .ctx{display:block}
nav{font-size:.9em;margin:.6em 0}nav a{margin-right:.8em;color:#0550ae;text-decoration:none}
.trace{border-left:3px solid #9bc;padding:.2em .8em;margin:.5em 0;background:#f8fbfd}
.trace .item{font-weight:600;white-space:pre-wrap}.trace .why{white-space:pre-wrap}
.best{font-weight:700}
"""


def page(title: str, sections: Sequence[tuple[str, str, str]], header: str = "") -> str:
    """A complete HTML document: title, header HTML, a table of contents, then (id, heading, body) sections."""
    nav = "".join(f'<a href="#{esc(sid)}">{esc(h)}</a>' for sid, h, _ in sections)
    body = "".join(f'<section id="{esc(sid)}"><h2>{esc(h)}</h2>{b}</section>' for sid, h, b in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1>{header}<nav>{nav}</nav>{body}</body></html>\n")


def safe_section(fn: Callable[[RunView], str], run: RunView) -> str:
    """A section's body, or a note when building it failed (a bad artifact never costs the whole page)."""
    try:
        return fn(run)
    except Exception as err:  # noqa: BLE001 (a report section must not take the page down)
        return note(f"this section could not be built: {err.__class__.__name__}: {err}")


def unified_diff_html(before: str, after: str, a_name: str = "original", b_name: str = "refined") -> Markup:
    """A coloured unified diff (escaped line by line)."""
    lines = list(difflib.unified_diff(before.splitlines(), after.splitlines(), a_name, b_name, lineterm="", n=3))
    if not lines:
        return note("the refined guideline is identical to the original")
    out = []
    for line in lines:
        cls = ("hunk" if line.startswith("@@") else "add" if line.startswith("+") else
               "del" if line.startswith("-") else "ctx")
        out.append(f'<span class="{cls}">{esc(line) or "&nbsp;"}</span>')
    return Markup('<div class="diff">' + "".join(out) + "</div>")
