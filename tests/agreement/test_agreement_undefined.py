"""Bootstraps say what they dropped: resamples on which a statistic is undefined are counted (n_boot drawn,
n_valid defined), and below 95 % valid the CI is undefined ([None, None], ci_undefined) instead of a number resting
on the resamples that happened to be defined. Paired differences carry a two-sided p for Holm's adjustment."""

import json

import numpy as np
import pytest

from thinktrace.agreement import (holm, inter_rater_alpha, paired_difference, paired_inter_rater_difference,
                                  rater_vs_human)
from thinktrace.agreement._bootstrap import estimate, paired_summary, p_two_sided
from thinktrace.labels import LabelSet

ORD = LabelSet.of(["1", "2", "3", "4", "5"], "ordinal")


def _human(n=150, seed=0):
    rng = np.random.default_rng(seed)
    return [ORD.labels[i] for i in rng.integers(0, len(ORD), n)]


def _one_label_rater(human):
    """Answers "1" on every item but one (the distill run's +trace-sft-common: "1" for 149 of 150 words)."""
    return ["1"] * (len(human) - 1) + ["3"]


def test_tau_b_of_a_rater_that_answers_one_label_has_an_undefined_ci():
    human = _human()
    out = rater_vs_human(human, _one_label_rater(human), ORD, n_boot=1000, seed=0)
    tau = out["kendall_tau_b"]
    # a resample that misses the one "3" leaves the rater constant: τ-b undefined there (~37 % of resamples)
    assert tau["n_boot"] == 1000 and 550 < tau["n_valid"] < 750
    assert tau["ci_undefined"] is True and tau["ci"] == [None, None]
    assert tau["value"] is not None  # the point value stays
    assert out["alpha"]["ci_undefined"] is False and out["alpha"]["n_valid"] == 1000  # α is defined throughout
    assert None not in out["alpha"]["ci"]
    json.dumps(out, allow_nan=False)


def test_a_paired_difference_with_mostly_undefined_resamples_has_an_undefined_ci_but_keeps_its_p():
    human = _human()
    good = list(human)
    d = paired_difference(human, good, _one_label_rater(human), ORD, metric="kendall_tau_b", n_boot=1000)
    assert d["n_boot"] == 1000 and d["n_valid"] < 950
    assert d["ci_undefined"] is True and d["ci"] == [None, None] and d["diff"] < 0
    assert d["p_b_not_better"] == 1.0 and d["p_two_sided"] == 0.0  # over the defined resamples
    alpha = paired_difference(human, good, _one_label_rater(human), ORD, metric="alpha", n_boot=200)
    assert alpha["ci_undefined"] is False and alpha["n_valid"] == alpha["n_boot"] == 200 and None not in alpha["ci"]


def test_the_rule_is_95_percent_valid():
    boot = np.linspace(0, 1, 100)
    at = estimate(0.5, np.where(np.arange(100) < 5, np.nan, boot), 10)  # 95 of 100 valid: defined
    below = estimate(0.5, np.where(np.arange(100) < 6, np.nan, boot), 10)  # 94 of 100: undefined
    assert (at.n_boot, at.n_valid, at.ci_undefined) == (100, 95, False) and not np.isnan(at.low)
    assert (below.n_boot, below.n_valid, below.ci_undefined) == (100, 94, True)
    assert below.as_dict() == {"value": 0.5, "ci": [None, None], "n": 10, "n_boot": 100, "n_valid": 94,
                               "ci_undefined": True}
    no_boot = estimate(0.5, np.array([]), 10)  # no bootstrap run: no CI, but not "undefined"
    assert no_boot.as_dict()["ci_undefined"] is False and no_boot.as_dict()["n_boot"] == 0


def test_two_sided_p_counts_both_tails_of_the_defined_resamples():
    assert p_two_sided(np.array([1.0, 2.0, 3.0, -1.0])) == pytest.approx(0.5)
    assert p_two_sided(np.array([1.0, 2.0, 3.0])) == 0.0
    assert p_two_sided(np.array([0.0, 0.0])) == 1.0  # ties at 0 count on both sides, capped at 1
    assert np.isnan(p_two_sided(np.array([])))
    s = paired_summary(np.array([1.0, -1.0, 2.0, np.nan]), "p_b_not_better")
    assert s["p_b_not_better"] == pytest.approx(1 / 3) and s["p_two_sided"] == pytest.approx(2 / 3)
    assert (s["n_boot"], s["n_valid"], s["ci_undefined"], s["ci"]) == (4, 3, True, [None, None])
    lower_better = paired_summary(np.array([1.0, -1.0, -2.0]), "p", higher_is_better=False)
    assert lower_better["p"] == pytest.approx(1 / 3) and lower_better["p_two_sided"] == pytest.approx(2 / 3)


def test_holm_matches_the_textbook_adjustment():
    # R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") -> 0.03 0.06 0.06 0.02
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # a missing p counts in the family as 1: m = 3, so 0.01 -> 0.03, 0.04 -> max(0.03, 2 * 0.04) = 0.08
    assert holm([0.01, None, 0.04]) == [pytest.approx(0.03), None, pytest.approx(0.08)]
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == []


def test_inter_rater_estimates_and_differences_count_their_resamples():
    labels = LabelSet.of(["negative", "neutral", "positive"])
    truth = ["negative", "neutral", "positive"] * 10
    shifted = truth[1:] + truth[:1]
    before, after = {"a": truth, "b": shifted}, {"a": truth, "b": list(truth)}
    change = paired_inter_rater_difference(before, after, labels, n_boot=100, seed=0)
    assert change["n_boot"] == change["n_valid"] == 100 and change["ci_undefined"] is False
    assert change["p_after_not_better"] == 0.0 and change["p_two_sided"] == 0.0
    # two raters agreeing on 3 items of one label and 1 of another: a resample missing the odd item has no
    # variation, α undefined there (~(3/4)^4 = 32 % of resamples): the CI is undefined
    few = inter_rater_alpha({"a": ["negative"] * 3 + ["positive"], "b": ["negative"] * 3 + ["positive"]}, labels,
                            n_boot=400, seed=0)
    assert few["value"] == 1.0 and few["ci_undefined"] is True and few["ci"] == [None, None]
    assert few["n_valid"] < 0.95 * few["n_boot"] == 380
