"""The system Chromium under Playwright (Python, sync API) for the browser tests: found as $THINKTRACE_CHROMIUM, else
the first of `chromium`, `chromium-browser`, `google-chrome` on PATH (Playwright never downloads a browser here).
Without one (or without the playwright package, or when it does not start) a test skips with the reason, unless
THINKTRACE_REQUIRE_BROWSER=1 (`.ci/run` sets it): then it fails with that reason."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")


def browser_required() -> bool:
    return os.environ.get("THINKTRACE_REQUIRE_BROWSER", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str):
    """Skip with `reason`; a failure instead where CI requires the browser (THINKTRACE_REQUIRE_BROWSER=1)."""
    if browser_required():
        pytest.fail(f"{reason} [THINKTRACE_REQUIRE_BROWSER=1: the browser tests may not skip]", pytrace=False)
    pytest.skip(f"{reason}: browser tests skipped (set THINKTRACE_REQUIRE_BROWSER=1 to make this a failure)")


def find_browser() -> tuple[str | None, str]:
    """(executable, how it was found) or (None, why there is none)."""
    explicit = os.environ.get("THINKTRACE_CHROMIUM")
    if explicit:
        found = shutil.which(explicit) or (explicit if Path(explicit).is_file() else None)
        return (found, "THINKTRACE_CHROMIUM") if found else \
            (None, f"THINKTRACE_CHROMIUM={explicit} is not an executable browser")
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path, f"`{name}` on PATH"
    return None, (f"no Chromium found (none of {', '.join(BROWSER_NAMES)} on PATH; Debian: apt-get install "
                  "chromium, or set THINKTRACE_CHROMIUM=/path/to/chromium)")


def launch_browser(allow_host: str | None = None):
    """A headless Chromium (a generator: yields it, closes it after); skips or fails as the module says. No host
    name resolves (a page that reaches out fails visibly) except `allow_host` (e.g. a local app's 127.0.0.1)."""
    try:
        from playwright.sync_api import Error as PlaywrightError, sync_playwright
    except ImportError as err:
        missing = f"the playwright package is not installed ({err}; pip install playwright, no browser download needed)"
    else:
        missing = None
    if missing:
        unavailable(missing)
    executable, how = find_browser()
    if executable is None:
        unavailable(how)
    args = ["--disable-gpu", "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND" + (f", EXCLUDE {allow_host}" if allow_host else "")]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    manager = sync_playwright()
    pw = manager.start()
    try:
        chromium, failure = pw.chromium.launch(executable_path=executable, headless=True, args=args,
                                               timeout=60_000), None
    except PlaywrightError as err:
        manager.__exit__(None, None, None)
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [err.__class__.__name__]
        exits = [line for line in lines if "process did exit" in line]
        failure = f"Chromium {executable} ({how}) did not start under Playwright: {'; '.join(lines[:1] + exits[-1:])}"
    if failure:
        unavailable(failure)
    try:
        yield chromium
    finally:
        chromium.close()
        manager.__exit__(None, None, None)
