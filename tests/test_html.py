"""report.html: self-contained, every section present or noted, plots inline, all user/LM text escaped."""

import base64
import json
import re
import shutil

import pytest
from support import read_jsonl
from support.toy_runs import SCRIPT, add_later_stages, compile_run, hostile_csv

from thinktrace.report import write_reports
from thinktrace.report.sections.agreement import confusion

SECTIONS = ("data", "agreement", "comparisons", "confusion", "traces", "finetune", "prompts", "guideline", "samples",
            "calls", "cost")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """A toy run with markup planted in the items and the codebook, plus the later stages' artifacts."""
    tmp = tmp_path_factory.mktemp("html")
    run = compile_run(tmp, "hostile", **{"data.source": str(hostile_csv(tmp / "toy.csv")),
                                         "codebook": f"Rate the sentiment. {SCRIPT} & <b>bold</b>"})
    add_later_stages(run)
    return run


@pytest.fixture(scope="module")
def full_html(full_run):
    path = write_reports(full_run)[-1]
    assert path == full_run / "report.html"
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    return compile_run(tmp_path_factory.mktemp("plain"), "plain")


def images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_every_section_is_there(full_html):
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in full_html, sid
    assert full_html.startswith("<!DOCTYPE html>") and full_html.rstrip().endswith("</html>")
    assert "thinktrace run: toy" in full_html


def test_plots_are_inline_pngs(full_html):
    pngs = images(full_html)
    # α forest, 2 confusion matrices (kw, kw-sft), acceptance by attempt, per label, loss curve
    assert len(pngs) >= 6
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") and len(p) > 1000 for p in pngs)
    assert full_html.count('alt="confusion matrix of ') == 2


def test_user_and_lm_text_is_escaped(full_html):
    assert "<script" not in full_html.lower()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in full_html  # items, traces, codebook, diff
    assert "&amp; &lt;b&gt;" in full_html
    assert "<b>bold</b>" not in full_html


def test_nothing_is_loaded_from_outside(full_html):
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", full_html, re.I)
    assert not re.search(r"<link|<iframe|<object|<embed|@import|url\(", full_html, re.I)
    hrefs = re.findall(r'href="([^"]*)"', full_html)
    assert hrefs and all(h.startswith("#") for h in hrefs)


def test_variants_comparisons_and_inter_rater(full_html):
    assert "trace-sft" in full_html and "kw-sft" in full_html
    assert "-0.340 [-0.600, -0.100]" in full_html and "0.970" in full_html  # the paired comparison row
    assert "α among LLM raters" in full_html and "0.700 [0.500, 0.900]" in full_html
    assert "<b>Human ceiling</b> (leave-one-annotator-out α" in full_html


def test_finetune_guideline_and_cost(full_html):
    assert 'alt="training loss curves"' in full_html
    assert "<td>kw-sft</td><td>20</td><td>20</td><td>2.0000</td><td>0.1000</td>" in full_html
    assert "<td>kw-sft</td><td>smollm2-135m</td><td>15</td><td>0</td><td>20</td><td>0.1000</td><td>12 s</td>" \
        in full_html
    assert '<span class="add">+Positive words &lt;script&gt;' in full_html
    assert '<span class="del">-Use the labels given.</span>' in full_html
    assert "1-0 <b>(chosen)</b>" in full_html and "0.800" in full_html
    assert "<td>finetune</td><td>12.5 s</td>" in full_html and "<td>guidelines</td><td>3.5 s</td>" in full_html
    assert "<td>guideline writer</td><td>7</td>" in full_html


def test_sample_traces_at_most_three_per_label(full_run, full_html):
    traces = read_jsonl(full_run / "traces.jsonl")
    labels = {t["human"] for t in traces}
    n = full_html.count('<div class="trace">')
    assert 0 < n <= 3 * len(labels)
    for label in labels:
        assert f"human label: {label} (" in full_html


def test_missing_artifacts_are_noted(plain_run):
    html = write_reports(plain_run)[-1].read_text()
    assert "no fine-tuning in this run" in html
    assert "no guideline refinement in this run" in html
    assert "no paired comparisons in this run" in html
    assert len(images(html)) >= 4


