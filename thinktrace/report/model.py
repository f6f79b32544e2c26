"""The report view model: what a report says, independent of how it is rendered.

A `Report` is a title, a header and a list of `ReportSection`s; a section is a list of blocks. The same model
renders to Markdown (report.md, figures as PNG files beside it) and to a self-contained HTML page (report.html, figures
inline) through the templates in `thinktrace/report/templates/`; a builder never writes Markdown or HTML itself.
Text in blocks is plain text: each renderer escapes it for its format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence, Union


@dataclass(frozen=True)
class Strong:
    """A table cell or text shown in bold."""

    text: str

    def __str__(self) -> str:
        return self.text


Rich = Union[str, Strong, Sequence[Union[str, Strong]]]  #: text with bold parts
Cell = Union[Rich, int, float, None]


@dataclass
class Text:
    """A paragraph. style: para (plain), note (a muted remark), warn (a warning the reader must not miss)."""

    text: Rich
    style: Literal["para", "note", "warn"] = "para"
    kind: str = field(default="text", init=False)


@dataclass
class Heading:
    """A sub-heading inside a section."""

    text: str
    kind: str = field(default="heading", init=False)


@dataclass
class Bullets:
    items: Sequence[Rich]
    kind: str = field(default="bullets", init=False)


@dataclass
class Table:
    """head None: a two-column key/value table without a header row."""

    head: Sequence[str] | None
    rows: Sequence[Sequence[Cell]]
    kind: str = field(default="table", init=False)


@dataclass
class Figure:
    """A chart as PNG bytes; `name` is its file name next to report.md (unique within a report)."""

    png: bytes
    name: str
    alt: str
    caption: str = ""
    kind: str = field(default="figure", init=False)


@dataclass
class Gallery:
    """Several small figures side by side."""

    figures: Sequence[Figure]
    kind: str = field(default="gallery", init=False)


@dataclass
class Details:
    """Long text, folded away by default where the format can fold (HTML)."""

    summary: str
    text: str
    kind: str = field(default="details", init=False)


@dataclass
class Diff:
    """A unified diff of two texts."""

    before: str
    after: str
    a_name: str = "original"
    b_name: str = "refined"
    kind: str = field(default="diff", init=False)


@dataclass
class Quote:
    """A quoted piece of LM or user text (an item and its trace) with a line of metadata."""

    title: str
    meta: str
    body: str
    kind: str = field(default="quote", init=False)


Block = Union[Text, Heading, Bullets, Table, Figure, Gallery, Details, Diff, Quote]


@dataclass
class ReportSection:
    """One section of a report: an anchor id, a heading and its blocks (not a spec section, thinktrace.config)."""

    id: str
    heading: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Report:
    title: str
    header: list[Block] = field(default_factory=list)
    sections: list[ReportSection] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        """Every figure of the report, in order (galleries included)."""
        out: list[Figure] = []
        for block in [*self.header, *(b for s in self.sections for b in s.blocks)]:
            if isinstance(block, Figure):
                out.append(block)
            elif isinstance(block, Gallery):
                out.extend(block.figures)
        return out
