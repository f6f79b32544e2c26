"""τ-b and ICC inside the bootstrap design: CIs, paired differences on the same W, seeds, n/a on nominal labels."""

import numpy as np
import pytest

from thinktrace.agreement import (icc3_1, icc_moment_rows, inter_rater_icc, paired_difference,
                                  paired_inter_rater_icc_difference, rater_vs_human)
from thinktrace.agreement._bootstrap import percentile_ci, resample_weights
from thinktrace.agreement._rater import confusion_rows, encode_pair, table_metric
from thinktrace.labels import LabelSet

ORD = LabelSet.of([1, 2, 3, 4, 5], "ordinal")
NOMINAL = LabelSet.of(["neg", "neu", "pos"], "nominal")


def _raters(n=120, seed=0, label_set=ORD):
    """Human labels and two raters (a noisier, b closer), with some unparsed outputs."""
    rng = np.random.default_rng(seed)
    v = len(label_set)
    x = rng.integers(0, v, n)
    a = np.clip(x + rng.integers(-2, 3, n), 0, v - 1)
    b = np.where(rng.random(n) < 0.8, x, a)
    lab = label_set.labels
    human = [lab[i] for i in x]
    rater_a = [None if i % 11 == 0 else lab[j] for i, j in enumerate(a)]
    rater_b = [None if i % 13 == 0 else lab[j] for i, j in enumerate(b)]
    return human, rater_a, rater_b


def _boot(human, rater, metric, n_boot, seed):
    """The metric on each resample of W (drawn over ALL items, as α's bootstrap draws them)."""
    h, r = encode_pair(human, rater, ORD)
    rows = confusion_rows(h, r, len(ORD))
    tables = np.concatenate([w @ rows for w in resample_weights(len(h), n_boot, seed)])
    return table_metric(tables.reshape(-1, len(ORD), len(ORD) + 1), metric, ORD)


@pytest.mark.parametrize("metric", ["kendall_tau_b", "icc"])
def test_ci_contains_the_point_value_and_uses_alphas_resamples(metric):
    human, rater, _ = _raters()
    out = rater_vs_human(human, rater, ORD, n_boot=300, seed=4)[metric]
    low, high = out["ci"]
    assert low < out["value"] < high and high - low < 0.5
    assert [low, high] == pytest.approx(list(percentile_ci(_boot(human, rater, metric, 300, 4))), abs=1e-12)


@pytest.mark.parametrize("metric", ["kendall_tau_b", "icc"])
def test_paired_difference_is_paired_on_the_same_w(metric):
    human, a, b = _raters(seed=1)
    out = paired_difference(human, a, b, ORD, metric=metric, n_boot=300, seed=7)
    diffs = _boot(human, b, metric, 300, 7) - _boot(human, a, metric, 300, 7)  # b and a on the same resamples
    assert out["ci"] == pytest.approx(list(percentile_ci(diffs)), abs=1e-12)
    assert out["p_b_not_better"] == pytest.approx(float((diffs <= 0).mean()))
    solo_a = rater_vs_human(human, a, ORD, n_boot=0)[metric]["value"]
    assert out["a"] == pytest.approx(solo_a) and out["diff"] == pytest.approx(out["b"] - out["a"])
    assert out["diff"] > 0 and out["ci"][0] > 0 and out["p_b_not_better"] < 0.05  # b is the closer rater
    # Pairing: with b = a except one item, each resample's difference is tiny; unpaired it would be ~ the CI width.
    near = list(a)
    near[5] = human[5]
    tight = paired_difference(human, a, near, ORD, metric=metric, n_boot=300, seed=7)
    width = np.subtract(*rater_vs_human(human, a, ORD, n_boot=300, seed=7)[metric]["ci"][::-1])
    assert tight["ci"][1] - tight["ci"][0] < width / 5


def test_deterministic_by_seed():
    human, a, b = _raters(seed=2)
    one = rater_vs_human(human, a, ORD, n_boot=200, seed=3)
    assert one == rater_vs_human(human, a, ORD, n_boot=200, seed=3)
    other = rater_vs_human(human, a, ORD, n_boot=200, seed=4)
    assert one["kendall_tau_b"]["ci"] != other["kendall_tau_b"]["ci"] and one["icc"]["ci"] != other["icc"]["ci"]
    d = paired_difference(human, a, b, ORD, metric="icc", n_boot=100, seed=5)
    assert d == paired_difference(human, a, b, ORD, metric="icc", n_boot=100, seed=5)


