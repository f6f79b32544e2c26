"""inter_rater_alpha: α among several LLM raters."""

import numpy as np
import pytest

from thinktrace.agreement import alpha, inter_rater_alpha
from thinktrace.labels import LabelSet

LS = LabelSet.of(["low", "mid", "high"], "ordinal")


def test_matches_alpha_on_rater_matrix_with_missing():
    ratings = {
        "m1": ["low", "mid", "high", "mid", None, "low"],
        "m2": ["low", "high", "high", "mid", "low", None],
        "m3": ["mid", "mid", None, "mid", "low", "low"],
    }
    out = inter_rater_alpha(ratings, LS, n_boot=100)
    code = {"low": 0, "mid": 1, "high": 2}
    matrix = np.array([[np.nan if x is None else code[x] for x in r] for r in ratings.values()])
    assert out["value"] == pytest.approx(alpha(matrix, "ordinal"))
    assert out["raters"] == ["m1", "m2", "m3"] and out["n"] == 6
    assert set(out) == {"value", "ci", "n", "n_boot", "n_valid", "ci_undefined", "raters"}


def test_identical_raters_and_undefined_case():
    same = ["low", "mid", "high", "low"] * 3  # 12 items: a resample with one label only (α undefined) is rare
    out = inter_rater_alpha({"a": same, "b": list(same)}, LS, n_boot=50)
    assert out["value"] == 1.0 and out["ci"] == [1.0, 1.0] and out["n_valid"] == out["n_boot"] == 50
    out = inter_rater_alpha({"a": ["low", None], "b": [None, "mid"]}, LS)
    assert out["value"] is None and out["n"] == 0


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="at least two raters"):
        inter_rater_alpha({"a": ["low"]}, LS)
    with pytest.raises(ValueError, match="lengths differ"):
        inter_rater_alpha({"a": ["low"], "b": ["low", "mid"]}, LS)
    with pytest.raises(ValueError, match="not in label_set"):
        inter_rater_alpha({"a": ["low"], "b": ["LOW"]}, LS)


def test_paired_inter_rater_change_agrees_with_the_two_alphas():
    from thinktrace.agreement import inter_rater_alpha, paired_inter_rater_difference
    from thinktrace.labels import LabelSet

    labels = LabelSet.of(["negative", "neutral", "positive"])
    truth = ["negative", "neutral", "positive"] * 6
    shifted = truth[1:] + truth[:1]
    before = {"a": truth, "b": shifted}  # disagree on every item
    after = {"a": truth, "b": [t if i % 6 else s for i, (t, s) in enumerate(zip(truth, shifted))]}
    change = paired_inter_rater_difference(before, after, labels, n_boot=200, seed=1)
    alpha_before = inter_rater_alpha(before, labels, n_boot=0)["value"]
    alpha_after = inter_rater_alpha(after, labels, n_boot=0)["value"]
    assert change["before"] == alpha_before and change["after"] == alpha_after
    assert change["diff"] == alpha_after - alpha_before > 0.5 and change["n"] == 18
    assert 0 < change["ci"][0] <= change["diff"] <= change["ci"][1] and change["p_after_not_better"] == 0.0
    # an item one group leaves unlabelled (None) drops out of both groups: n counts items usable in both
    after["b"] = [None] + after["b"][1:]
    assert paired_inter_rater_difference(before, after, labels, n_boot=50)["n"] == 17
