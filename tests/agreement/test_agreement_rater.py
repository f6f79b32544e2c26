"""rater_vs_human: one rater against the aggregated human label."""

import json

import numpy as np
import pytest

from thinktrace.agreement import alpha, rater_vs_human
from thinktrace.labels import LabelSet

NOMINAL = LabelSet.of(["neg", "neu", "pos"], "nominal")
ORDINAL = LabelSet.of([1, 2, 3, 4, 5], "ordinal")


def _human(label_set, n=60, seed=0):
    rng = np.random.default_rng(seed)
    return [label_set.labels[i] for i in rng.integers(0, len(label_set), n)]


def test_perfect_rater_alpha_one_and_ci_collapses():
    human = _human(NOMINAL)
    out = rater_vs_human(human, list(human), NOMINAL, n_boot=200)
    assert out["alpha"] == {"value": 1.0, "ci": [1.0, 1.0], "n": 60, "n_boot": 200, "n_valid": 200,
                            "ci_undefined": False}
    assert out["accuracy"]["value"] == 1.0 and out["accuracy"]["ci"] == [1.0, 1.0]
    assert out["macro_f1"]["value"] == 1.0
    assert out["coverage"] == 1.0 and out["n_unparsed"] == 0
    json.dumps(out)


def test_constant_rater_is_at_or_below_chance():
    human = _human(NOMINAL)
    out = rater_vs_human(human, ["neu"] * len(human), NOMINAL, n_boot=100)
    assert out["alpha"]["value"] <= 0
    human = _human(ORDINAL)
    # A constant at an end of the scale is clearly below chance. (A constant exactly at the human mean gives
    # α = 0 up to α's small-sample correction, O(1/n), which can be slightly positive.)
    out = rater_vs_human(human, ["1"] * len(human), ORDINAL, n_boot=100)
    assert out["alpha"]["value"] <= 0
    assert out["spearman"]["value"] is None  # constant rater: rank correlation undefined


def test_unparsed_items():
    human = ["neg", "neu", "pos", "pos", "neg"]
    rater = ["neg", None, "pos", None, "neu"]
    out = rater_vs_human(human, rater, NOMINAL, n_boot=50)
    assert out["n_items"] == 5 and out["n_unparsed"] == 2
    assert out["coverage"] == pytest.approx(3 / 5)
    assert out["accuracy"]["value"] == pytest.approx(2 / 5)  # unparsed count as wrong
    assert out["accuracy"]["n"] == 5
    # α treats unparsed as missing: same as α on the two-coder matrix with nan
    codes = {"neg": 0, "neu": 1, "pos": 2}
    matrix = np.array([[codes[h] for h in human], [np.nan if r is None else codes[r] for r in rater]], float)
    assert out["alpha"]["value"] == pytest.approx(alpha(matrix, "nominal"))
    assert out["alpha"]["n"] == 3


def test_ordinal_reports_scale_metrics_and_accuracy():
    human = ["1", "2", "3", "4", "5", "3"]
    rater = ["1", "3", "3", "5", None, "3"]
    out = rater_vs_human(human, rater, ORDINAL, n_boot=0)
    assert {"alpha", "mae", "spearman", "accuracy"} <= set(out) and "macro_f1" not in out
    assert out["mae"]["value"] == pytest.approx(2 / 5) and out["mae"]["n"] == 5
    assert out["accuracy"]["value"] == pytest.approx(3 / 6)
    assert out["mae"]["ci"] == [None, None]  # n_boot=0: no interval


def test_interval_alpha_uses_label_values():
    ls = LabelSet.of([0, 1, 10], "interval")
    human = ["0", "1", "10", "0", "1", "10"]
    rater = ["1", "0", "10", "1", "0", "10"]
    expected = alpha(np.array([[0, 1, 10, 0, 1, 10], [1, 0, 10, 1, 0, 10]], float), "interval")
    assert rater_vs_human(human, rater, ls, n_boot=0)["alpha"]["value"] == pytest.approx(expected)


def test_bootstrap_is_deterministic_under_seed():
    human = _human(NOMINAL, seed=1)
    rater = _human(NOMINAL, seed=2)
    a = rater_vs_human(human, rater, NOMINAL, n_boot=200, seed=5)
    b = rater_vs_human(human, rater, NOMINAL, n_boot=200, seed=5)
    c = rater_vs_human(human, rater, NOMINAL, n_boot=200, seed=6)
    assert a == b
    assert a["alpha"]["ci"] != c["alpha"]["ci"]
    assert a["alpha"]["value"] == c["alpha"]["value"]


@pytest.mark.parametrize(
    "human, rater, match",
    [
        (["neg", "pos"], ["neg"], "same items"),
        (["neg", "bad"], ["neg", "pos"], "not in label_set"),
        (["neg", None], ["neg", "pos"], "missing"),
        (["neg", "pos"], ["neg", "Positive"], "parse LM output"),
        ([], [], "no items"),
    ],
)
def test_invalid_inputs_raise(human, rater, match):
    with pytest.raises(ValueError, match=match):
        rater_vs_human(human, rater, NOMINAL, n_boot=10)


def test_invalid_n_boot_raises():
    with pytest.raises(ValueError, match="n_boot"):
        rater_vs_human(["neg"], ["neg"], NOMINAL, n_boot=-5)
