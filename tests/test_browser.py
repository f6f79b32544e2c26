"""report.html and the compare page in a real browser: Playwright (Python, sync API) drives the system Chromium
(`executable_path`; Playwright never downloads a browser here). The tests click what the pages offer (the section
links of the <nav>, the <details> of the guidelines) and assert on the rendered DOM: sections and links in order,
table cells, figures decoded as images, markup planted in item texts, the codebook, the refined guideline and a run
folder's name shown as text and never run (a dialog would be recorded), no console errors and no request leaving
file:// (the pages are self-contained).

The browser: $THINKTRACE_CHROMIUM, else the first of `chromium`, `chromium-browser`, `google-chrome` on PATH. Without
one (or without the playwright package, or when it does not start) the tests skip with the reason, unless
THINKTRACE_REQUIRE_BROWSER=1 (`.ci/run` sets it): then they fail with that reason."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from support.browser import launch_browser
from support.toy_runs import SCRIPT, add_later_stages, compile_run, hostile_csv

from thinktrace.compare import build_report, compare_runs
from thinktrace.report import SECTIONS, fmt_est, write_reports
from thinktrace.report.render import render_html

#: a run folder's name that is markup: shown by the compare page (run label, path); no "/" so it is a valid name
HOSTILE_FOLDER = "r2 <img src=x onerror=alert('folder')>"
#: URL schemes a self-contained page may load (the page itself and its inline figures)
LOCAL_SCHEMES = ("file:", "data:", "about:")


@pytest.fixture(scope="module", autouse=True)
def browser():
    """One headless Chromium for the module (autouse: set up before the toy runs, so a skip costs nothing)."""
    yield from launch_browser()


class Tab:
    """One page in a fresh context, with everything that must not happen recorded: dialogs (a script ran),
    console errors and uncaught exceptions, requests that leave file:// (the page is not self-contained)."""

    def __init__(self, browser, width: int = 1200, height: int = 720):
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.context.set_default_timeout(15_000)
        self.problems: list[str] = []
        self.context.on("request", self._request)
        self.page = self.context.new_page()
        self.page.on("dialog", self._dialog)
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))
        self.page.on("pageerror", lambda err: self.problems.append(f"page error: {err}"))

    def _request(self, request):
        if not request.url.startswith(LOCAL_SCHEMES):
            self.problems.append(f"request leaving the page: {request.url}")

    def _dialog(self, dialog):
        self.problems.append(f"dialog ({dialog.type}): {dialog.message!r}: a script ran")
        dialog.dismiss()

    def open(self, path: Path):
        self.page.goto(path.as_uri(), wait_until="load")
        return self.page

    def js(self, expression: str, arg=None):
        return self.page.evaluate(expression, arg)

    def assert_clean(self):
        assert not self.problems, "\n".join(self.problems)

    def close(self):
        self.context.close()


