"""Publishing a run (`python -m thinktrace.results`): the findings table's reading of a CI, the results folder,
the README block and the docs page kept in step with the committed results, and an incomplete run refused."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from support.toy_runs import add_later_stages, compile_run

from thinktrace import results
from thinktrace.portable import portable
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
    published = (out / "metrics.json").read_text()
    assert json.loads(published) == json.loads(portable((run / "metrics.json").read_text(), run))
    assert str(run.resolve()) not in published and str(Path.home()) not in published
    summary = (out / "summary.md").read_text()
    assert "| fine-tuned on traces vs untuned | kw-sft − kw | -0.340 [-0.600, -0.100] |" in summary
    assert "worse (CI below 0)" in summary and "| kw-sft | trace-sft | 0.510 [0.200, 0.800] |" in summary
    links = re.findall(r"\]\((figures/[^)]+)\)", (out / "report.md").read_text())
    assert links and all((out / link).is_file() for link in links)  # report.md's figures come with it
    assert not (out / "report.html").exists() and not (out / "predictions.jsonl").exists()


def test_ids_only_publishes_no_item_text_and_the_docs_page_says_where_the_report_stays(run, tmp_path):
    out, page = tmp_path / "results" / "toy", tmp_path / "toy.md"
    assert results.main([str(run), str(out)]) == 0 and (out / "report.md").exists()  # an earlier full publish
    assert results.main([str(run), str(out), "--ids-only", "--docs", str(page)]) == 0
    kept = {p.name for p in out.iterdir()}
    assert kept == {"metrics.json", "spec.resolved.yaml", "summary.md"}  # report.md and figures/ removed
    items = [json.loads(line)["item"] for line in (run / "traces.jsonl").read_text().splitlines() if line.strip()]
    assert items and "report.md" in {p.name for p in run.iterdir()}
    published = [(out / name).read_text() for name in kept] + [page.read_text()]
    assert not [i for i in items if any(i in text for text in published)]  # no item quoted anywhere
    text = page.read_text()
    assert "stays in its run folder" in text and "`report.md`" not in text
    assert text == results.docs_page(RunView(out), "toy")  # re-renders from the folder itself


def test_with_journals_publishes_what_another_experiment_replays_and_compare_pairs(run, tmp_path, capsys):
    from support import read_jsonl
    from support.specs import write_spec

    from thinktrace.compile import main

    out, page = tmp_path / "results" / "toy", tmp_path / "toy.md"
    assert results.main([str(run), str(out), "--with-journals", "--docs", str(page)]) == 0
    for journal in ("attempts.jsonl", "predictions.jsonl"):
        assert (out / journal).read_bytes() == (run / journal).read_bytes()
    from thinktrace.compare import main as compare

    assert compare([str(out), str(run)]) == 0  # the published folder pairs with a run like a run folder
    shown = capsys.readouterr().out
    assert "toy" in shown and "no results" not in shown and "not paired" not in shown
    assert results.main([str(run), str(tmp_path / "plain")]) == 0
    assert not (tmp_path / "plain" / "attempts.jsonl").exists()  # only when asked
    assert "`attempts.jsonl` (the sampling journal" in " ".join(page.read_text().split())
    assert "`predictions.jsonl` (every rating" in " ".join(page.read_text().split())
    assert results.main([str(run), str(out), "--with-journals", "--ids-only"]) == 2  # it quotes items
    assert "not with --ids-only" in capsys.readouterr().err
    # an experiment on the same requests replays it from the results folder: the same traces, no new attempt
    import yaml

    spec = yaml.safe_load((run / "spec.resolved.yaml").read_text())
    spec["sampling"]["attempts_from"] = str(out)
    again = tmp_path / "again"
    assert main([str(write_spec(tmp_path, spec)), "--out", str(again)]) == 0
    assert all(a["reused_from"] == str(out) for a in read_jsonl(again / "attempts.jsonl"))
    assert read_jsonl(again / "traces.jsonl") == read_jsonl(run / "traces.jsonl")


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


def test_the_docs_page_is_written_with_the_summary_and_where_it_comes_from(run, tmp_path):
    out, page = tmp_path / "results" / "toy", tmp_path / "docs" / "results" / "toy.md"
    assert results.main([str(run), str(out), "--docs", str(page)]) == 0
    text = page.read_text()
    assert text == results.docs_page(RunView(out), "toy") and text.startswith("# Results: ")
    assert "`results/toy/metrics.json`" in text and "](../numbers.md)" in text
    assert "| fine-tuned on traces vs untuned | kw-sft − kw | -0.340 [-0.600, -0.100] |" in text
    assert "### Scores per variant" in text  # the full tables: the README block has the short one


def test_the_readme_block_is_the_short_findings_table_and_the_claims(run, tmp_path):
    out = tmp_path / "toy"
    results.publish(run, out)
    block = results.readme_block(RunView(out))
    assert block.startswith("| question | comparison (b − a) | Δα (95% CI) | reading (Δα) | Holm (α rows) |\n")
    assert "| fine-tuned on traces vs untuned | kw-sft − kw | -0.340 [-0.600, -0.100] | worse (CI below 0) |" in block
    assert "- **Claim (1)**" in block and "Scores per variant" not in block
    assert all(len(line) <= results.WIDTH for line in block.splitlines() if not line.startswith("|"))


def test_published_files_name_no_folder_of_the_machine_they_ran_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "x"
    text = json.dumps({"adapter": f"{run.resolve()}/finetune/a/adapter", "spec": f"{tmp_path.resolve()}/exp.yaml",
                       "file": "/opt/venv/lib/python3.11/site-packages/vaderSentiment/v.txt",
                       "base_path": f"{Path.home()}/.cache/thinktrace/models/m", "other": f"{run.resolve()}x/y"})
    got = json.loads(portable(text, run))
    assert got == {"adapter": "<run>/finetune/a/adapter", "spec": "./exp.yaml",
                   "file": "<site-packages>/vaderSentiment/v.txt", "base_path": "~/.cache/thinktrace/models/m",
                   "other": "./runs/xx/y"}  # a folder's name is replaced only where the name ends


def test_a_results_folder_re_renders_onto_itself_without_changing_its_files(tmp_path):
    folder = tmp_path / "distill"
    shutil.copytree(ROOT / "results" / "distill", folder)
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:distill -->\n<!-- /results:distill -->\n")
    page = tmp_path / "distill.md"
    assert results.main([str(folder), str(folder), "--readme", str(readme), "--docs", str(page)]) == 0
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert page.read_text() == (ROOT / "docs" / "results" / "distill.md").read_text()


@pytest.mark.parametrize("text", [
    "w " * 56 + "- x y z", "a " + "w" * 112 + " - x y z", "aa bb " + "w" * 108 + " 12. x y z",
    "a " + "w" * 112 + " # x", "w" * 120 + " - x", "w" * 120 + " 3) x"])
def test_wrapped_prose_never_starts_a_line_with_a_markdown_block_marker(text):
    wrapped = results._wrap(text)
    assert wrapped.split() == text.split() or "\\" in wrapped  # the words, in order (or an escaped marker)
    for line in wrapped.splitlines()[1:]:
        assert not results._BLOCK_START.match(line), wrapped


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
    results/distill/metrics.json: numbers in the README cannot drift from the run they come from (the docs page
    with the full tables: tests/test_docs.py)."""
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


