"""The README is the front page: the two set-up commands that do all set-up, the main command and the Python API.
Its size, paragraphs and links, and the generated spec reference it links to, are checked in tests/test_docs.py."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_names_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make quickstart" in readme and "make test" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert "quickstart:" in makefile and "test:" in makefile


def test_readme_shows_the_main_command_and_the_python_api():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "python -m thinktrace.compile experiments/quickstart.yaml" in readme
    assert "import thinktrace" in readme and 'thinktrace.compile("experiments/quickstart.yaml"' in readme
    assert (ROOT / "experiments" / "quickstart.yaml").is_file()


def test_readme_links_the_spec_reference_and_the_results_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/reference/spec.md)" in readme and "(docs/results/distill.md)" in readme
