"""report.html in a real browser: headless Chromium (Debian's `chromium` package) renders it offline, the rendered DOM
holds the plots and tables, and the screenshot shows the plots (coloured pixels, not a blank or broken page).
Skipped, with the reason, where no Chromium is installed (`.ci/run` installs it)."""

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from toy_runs import add_later_stages, compile_run

from thinktrace.report import SECTIONS, write_reports


def find_chromium() -> str | None:
    explicit = os.environ.get("THINKTRACE_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: "
                                "apt-get install chromium; or set THINKTRACE_CHROMIUM): browser check skipped")


def chromium(tmp: Path, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND",
             f"--user-data-dir={tmp / 'profile'}"]
    env = {**os.environ, "HOME": str(tmp)}
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=timeout, env=env)


class DomCounts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.tables, self.rows, self.sections, self.scripts = [], 0, 0, [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        elif tag == "table":
            self.tables += 1
        elif tag == "tr":
            self.rows += 1
        elif tag == "section":
            self.sections.append(a.get("id"))
        elif tag == "script":
            self.scripts += 1


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    run = add_later_stages(compile_run(tmp, "browser"))
    return write_reports(run)[-1]


def test_rendered_dom_has_plots_and_tables(report, tmp_path):
    proc = chromium(tmp_path, "--dump-dom", report.as_uri())
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    dom = DomCounts()
    dom.feed(proc.stdout)
    assert dom.sections == [sid for sid, _, _ in SECTIONS]  # every section, in order, as the browser sees it
    pngs = [s for s in dom.imgs if s.startswith("data:image/png;base64,")]
    assert len(pngs) >= 6 and len(pngs) == len(dom.imgs)
    assert dom.tables >= 8 and dom.rows >= 30
    assert dom.scripts == 0


def test_screenshot_shows_the_plots(report, tmp_path):
    import matplotlib.image as mpimg

    shot = tmp_path / "report.png"
    proc = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,3000", report.as_uri())
    assert proc.returncode == 0 and shot.exists(), f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    px = mpimg.imread(str(shot))[..., :3]
    assert px.shape[:2] == (3000, 1200)
    assert px.std() > 0.05 and (px.min(axis=2) < 0.9).mean() > 0.02  # not blank
    # coloured pixels come from the plots (α forest, confusion heatmaps, acceptance bars); a page whose images
    # failed to decode has text and table borders only (about 4,000 such pixels in this layout, against ~50,000)
    chromatic = ((px.max(axis=2) - px.min(axis=2)) > 0.25).sum()
    assert chromatic > 15000, f"only {chromatic} coloured pixels: the plots did not render"