def test_inter_rater_icc_ci_and_paired_change():
    human, a, b = _raters(seed=3)
    noisy = _raters(seed=4)[1]
    before = {"a": a, "noisy": noisy}
    after = {"a": a, "b": b}
    solo = inter_rater_icc(after, ORD, n_boot=300, seed=1)
    assert solo["ci"][0] < solo["value"] < solo["ci"][1]
    assert solo == inter_rater_icc(after, ORD, n_boot=300, seed=1)
    change = paired_inter_rater_icc_difference(before, after, ORD, n_boot=300, seed=1)
    complete = [i for i in range(len(human)) if all(g[i] is not None for g in (a, b, noisy))]
    assert change["n"] == len(complete)
    restricted = {k: [v[i] for i in complete] for k, v in after.items()}
    assert change["after"] == pytest.approx(inter_rater_icc(restricted, ORD, n_boot=0)["value"])
    assert change["diff"] == pytest.approx(change["after"] - change["before"])
    assert change["diff"] > 0 and change["ci"][0] > 0 and change["p_after_not_better"] < 0.05
    # the resamples are the items both groups labelled (>= 2 raters), drawn from the same W as α's change
    codes = {k: np.array([np.nan if x is None else ORD.value(x) for x in v]) for k, v in {**before, "b": b}.items()}
    has = {k: np.isfinite(v).astype(int) for k, v in codes.items()}
    both = (has["a"] + has["noisy"] + has["b"]) == 3
    labelled = (has["a"] + has["noisy"] >= 2) & (has["a"] + has["b"] >= 2)
    keep = np.where(both[labelled, None], 0.0, np.nan)
    rows_b = icc_moment_rows(np.column_stack([codes["a"], codes["noisy"]])[labelled] + keep)
    rows_a = icc_moment_rows(np.column_stack([codes["a"], codes["b"]])[labelled] + keep)
    w = np.concatenate(list(resample_weights(int(labelled.sum()), 300, 1)))
    diffs = icc3_1(w @ rows_a) - icc3_1(w @ rows_b)
    assert change["ci"] == pytest.approx(list(percentile_ci(diffs)), abs=1e-12)
    same = paired_inter_rater_icc_difference(after, dict(after), ORD, n_boot=100)
    assert same["diff"] == 0.0 and same["ci"] == [0.0, 0.0] and same["p_after_not_better"] == 1.0


def test_nominal_labels_give_none_never_a_number():
    human, a, b = _raters(seed=5, label_set=NOMINAL)
    out = rater_vs_human(human, a, NOMINAL, n_boot=50)
    for metric in ("kendall_tau_b", "icc"):
        assert out[metric]["value"] is None and out[metric]["ci"] == [None, None]
        d = paired_difference(human, a, b, NOMINAL, metric=metric, n_boot=50)
        assert d["a"] is d["b"] is d["diff"] is d["p_b_not_better"] is None and d["ci"] == [None, None]
    assert out["alpha"]["value"] is not None  # α stays defined on nominal labels
    inter = inter_rater_icc({"a": a, "b": b}, NOMINAL, n_boot=50)
    assert inter["value"] is None and inter["ci"] == [None, None]
    change = paired_inter_rater_icc_difference({"a": a, "b": b}, {"a": b, "b": a}, NOMINAL, n_boot=50)
    assert change["diff"] is None and change["ci"] == [None, None] and change["p_after_not_better"] is None


def test_invalid_groups_raise():
    human, a, b = _raters(n=10)
    with pytest.raises(ValueError, match="at least two"):
        inter_rater_icc({"a": a}, ORD)
    with pytest.raises(ValueError, match="lengths differ"):
        inter_rater_icc({"a": a, "b": b[:-1]}, ORD)
    with pytest.raises(ValueError, match="at least two after"):
        paired_inter_rater_icc_difference({"a": a, "b": b}, {"a": a}, ORD)
    with pytest.raises(ValueError, match="not in label_set"):
        inter_rater_icc({"a": a, "b": ["x"] * 10}, ORD)
