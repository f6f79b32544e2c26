"""paired_difference: rater b minus rater a on the same resampled items."""

import numpy as np
import pytest

from thinktrace.agreement import paired_difference, rater_vs_human
from thinktrace.labels import LabelSet

LS = LabelSet.of(["a", "b", "c"], "nominal")
ORD = LabelSet.of([1, 2, 3, 4], "ordinal")


def _data(label_set, n=150, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    labels = label_set.labels
    human = [labels[i] for i in rng.integers(0, len(labels), n)]
    noisy = [labels[rng.integers(0, len(labels))] if rng.random() < noise else h for h in human]
    return human, noisy


def test_identical_raters_have_zero_difference():
    human, rater = _data(LS)
    out = paired_difference(human, rater, list(rater), LS, n_boot=200)
    assert out["diff"] == 0.0 and out["ci"] == [0.0, 0.0]
    assert out["p_b_not_better"] == 1.0
    assert out["a"] == out["b"] and out["n"] == 150


@pytest.mark.parametrize("metric", ["alpha", "accuracy", "macro_f1"])
def test_strictly_better_rater(metric):
    human, worse = _data(LS, noise=0.6)
    _, better = _data(LS, noise=0.1, seed=0)
    better = [h if i % 10 else w for i, (h, w) in enumerate(zip(human, worse))]  # 90 % exact
    out = paired_difference(human, worse, better, LS, metric=metric, n_boot=300)
    assert out["diff"] > 0 and out["ci"][0] > 0
    assert out["p_b_not_better"] < 0.05
    point = rater_vs_human(human, worse, LS, n_boot=0)[metric]["value"]
    assert out["a"] == pytest.approx(point)


def test_mae_lower_is_better():
    human, worse = _data(ORD, noise=0.7)
    out = paired_difference(human, worse, list(human), ORD, metric="mae", n_boot=200)
    assert out["diff"] < 0 and out["ci"][1] < 0
    assert out["p_b_not_better"] == 0.0


def test_deterministic_under_seed():
    human, a = _data(LS, seed=1)
    _, b = _data(LS, seed=2)
    assert paired_difference(human, a, b, LS, n_boot=100, seed=3) == paired_difference(human, a, b, LS, n_boot=100, seed=3)


def test_invalid_inputs_raise():
    human, rater = _data(LS, n=10)
    with pytest.raises(ValueError, match="unknown metric 'kappa'"):
        paired_difference(human, rater, rater, LS, metric="kappa")
    with pytest.raises(ValueError, match="same items"):
        paired_difference(human, rater, rater[:-1], LS)
    with pytest.raises(ValueError, match="same items"):
        paired_difference(human[:-1], rater, rater, LS)
    with pytest.raises(ValueError, match="ordinal or interval"):
        paired_difference(human, rater, rater, LS, metric="mae")