def test_metrics_json_alone_is_enough(plain_run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(plain_run / "metrics.json", bare / "metrics.json")
    html = write_reports(bare)[-1].read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html
    assert "no predictions.jsonl" in html and "no traces.jsonl" in html
    assert 'alt="acceptance rate by attempt number"' in html  # from metrics.json traces.by_attempt


def test_broken_artifacts_do_not_break_the_page(plain_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(plain_run, broken)
    metrics = json.loads((broken / "metrics.json").read_text())
    metrics["timing"] = {}
    (broken / "metrics.json").write_text(json.dumps(metrics))
    (broken / "finetune" / "v").mkdir(parents=True)
    (broken / "finetune" / "v" / "train_log.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2, "loss": 1.5}\n')
    (broken / "traces.jsonl").write_text('{"torn": ')
    html = write_reports(broken)[-1].read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html
    assert "<td>v</td><td>1</td>" in html  # the one readable loss record
    assert "no timing in metrics.json" in html


@pytest.mark.parametrize("field, value, where", [
    ("guidelines", "not a dict", "guidelines"),
    ("timing", {"traces": "soon"}, "timing.traces"),
    ("splits", {"test": {"n_items": 3, "comparisons": [{"a": "x"}]}}, "splits.test.comparisons.0.b"),
])
def test_a_metrics_document_that_does_not_fit_is_one_line_naming_the_field(plain_run, tmp_path, field, value, where):
    from thinktrace.runview import RunError

    broken = tmp_path / "broken"
    shutil.copytree(plain_run, broken)
    metrics = json.loads((broken / "metrics.json").read_text())
    metrics[field] = value
    (broken / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(RunError) as err:
        write_reports(broken)
    assert f"metrics.json: {where}:" in str(err.value) and "\n" not in str(err.value)


def test_an_older_metrics_document_is_upgraded_on_read(plain_run, tmp_path):
    from thinktrace.runview import RunView

    old = tmp_path / "old"
    shutil.copytree(plain_run, old)
    metrics = json.loads((old / "metrics.json").read_text())
    del metrics["schema_version"]
    metrics["timing"] = {"traces": "1.5 min", "evaluate": "12.5 s"}
    metrics["plots"] = ["alpha.png"]
    metrics["splits"]["test"]["inter_rater"] = {"value": 0.5, "ci": [0.1, 0.8], "n": 10, "raters": ["a", "b"]}
    (old / "metrics.json").write_text(json.dumps(metrics))
    view = RunView(old)
    assert view.metrics["schema_version"] == 2 and view.timing() == {"traces": 90.0, "evaluate": 12.5}
    assert "plots" not in view.metrics and view.metrics["splits"]["test"]["inter_rater"]["all"]["value"] == 0.5


def test_the_data_section_counts_ties_and_names_the_rule(plain_run, tmp_path):
    """The Data section shows how many gold labels were ties, per kind, and the `data.tie_break` rule; a run from
    before that field shows its majority ties and the old rule."""
    write_reports(plain_run)
    report = (plain_run / "report.md").read_text(encoding="utf-8")
    assert "2 of 40 items: 2 majority ties, 0 means/medians halfway between two labels" in report
    assert "data.tie_break: half_even" in report
    old = tmp_path / "old"
    shutil.copytree(plain_run, old)
    metrics = json.loads((old / "metrics.json").read_text())
    for key in ("ties", "tie_break"):
        del metrics["data"]["stats"][key]
    (old / "metrics.json").write_text(json.dumps(metrics))
    write_reports(old)
    html = (old / "report.html").read_text(encoding="utf-8")
    assert "2 majority ties (means/medians halfway between two labels not counted in this older run); rule: lower" \
        in html


def test_confusion_counts_unparsed():
    records = [{"human": "a", "label": "a"}, {"human": "a", "label": None}, {"human": "b", "label": "zzz"},
               {"human": "b", "label": "a"}]
    rows, cols, counts = confusion(records, ["a", "b"])
    assert rows == ["a", "b"] and cols == ["a", "b", "unparsed"]
    assert counts == [[1, 0, 1], [1, 0, 1]]