def test_an_undefined_ci_reads_undefined_with_its_count_and_an_old_document_reads_as_before():
    from thinktrace.report.format import fmt_diff, fmt_est

    undefined = {"value": 0.113, "ci": [None, None], "n": 150, "n_boot": 1000, "n_valid": 646, "ci_undefined": True}
    assert fmt_est(undefined) == "0.113 [CI undefined (646/1000 valid resamples)]"
    diff = {"diff": -0.026, "ci": [None, None], "p_b_not_better": 0.6, "p_two_sided": 0.8, "n": 150,
            "n_boot": 1000, "n_valid": 646, "ci_undefined": True}
    assert fmt_diff(diff) == "-0.026 [CI undefined (646/1000 valid resamples)]"
    assert reading(diff) == "undefined"
    old = {"value": 0.113, "ci": [0.106, 0.217], "n": 150}  # a metrics.json written before n_valid: valid
    assert fmt_est(old) == "0.113 [0.106, 0.217]" and reading({"diff": 0.1, "ci": [0.05, 0.2]}).startswith("better")


def test_the_holm_column_adjusts_the_two_sided_p_of_the_tables_rows():
    from thinktrace.report.sections.findings import holm_readings

    rows_ = [{"diff": 0.5, "ci": [0.3, 0.7], "p_b_not_better": 0.0, "p_two_sided": 0.01},
             {"diff": -0.2, "ci": [-0.4, -0.01], "p_b_not_better": 0.98, "p_two_sided": 0.04},
             {"diff": 0.1, "ci": [-0.1, 0.3], "p_b_not_better": 0.2, "p_two_sided": 0.4},
             {"diff": 0.1, "ci": [None, None], "p_two_sided": 0.001, "n_boot": 1000, "n_valid": 646,
              "ci_undefined": True},
             {"diff": 0.1, "ci": [0.01, 0.2], "p_b_not_better": 0.01}]  # an old document: no two-sided p
    # family of 5; the undefined and the p-less rows count as p = 1: 0.01 * 5 = 0.05 is not below 0.05,
    # 0.04 * 4 = 0.16, 0.4 * 3 = 1.2 -> 1
    assert holm_readings(rows_) == ["no clear difference (p_adj 0.050)", "no clear difference (p_adj 0.160)",
                                    "no clear difference (p_adj 1.000)", "undefined", "n/a (no two-sided p)"]
    assert holm_readings(rows_[:2]) == ["better (p_adj 0.020)", "worse (p_adj 0.040)"]
    assert holm_readings([{"diff": 0.5, "ci": [0.3, 0.7], "p_b_not_better": 0.0, "p_two_sided": 0.0}, None]) == \
        ["better (p_adj < 0.001)", "n/a"]


