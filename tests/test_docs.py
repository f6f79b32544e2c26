"""The docs site and the README as its front page: `mkdocs build --strict` passes (no broken link or anchor, no
page missing from the nav), the generated pages equal what the code renders now (the spec reference from the
validating models, one results page per results/NAME/ folder), the layout map in docs/development.md names every
module of thinktrace/ and every top-level folder, and the README stays short: at most 200 lines, no paragraph over
8 lines, every relative link resolving."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from thinktrace import results
from thinktrace.runview import RunView

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MAX_README_LINES = 200
MAX_PARAGRAPH_LINES = 8
MAX_PROSE_WIDTH = 120  # so a paragraph cannot dodge the line limit by being one long line

RESULT_FOLDERS = sorted(p for p in (ROOT / "results").iterdir() if (p / "metrics.json").is_file())


def test_mkdocs_build_strict_passes(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is a dev dependency (pip install -e '.[dev]')")
    pytest.importorskip("material", reason="mkdocs-material is a dev dependency (pip install -e '.[dev]')")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "reference" / "spec" / "index.html").is_file()


def test_the_spec_reference_page_is_current():
    from thinktrace.schema_doc import page

    committed = (DOCS / "reference" / "spec.md").read_text(encoding="utf-8")
    assert committed == page(), "docs/reference/spec.md is stale: run `python -m thinktrace.schema_doc`"


@pytest.mark.parametrize("folder", RESULT_FOLDERS, ids=lambda p: p.name)
def test_each_results_page_is_current(folder):
    """docs/results/NAME.md is what `python -m thinktrace.results ... --docs` renders from results/NAME/ now, and
    the site lists it (nav and the results index)."""
    page = DOCS / "results" / f"{folder.name}.md"
    assert page.is_file(), f"no {page.relative_to(ROOT)}: run `python -m thinktrace.results {folder.relative_to(ROOT)} " \
                           f"{folder.relative_to(ROOT)} --docs {page.relative_to(ROOT)}`"
    assert page.read_text(encoding="utf-8") == results.docs_page(RunView(folder), folder.name), (
        f"{page.relative_to(ROOT)} is stale: run `python -m thinktrace.results {folder.relative_to(ROOT)} "
        f"{folder.relative_to(ROOT)} --readme README.md --docs {page.relative_to(ROOT)}`")
    assert f"results/{folder.name}.md" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert f"]({folder.name}.md)" in (DOCS / "results" / "index.md").read_text(encoding="utf-8")


def test_every_results_page_has_its_results_folder():
    pages = {p.stem for p in (DOCS / "results").glob("*.md")} - {"index"}
    assert pages == {p.name for p in RESULT_FOLDERS}


def test_the_readme_results_block_is_current():
    readme = README.read_text(encoding="utf-8")
    for folder in RESULT_FOLDERS:
        start, end = f"<!-- results:{folder.name} -->", f"<!-- /results:{folder.name} -->"
        if start in readme:
            assert f"{start}\n{results.readme_block(RunView(folder))}{end}" in readme


# -- the README as a front page ----------------------------------------------------------------------------------

def prose_paragraphs(text: str) -> list[list[str]]:
    """The prose paragraphs of a Markdown text: runs of non-blank lines outside code fences, tables and HTML
    comments; a heading or a list item starts a new one."""
    paragraphs: list[list[str]] = []
    current: list[str] = []
    fence = None
    in_comment = False
    for line in text.splitlines():
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            continue
        if in_comment:
            in_comment = "-->" not in stripped
            continue
        match = re.match(r"(`{3,}|~{3,})", stripped)
        if match:
            fence = match.group(1)
        elif stripped.startswith("<!--"):
            in_comment = "-->" not in stripped
        elif not stripped or stripped.startswith("|"):
            pass
        else:
            if re.match(r"(#{1,6} |[-*+] |\d+[.)] )", stripped) and current:
                paragraphs.append(current)
                current = []
            current.append(line)
            continue
        if current:
            paragraphs.append(current)
            current = []
    if current:
        paragraphs.append(current)
    return paragraphs


def test_the_paragraph_splitter_reads_markdown_blocks():
    text = ("# t\n\na\nb\n\n```\nx\n\ny\n```\n| a |\n|---|\n- one\n  two\n- three\n<!-- c\nd -->\ne\n")
    assert prose_paragraphs(text) == [["# t"], ["a", "b"], ["- one", "  two"], ["- three"], ["e"]]


def test_the_readme_is_a_front_page():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move " \
                                           "content to a page under docs/"
    long = [p[0][:60] for p in prose_paragraphs(text) if len(p) > MAX_PARAGRAPH_LINES]
    assert not long, f"README paragraphs over {MAX_PARAGRAPH_LINES} lines: {long}"
    wide = [line[:60] for p in prose_paragraphs(text) for line in p if len(line) > MAX_PROSE_WIDTH]
    assert not wide, f"README prose lines over {MAX_PROSE_WIDTH} characters: {wide}"
    headings = [line for line in lines if line.startswith("#")]
    assert len(headings) == len(set(headings)), "one heading per topic: a heading occurs twice"


def _slug(heading: str) -> str:
    """The anchor MkDocs gives a heading (Python-Markdown's toc slugify, which mkdocs.yml's `toc` uses)."""
    toc = pytest.importorskip("markdown.extensions.toc", reason="Markdown comes with mkdocs (a dev dependency)")
    return toc.slugify(heading, "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m.group(1).strip()) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def test_every_relative_link_of_the_readme_resolves():
    text = re.sub(r"```.*?```", "", README.read_text(encoding="utf-8"), flags=re.S)
    links = [m.group(1) for m in re.finditer(r"\]\(([^)\s]+)\)", text)]
    assert links
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (ROOT / path) if path else README
        assert target.exists(), f"README links to {link}: no such file"
        if anchor:
            assert anchor in _anchors(target), f"README links to {link}: no such heading"


# -- the layout map ----------------------------------------------------------------------------------------------

def _layout_text() -> str:
    text = (DOCS / "development.md").read_text(encoding="utf-8")
    assert "## Layout" in text
    return text.split("## Layout", 1)[1]


def test_the_layout_map_names_every_module_and_package_of_thinktrace():
    text = _layout_text()
    package = ROOT / "thinktrace"
    missing = []
    for path in sorted(package.rglob("*")):
        rel = path.relative_to(package).as_posix()
        if "__pycache__" in rel:
            continue
        if path.is_dir() and f"`{rel}/`" not in text:
            missing.append(f"{rel}/")
        elif path.suffix == ".py" and path.name != "__init__.py" and f"`{rel}`" not in text:
            missing.append(rel)
    assert not missing, f"docs/development.md's layout map does not name: {missing}"
    named = set(re.findall(r"`([\w/]+\.py)`", text))
    gone = sorted(n for n in named if not (package / n).is_file())
    assert not gone, f"docs/development.md names modules that do not exist: {gone}"


def test_the_layout_map_names_every_top_level_folder():
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout: the folders git ignores cannot be told apart")
    folders = {line.split("/", 1)[0] for line in listed if "/" in line}
    text = _layout_text()
    missing = sorted(f for f in folders if f"`{f}/`" not in text)
    assert not missing, f"docs/development.md's layout map does not name the folders: {missing}"
