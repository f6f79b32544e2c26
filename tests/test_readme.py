from pathlib import Path

from thinktrace._readme import render

ROOT = Path(__file__).resolve().parent.parent


def test_readme_spec_reference_is_current():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render(readme) == readme, "README spec reference is stale: run `python -m thinktrace._readme`"


def test_readme_names_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make quickstart" in readme and "make test" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert "quickstart:" in makefile and "test:" in makefile
