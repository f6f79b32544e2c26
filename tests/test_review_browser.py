"""The review page in a real browser: Playwright (Python, sync API) drives the system Chromium (support.browser:
skipped without one, a failure where THINKTRACE_REQUIRE_BROWSER=1, as in CI). Keyboard only: open the page, reject
one trace with a reason, edit another (read back by the run's blind judge), reload and see both; then a reviewed
resume uses them. No console error, no dialog, no request leaving the app.

THINKTRACE_REVIEW_SCREENSHOT=PATH also saves a screenshot of the page there (docs/images/review.png is made so)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from support import read_jsonl
from support.browser import launch_browser
from support.specs import FAKE_ENGINES, toy_spec
from support.toy_runs import compile_run

from thinktrace.compile import main as compile_main
from thinktrace.review.app import create_app
from thinktrace.review.cli import Server
from thinktrace.review.judge import RunJudge
from thinktrace.review.store import ReviewStore


@pytest.fixture(scope="module", autouse=True)
def browser():
    yield from launch_browser(allow_host="127.0.0.1")  # the review app; every other host stays unresolved


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """The toy run with demos and the trace-quality reader (its answers are on the page)."""
    kw = toy_spec()["models"]["raters"][0]
    reader = {"name": "reader", "provider": "python", "model": f"{FAKE_ENGINES}:trace_reader", "cache": False}
    return compile_run(tmp_path_factory.mktemp("review-browser"), "toy", **{
        "sampling.max_demos": 2, "models.raters": [kw, reader], "models.generator": dict(kw, name="gen"),
        "trace_quality": {"enabled": True, "reader": "reader"}})


def test_reject_and_edit_by_keyboard_survive_a_reload_and_a_reviewed_resume(browser, toy_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    store = ReviewStore(run)
    app = create_app(store, judge=RunJudge(run, store.label_set), reviewer="ann")
    problems: list[str] = []
    with Server(app) as server:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(15_000)
        context.on("request", lambda r: r.url.startswith(server.url) or problems.append(f"request: {r.url}"))
        page = context.new_page()
        page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
        page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
        page.goto(server.url + "/", wait_until="load")
        page.wait_for_selector("#list .row")
        rows = page.locator("#list .row")
        assert rows.count() == len(store.traces)
        first = rows.nth(0).get_attribute("data-id")
        second = rows.nth(1).get_attribute("data-id")
        detail = page.inner_text("#detail")
        assert "human labels" in detail and "Rejected attempts" in detail
        assert "masked_trace: " in detail and "without_trace: " in detail  # the trace-quality reader's answers

        # reject the first trace: r, the reason, Enter
        page.keyboard.press("r")
        page.keyboard.type("it quotes its own label")
        page.keyboard.press("Enter")
        page.wait_for_selector(f'#list .row[data-id="{first}"] .status.rejected')

        # edit the second: j, e, the new rationale, Ctrl+Enter; the blind judge's label is shown
        page.keyboard.press("j")
        page.wait_for_selector(f'#list .row.sel[data-id="{second}"]')
        page.keyboard.press("e")
        human = store.trace(second)["human"]
        page.fill("#editor", f"the words carry a clear tone, so {human}")
        page.focus("#editor")
        page.keyboard.press("Control+Enter")
        page.wait_for_selector(f'#list .row[data-id="{second}"] .status.edited')
        assert f"blind judge reads {human}" in page.inner_text("#msg")

        page.reload(wait_until="load")
        page.wait_for_selector("#list .row")
        assert page.locator(f'#list .row[data-id="{first}"] .status').inner_text() == "rejected"
        assert page.locator(f'#list .row[data-id="{second}"] .status').inner_text() == "edited"
        page.locator(f'#list .row[data-id="{second}"]').click()
        assert f"the words carry a clear tone, so {human}" in page.inner_text("#detail")
        assert "1 rejected · 1 edited" in page.inner_text("#counts")

        # the filters: quotes its label (every toy trace does), then status
        page.select_option("#f-status", "rejected")
        page.wait_for_function("document.querySelectorAll('#list .row').length === 1")
        assert page.locator("#list .row").get_attribute("data-id") == first
        page.select_option("#f-status", "")
        page.wait_for_function(f"document.querySelectorAll('#list .row').length === {len(store.traces)}")
        shot = os.environ.get("THINKTRACE_REVIEW_SCREENSHOT")
        if shot:
            page.locator(f'#list .row[data-id="{second}"]').click()
            page.screenshot(path=shot)
        context.close()
    assert problems == []

    lines = read_jsonl(run / "reviews.jsonl")
    assert [(r["trace"], r["action"], r["source"]) for r in lines] == [(first, "reject", "page"), (second, "edit", "page")]
    assert lines[0]["reason"] == "it quotes its own label" and lines[1]["judge"]["agrees"] is True

    # the reviewed resume uses them
    spec = toy_run.parents[1] / "toy.yaml"
    assert compile_main([str(spec), "--resume", str(run), "--reviewed"]) == 0
    rows = read_jsonl(run / "reviewed" / "sft.jsonl")
    first_key, second_key = store.trace(first)["key"], store.trace(second)["key"]
    assert first_key not in {r["key"] for r in rows}
    assert "the words carry a clear tone" in next(r for r in rows if r["key"] == second_key)["messages"][-1]["content"]
    review = json.loads((run / "metrics.json").read_text())["traces"]["reviewed"]
    assert (review["rejected"], review["edited"]) == (1, 1)
