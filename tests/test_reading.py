"""The reading under a published results table: every number in it comes from metrics.json, and the claims are
read off the comparisons' CIs (shown only when every comparison that tests a claim reads better)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from thinktrace.report.model import Bullets
from thinktrace.report.render import render_markdown
from thinktrace.report.sections.reading import claim_verdict, reading_blocks, what_ran
from thinktrace.results import summary_report
from thinktrace.runview import RunView

ROOT = Path(__file__).resolve().parents[1]


def _est(value, lo, hi):
    return {"value": value, "ci": [lo, hi], "n": 50}


def _comparison(a, b, va, vb, lo, hi):
    return {"metric": "alpha", "a": a, "b": b, "value_a": va, "value_b": vb, "diff": vb - va, "ci": [lo, hi], "n": 50}


def _run(tmp_path, comparisons, raters):
    metrics = {
        "schema_version": 1, "spec": {"name": "toy"}, "status": {"state": "complete"},
        "data": {"label_set": ["-1", "0", "1"], "level": "ordinal",
                 "stats": {"items": 100, "per_split": {"train": 30, "dev": 20, "test": 50},
                           "labels_per_item": {"median": 3}, "ties": {"midpoint": 7, "majority": 2},
                           "tie_break": "half_even"}},
        "variants": [{"name": "s", "kind": "baseline"}, {"name": "s+trace-sft", "kind": "trace-sft"},
                     {"name": "s+label-sft", "kind": "label-sft"},
                     {"name": "s+shuffled-trace-sft", "kind": "shuffled-trace-sft"},
                     {"name": "q", "kind": "baseline"}, {"name": "q+refined", "kind": "refined-guideline"}],
        "splits": {"test": {"n_items": 50, "raters": raters, "comparisons": comparisons,
                            "human_ceiling": {"loo_alpha": _est(0.8, 0.7, 0.85)}}},
        "traces": {"examples": 30, "explained": 12, "attempts": 60, "accepted": 12,
                   "cut": {"attempts": 9, "accepted": 0, "label_matched_rejected": 4}},
        "timing": {"traces": 120.0, "evaluate": 60.0},
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "spec.resolved.yaml").write_text("data: {aggregate: median}\nsampling: {strategy: blind, k: 2, "
                                                 "temperature: 0.7}\n")
    return RunView(tmp_path)


RATERS = {name: {"n_items": 50, "n_label_by_choice": cut, "alpha": _est(a, a - 0.1, a + 0.1)}
          for name, cut, a in (("s", 30, 0.1), ("s+trace-sft", 1, 0.5), ("s+label-sft", 0, 0.45),
                               ("s+shuffled-trace-sft", 2, 0.2), ("q", 3, 0.4), ("q+refined", 0, 0.6))}


def _text(run) -> str:
    return render_markdown(summary_report(run))


def test_claim_one_is_shown_only_when_traces_beat_labels_and_shuffled_traces(tmp_path):
    comps = [_comparison("s+label-sft", "s+trace-sft", 0.45, 0.5, -0.05, 0.15),
             _comparison("s+shuffled-trace-sft", "s+trace-sft", 0.2, 0.5, 0.1, 0.5),
             _comparison("q", "q+refined", 0.4, 0.6, 0.05, 0.35)]
    text = _text(_run(tmp_path, comps, RATERS))
    assert "**Claim (1)**" in text and "not shown (a comparison's CI spans 0" in text.split("**Claim (1)**")[1].split("\n")[0]
    assert "for q, shown" in text.split("**Claim (2)**")[1].split("\n")[0]
    # the numbers of a comparison sentence are the metrics' own
    assert "α 0.450 → 0.500, Δα 0.050 [-0.050, 0.150], no clear difference (CI spans 0); Holm over the table" in text
    assert "Answers cut before their label: s+label-sft 0/50, s+trace-sft 1/50." in text


def test_a_comparison_reading_worse_contradicts_the_claim():
    assert claim_verdict(["better (CI above 0)", "worse (CI below 0)"]).startswith("contradicted")
    assert claim_verdict(["better (CI above 0)", "undefined"]).startswith("not shown")
    assert claim_verdict(["better (CI above 0)"]).startswith("shown")
    assert claim_verdict([]).startswith("not tested")


def test_what_ran_reads_ties_cut_attempts_and_times_off_the_metrics(tmp_path):
    run = _run(tmp_path, [], RATERS)
    (bullets,) = [b for b in what_ran(run) if isinstance(b, Bullets)]
    text = " ".join("".join(str(p) for p in (item if isinstance(item, list) else [item])) for item in bullets.items)
    assert "100 items (train 30, dev 20, test 50), 3 human labels per item (median), gold = median" in text
    assert "7 mean/median midpoints and 2 majority ties, rule `half_even`" in text
    assert "12 of 30 train items explained, 12 of 60 samples accepted; 9 samples were cut by max_tokens (4 of" in text
    assert "3.0 min: traces 2.0 min, evaluate 1.0 min" in text


def test_the_human_ceiling_is_read_against_the_best_rater(tmp_path):
    text = _text(_run(tmp_path, [], RATERS))
    assert "The best rater here, q+refined (α 0.600 [0.500, 0.700]), is below the ceiling's CI." in text


def test_every_number_in_the_published_reading_is_in_the_metrics():
    """The README's results block (reading included) renders from the committed results: no number in its prose
    that the metrics do not hold (each decimal in the reading occurs in the rendered comparisons or estimates)."""
    run = RunView(ROOT / "results" / "distill")
    blocks = reading_blocks(run)
    assert blocks, "the published run has no reading"
    rendered = render_markdown(summary_report(run))
    reading = rendered.split("**Reading**")[1].split("**What ran**")[0]
    reading = re.sub(r"\(p_adj [^)]*\)", "", reading)  # Holm-adjusted p's: derived, tested in test_results.py
    metrics_text = json.dumps(run.metrics)
    for number in set(re.findall(r"-?\d+\.\d{3}", reading)):
        value = float(number)
        assert any(abs(float(x) - value) < 5e-4 for x in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", metrics_text)), number


def test_a_claim_shown_by_raw_cis_but_not_after_holm_says_so():
    assert claim_verdict(["better (CI above 0)"], ["no clear difference (p_adj 0.096)"]) == (
        "shown (every comparison that tests it reads better); not after Holm's adjustment over the table's rows")
    assert claim_verdict(["better (CI above 0)"], ["better (p_adj 0.010)"]).endswith("reads better)")


def test_format_claims_are_read_only_when_the_run_trained_those_formats(tmp_path):
    comps = [_comparison("s+label-sft", "s+trace-sft", 0.45, 0.5, -0.05, 0.15)]
    text = _text(_run(tmp_path, comps, RATERS))
    assert "multitask format" not in text and "every train item" not in text  # not trained: no line at all
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    metrics["variants"] += [{"name": "s+trace-sft-multitask", "kind": "trace-sft-multitask"},
                            {"name": "s+label-sft-all", "kind": "label-sft-all"}]
    raters = {**RATERS, "s+trace-sft-multitask": RATERS["s+trace-sft"], "s+label-sft-all": RATERS["s+label-sft"]}
    metrics["splits"]["test"]["raters"] = raters
    metrics["splits"]["test"]["comparisons"] = comps + [
        _comparison("s+label-sft", "s+trace-sft-multitask", 0.45, 0.6, 0.02, 0.3),
        _comparison("s+label-sft-all", "s+trace-sft", 0.7, 0.5, -0.3, -0.1),
        _comparison("s+label-sft-all", "s+trace-sft-multitask", 0.7, 0.6, -0.2, 0.05)]
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    text = _text(RunView(tmp_path))
    line = text.split("**Claim (1), multitask format**")[1].split("\n")[0]
    assert "shown (every comparison that tests it reads better)" in line
    assert "**Claim (1), label-then-rationale format**" not in text
    line = text.split("**Claim (1) against labels on every train item**")[1].split("\n")[0]
    assert "contradicted" not in line and "not shown" in line  # one format worse, the other spans 0


def test_some_format_beating_labels_on_every_item():
    from thinktrace.report.sections.reading import any_format_verdict

    better, same, worse = ("better (CI above 0)", "better (p_adj 0.01)"), ("no clear difference (CI spans 0)", "n"), \
        ("worse (CI below 0)", "worse (p_adj 0.01)")
    assert any_format_verdict([same, better]).startswith("shown")
    assert any_format_verdict([better, worse]).startswith("mixed")
    assert any_format_verdict([worse, worse]).startswith("contradicted")
    assert any_format_verdict([worse, same]).startswith("not shown")
    assert any_format_verdict([("better (CI above 0)", "no clear difference (p_adj 0.2)")]).endswith("table's rows")


def test_a_comparison_to_a_collapsed_rater_is_no_evidence_for_a_claim(tmp_path):
    """convabuse-distill-balanced: every trace format read 'better' than label-only on all train items, which
    answered -1 for 145/150 items; the claim must not read 'shown' off a rater whose α is not an agreement."""
    metrics_raters = {**RATERS, "s+label-sft-all": {**RATERS["s+label-sft"], "alpha": _est(-0.5, -0.6, -0.4),
                                                    "collapse": {"collapsed": True, "top_label": "-1",
                                                                 "top_count": 48, "n": 50}}}
    comps = [_comparison("s+label-sft", "s+trace-sft", 0.45, 0.5, -0.05, 0.15),
             _comparison("s+label-sft-all", "s+trace-sft", -0.5, 0.5, 0.8, 1.2)]
    _run(tmp_path, comps, metrics_raters)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    metrics["variants"] += [{"name": "s+label-sft-all", "kind": "label-sft-all"}]
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    text = _text(RunView(tmp_path))
    line = text.split("**Claim (1) against labels on every train item**")[1].split("\n")[0]
    assert "not shown (a comparison is to a rater that failed or collapsed" in line and "shown (a format" not in line
    assert "s+label-sft-all: answers -1 for 48/50 items — its α is not a rater's agreement." in text