@pytest.fixture
def tab(browser):
    tab = Tab(browser)
    yield tab
    tab.close()


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A toy run with markup planted in the items and the codebook, plus the later stages' artifacts (a trace-sft
    variant, a refined guideline with markup, fine-tuning logs)."""
    tmp = tmp_path_factory.mktemp("browser")
    run = compile_run(tmp, "hostile", **{"data.source": str(hostile_csv(tmp / "toy.csv")),
                                         "codebook": f"Rate the sentiment. {SCRIPT} & <b>bold</b>"})
    return add_later_stages(run)


@pytest.fixture(scope="module")
def report(hostile_run) -> Path:
    path = write_reports(hostile_run)[-1]
    assert path.name == "report.html"
    return path


@pytest.fixture(scope="module")
def compare_page(hostile_run) -> tuple[Path, list[Path]]:
    """The compare page over the hostile run and a second run (same items) whose folder name is markup."""
    plain = compile_run(hostile_run.parent.parent, "r2", **{"sampling.k": 2})
    second = plain.rename(plain.parent / HOSTILE_FOLDER)
    page = hostile_run.parent.parent / "compare.html"
    page.write_text(render_html(build_report(compare_runs(hostile_run, second, n_boot=20))), encoding="utf-8")
    return page, [hostile_run, second]


TABLES_JS = """() => [...document.querySelectorAll('table')].map(t => ({
    section: t.closest('section') ? t.closest('section').id : null,
    rows: [...t.rows].map(r => [...r.cells].map(c => c.textContent.trim()))}))"""

IMAGES_JS = """() => [...document.images].map(i => ({src: i.getAttribute('src').slice(0, 22), alt: i.alt,
    complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
    shown_w: i.getBoundingClientRect().width, shown_h: i.getBoundingClientRect().height}))"""


def tables_in(tab: Tab, section: str) -> list[list[list[str]]]:
    return [t["rows"] for t in tab.js(TABLES_JS) if t["section"] == section]


def row_of(tables: list[list[list[str]]], *first: str) -> list[str]:
    """The row whose first cells are `first` in any of `tables`."""
    rows = [r for t in tables for r in t if r[:len(first)] == list(first)]
    assert len(rows) == 1, (first, tables)
    return rows[0]


def assert_images_decoded(tab: Tab, at_least: int) -> list[dict]:
    imgs = tab.js(IMAGES_JS)
    assert len(imgs) >= at_least, imgs
    for img in imgs:
        assert img["src"] == "data:image/png;base64,", img  # inline: the page needs no files
        assert img["complete"] and img["w"] > 100 and img["h"] > 100, f"figure not decoded: {img}"
        assert img["shown_w"] > 50 and img["shown_h"] > 50, f"figure not laid out: {img}"
    return imgs


def assert_nav_scrolls(tab: Tab, ids: list[str]):
    """Click each <nav> link in turn, from the top of the page: the URL takes the section's hash and the section's
    heading is in view (and was not, for sections below the first screen)."""
    from playwright.sync_api import expect

    page = tab.page
    links = page.locator("nav a")
    assert links.count() == len(ids)
    for i, sid in enumerate(ids):
        page.evaluate("() => window.scrollTo(0, 0)")
        heading = page.locator(f"section#{sid} > h2")
        below_fold = tab.js("id => document.getElementById(id).offsetTop", sid) > page.viewport_size["height"]
        if below_fold:
            expect(heading).not_to_be_in_viewport()
        links.nth(i).click()
        expect(heading).to_be_in_viewport()
        assert tab.js("() => location.hash") == f"#{sid}"
        if below_fold:
            assert tab.js("() => window.scrollY") > 0


def test_report_dom_sections_tables_figures(tab, report, hostile_run):
    page = tab.open(report)
    assert page.title() == "thinktrace run: toy"
    sections = tab.js("() => [...document.querySelectorAll('section')].map(s => "
                      "[s.id, s.querySelector('h2').textContent])")
    assert sections == [[sid, heading] for sid, heading, _ in SECTIONS]  # every section, in order, as rendered
    nav = tab.js("() => [...document.querySelectorAll('nav a')].map(a => [a.getAttribute('href'), a.textContent])")
    assert nav == [[f"#{sid}", heading] for sid, heading, _ in SECTIONS]

    tables = tab.js(TABLES_JS)
    assert len(tables) >= 8 and sum(len(t["rows"]) for t in tables) >= 30
    # cells as the browser lays them out: the baseline from metrics.json, the stages add_later_stages wrote
    metrics = json.loads((hostile_run / "metrics.json").read_text())
    kw = metrics["splits"]["test"]["raters"]["kw"]
    agreement = tables_in(tab, "agreement")
    assert row_of(agreement, "kw")[1] == "baseline" and row_of(agreement, "kw")[3] == fmt_est(kw["alpha"])
    assert row_of(agreement, "kw-sft")[1:2] == ["trace-sft"] and row_of(agreement, "kw-sft")[3] == \
        "0.510 [0.200, 0.800]"
    assert row_of(tables_in(tab, "comparisons"), "test", "kw-sft − kw") == \
        ["test", "kw-sft − kw", "-0.340 [-0.600, -0.100]", "0.970"]
    adapters, logs = tables_in(tab, "finetune")
    assert row_of([adapters], "kw-sft")[:5] == ["kw-sft", "smollm2-135m", "15", "0", "20"]
    assert row_of([logs], "kw-sft") == ["kw-sft", "20", "20", "2.0000", "0.1000", "0.1000"]
    assert row_of(tables_in(tab, "guideline"), "1-0 (chosen)")[:2] == ["1-0 (chosen)", "traces"]

    imgs = assert_images_decoded(tab, 6)  # α forest, 2 confusion matrices, acceptance ×2, loss curve
    assert sorted(i["alt"] for i in imgs if i["alt"].startswith("confusion matrix of ")) == \
        ["confusion matrix of kw", "confusion matrix of kw-sft"]
    assert tab.js("() => document.scripts.length") == 0
    tab.assert_clean()


def test_report_nav_links_scroll_to_their_sections(tab, report):
    tab.open(report)
    assert_nav_scrolls(tab, [sid for sid, _, _ in SECTIONS])
    tab.assert_clean()


def test_report_details_open_on_click(tab, report):
    from playwright.sync_api import expect

    page = tab.open(report)
    details = page.locator("details")
    assert details.count() == 2
    expected = {"annotation guideline used": f"Rate the sentiment. {SCRIPT} & <b>bold</b>",
                "refined guideline, full text": f"Positive words {SCRIPT} mean positive."}
    for i in range(details.count()):
        box = details.nth(i)
        summary, body = box.locator("summary"), box.locator("pre")
        title = summary.text_content()
        assert title in expected
        assert box.evaluate("d => d.open") is False
        expect(body).to_be_hidden()
        summary.click()
        assert box.evaluate("d => d.open") is True
        expect(body).to_be_visible()
        expect(body).to_contain_text(expected[title])  # the planted markup, as text
        assert body.evaluate("p => p.children.length") == 0
        summary.click()
        expect(body).to_be_hidden()
    tab.assert_clean()


def test_report_planted_markup_is_text_and_never_runs(tab, report):
    page = tab.open(report)
    # sample traces quote the item texts, each with `<script>alert('x')</script> & <b>` appended
    items = page.locator(".trace .item")
    assert items.count() >= 3
    for text in items.all_text_contents():
        assert text.endswith(f" {SCRIPT} & <b>"), text
    assert tab.js("() => document.querySelectorAll('.trace *:not(div)').length") == 0  # no element from the text
    assert page.get_by_text(SCRIPT).count() >= items.count()
    assert tab.js("() => document.scripts.length") == 0
    page.locator("details summary").first.click()  # opening the codebook runs nothing either
    tab.assert_clean()  # no dialog: alert('x') never ran


def test_report_screenshot_shows_the_plots(tab, report):
    import matplotlib.image as mpimg

    page = tab.open(report)
    page.set_viewport_size({"width": 1200, "height": 3000})
    px = mpimg.imread(io.BytesIO(page.screenshot()), format="png")[..., :3]
    assert px.shape[:2] == (3000, 1200)
    assert px.std() > 0.05 and (px.min(axis=2) < 0.9).mean() > 0.02  # not blank
    # coloured pixels come from the plots (α forest, confusion heatmaps, acceptance bars); a page whose images
    # failed to decode has text and table borders only (about 4,000 such pixels in this layout, against ~50,000)
    chromatic = ((px.max(axis=2) - px.min(axis=2)) > 0.25).sum()
    assert chromatic > 15000, f"only {chromatic} coloured pixels: the plots did not render"
    tab.assert_clean()


def test_compare_page(tab, compare_page):
    path, (first, second) = compare_page
    page = tab.open(path)
    assert page.title() == "thinktrace compare (test split)"
    assert tab.js("() => [...document.querySelectorAll('section')].map(s => s.id)") == ["variants", "runs"]
    alpha = json.loads((first / "metrics.json").read_text())["splits"]["test"]["raters"]["kw"]["alpha"]
    first_label, second_label = "toy/hostile", f"toy/{HOSTILE_FOLDER}"
    variants = tables_in(tab, "variants")
    assert [r[:3] for r in variants[0][1:]] == [[first_label, "kw", "baseline"], [first_label, "kw-sft", "trace-sft"],
                                                [second_label, "kw", "baseline"]]
    assert variants[0][0][-1] == f"Δα vs {first_label} [95% CI]"
    reference = row_of(variants, first_label, "kw")
    assert reference[4:] == [fmt_est(alpha), "10", "100.0%", "(baseline)", "(reference run)"]
    assert row_of(variants, first_label, "kw-sft")[4:7] == ["0.510 [0.200, 0.800]", "10", "90.0%"]
    assert row_of(variants, second_label, "kw")[-1].startswith("+0.000")  # same items, same labels: paired
    runs = tables_in(tab, "runs")
    assert [(r[1], r[-1]) for r in runs[0][1:]] == [(first_label, str(first)), (second_label, str(second))]
    assert tab.js("() => document.querySelectorAll('td img, td b, td script').length") == 0  # the name is text
    assert_images_decoded(tab, 1)  # the α forest
    assert_nav_scrolls(tab, ["variants", "runs"])
    tab.assert_clean()


def test_the_watch_catches_a_bad_page(tab, tmp_path):
    """The checks above can fail: on a page that runs a script, loads from the network, logs an error and has a
    broken figure, the tab records all of it and the figure check rejects it."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>bad</p><script>alert('x'); console.error('boom')</script>"
                   "<img src='http://example.invalid/a.png'><img src='data:image/png;base64,AAAA'></body></html>")
    tab.open(bad)
    tab.page.wait_for_timeout(200)
    text = "\n".join(tab.problems)
    assert "dialog (alert): 'x'" in text and "console error: boom" in text
    assert "request leaving the page: http://example.invalid/a.png" in text
    with pytest.raises(AssertionError):
        assert_images_decoded(tab, 1)