class _Run:
    """Just what `findings.rows` reads of a run: its variants and a split's comparisons."""

    def __init__(self, variants, comparisons):
        self._variants, self._comparisons = variants, comparisons

    def variants(self, split):
        return self._variants

    def split(self, split):
        return {"comparisons": self._comparisons}


def test_findings_rows_add_traces_vs_shuffled_traces_and_read_an_undefined_row_as_undefined():
    variants = [{"name": "s+trace-sft", "kind": "trace-sft"}, {"name": "s+shuffled", "kind": "shuffled-trace-sft"},
                {"name": "s+common", "kind": "trace-sft-common"}, {"name": "s+self", "kind": "self-trace-sft"}]
    comparisons = [
        {"a": "s+shuffled", "b": "s+trace-sft", "diff": 0.3, "ci": [0.1, 0.5], "p_b_not_better": 0.001,
         "p_two_sided": 0.002, "n_boot": 1000, "n_valid": 1000, "ci_undefined": False},
        {"a": "s+self", "b": "s+common", "diff": -0.1, "ci": [None, None], "p_b_not_better": 0.9,
         "p_two_sided": 0.2, "n_boot": 1000, "n_valid": 646, "ci_undefined": True,
         "kendall_tau_b_diff": {"diff": 0.02, "ci": [None, None], "n_boot": 1000, "n_valid": 646,
                                "ci_undefined": True}}]
    table = {r[0]: r for r in rows(_Run(variants, comparisons), "test")}
    shuffled = table["traces vs shuffled traces (same rows, rationales moved to another item of the same label)"]
    assert shuffled[1] == "s+trace-sft − s+shuffled"
    assert shuffled[-2:] == ["better (CI above 0)", "better (p_adj 0.004)"]  # family of 2: 0.002 * 2
    common = table["teacher's traces vs the student's own (same items, same rows)"]
    assert common[2] == "-0.100 [CI undefined (646/1000 valid resamples)]"
    assert common[3] == "0.020 [CI undefined (646/1000 valid resamples)]"
    assert common[-2:] == ["undefined", "undefined"]


@pytest.mark.parametrize("folder", sorted(p for p in (ROOT / "results").iterdir() if (p / "metrics.json").is_file()),
                         ids=lambda p: p.name)
def test_each_published_summary_re_renders_byte_for_byte(folder):
    """A change of code changes no published number: summary.md is what this version renders from the committed
    metrics.json (report.md also needs the run's journals, which results/ does not keep)."""
    from thinktrace.report.render import render_markdown

    rendered = render_markdown(results.summary_report(RunView(folder), folder.name), folder)
    assert rendered == (folder / "summary.md").read_text(encoding="utf-8")
