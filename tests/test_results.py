"""Publishing a run (`python -m thinktrace.results`): the findings table's reading of a CI, the results folder,
the README block kept in step with the committed results, and an incomplete run refused."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from toy_runs import add_later_stages, compile_run

from thinktrace import results
from thinktrace.report.sections.findings import reading, rows
from thinktrace.runview import RunView

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("diff, says", [
    ({"diff": 0.2, "ci": [0.05, 0.4]}, "better (CI above 0)"),
    ({"diff": -0.2, "ci": [-0.4, -0.01]}, "worse (CI below 0)"),
    ({"diff": 0.2, "ci": [-0.05, 0.4]}, "no clear difference (CI spans 0)"),
    ({"diff": 0.0, "ci": [0.0, 0.0]}, "no clear difference (CI spans 0)"),
    ({"diff": 0.2, "ci": [None, None]}, "no CI (evaluate.bootstrap 0)"),
    (None, "n/a"),
])
def test_a_difference_reads_better_or_worse_only_when_its_ci_excludes_zero(diff, says):
    assert reading(diff) == says


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return add_later_stages(compile_run(tmp_path_factory.mktemp("results"), "kw"))


def test_publish_keeps_the_small_files_and_a_summary_with_the_findings(run, tmp_path):
    out = tmp_path / "results" / "toy"
    assert results.main([str(run), str(out)]) == 0
    assert {"metrics.json", "spec.resolved.yaml", "report.md", "summary.md"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "metrics.json").read_text()) == json.loads((run / "metrics.json").read_text())
    summary = (out / "summary.md").read_text()
    assert "| fine-tuned on traces vs untuned | kw-sft − kw | -0.340 [-0.600, -0.100] |" in summary
    assert "worse (CI below 0)" in summary and "| kw-sft | trace-sft | 0.510 [0.200, 0.800] |" in summary
    links = re.findall(r"\]\((figures/[^)]+)\)", (out / "report.md").read_text())
    assert links and all((out / link).is_file() for link in links)  # report.md's figures come with it
    assert not (out / "report.html").exists() and not (out / "predictions.jsonl").exists()


def test_the_readme_block_between_markers_is_replaced_and_nothing_else(run, tmp_path):
    out = tmp_path / "toy"
    results.publish(run, out)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nbefore\n<!-- results:toy -->\nold table\n<!-- /results:toy -->\nafter\n")
    assert results.main([str(run), str(out), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n<!-- results:toy -->\n") and text.endswith("<!-- /results:toy -->\nafter\n")
    assert "old table" not in text and results.readme_block(RunView(out)) in text
    readme.write_text("no markers\n")
    assert results.main([str(run), str(out), "--readme", str(readme)]) == 2


def test_an_incomplete_run_is_not_published(run, tmp_path, capsys):
    broken = tmp_path / "run"
    shutil.copytree(run, broken)
    metrics = json.loads((broken / "metrics.json").read_text())
    metrics["status"] = {"state": "incomplete"}
    (broken / "metrics.json").write_text(json.dumps(metrics))
    assert results.main([str(broken), str(tmp_path / "out")]) == 2
    assert "incomplete" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_the_readme_shows_the_committed_results_table():
    """The README's "Does it work?" table is the one `python -m thinktrace.results` renders from the committed
    results/distill/metrics.json: numbers in the README cannot drift from the run they come from."""
    folder = ROOT / "results" / "distill"
    block = results.readme_block(RunView(folder))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"<!-- results:distill -->\n{block}<!-- /results:distill -->" in readme
    view = RunView(folder)
    assert view.metrics["status"]["state"] == "complete"
    table = {r[0] for r in rows(view, "test")}
    assert {"traces vs labels alone (fine-tuned student)", "fine-tuned on traces vs untuned",
            "teacher's traces vs the student's own (same items, same rows)",
            "refined vs original guideline"} <= table
