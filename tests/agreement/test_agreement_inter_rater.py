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
    assert set(out) == {"value", "ci", "n", "raters"}


def test_identical_raters_and_undefined_case():
    same = ["low", "mid", "high", "low"]
    out = inter_rater_alpha({"a": same, "b": list(same)}, LS, n_boot=50)
    assert out["value"] == 1.0 and out["ci"] == [1.0, 1.0]
    out = inter_rater_alpha({"a": ["low", None], "b": [None, "mid"]}, LS)
    assert out["value"] is None and out["n"] == 0


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="at least two raters"):
        inter_rater_alpha({"a": ["low"]}, LS)
    with pytest.raises(ValueError, match="lengths differ"):
        inter_rater_alpha({"a": ["low"], "b": ["low", "mid"]}, LS)
    with pytest.raises(ValueError, match="not in label_set"):
        inter_rater_alpha({"a": ["low"], "b": ["LOW"]}, LS)
