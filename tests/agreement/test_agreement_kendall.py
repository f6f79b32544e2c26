"""Kendall's τ-b from (weighted) confusion tables, against scipy.stats.kendalltau (variant 'b') as the oracle."""

import numpy as np
import pytest
from scipy.stats import kendalltau

from thinktrace.agreement import kendall_tau_b, rater_vs_human
from thinktrace.labels import LabelSet

ORD = LabelSet.of([1, 2, 3, 4, 5], "ordinal")
INTERVAL = LabelSet.of([-3, 0, 1, 10], "interval")


def _table(x, y, v, weights=None):
    t = np.zeros((v, v))
    np.add.at(t, (np.asarray(x), np.asarray(y)), 1.0 if weights is None else weights)
    return t


def _codes(n, v, noise, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, v, n)
    y = np.clip(x + rng.integers(-noise, noise + 1, n), 0, v - 1)
    return x, y


@pytest.mark.parametrize("seed", range(8))
def test_matches_scipy_with_many_ties(seed):
    x, y = _codes(60, 5, noise=seed % 3 + 1, seed=seed)  # 60 items on 5 values: heavy ties on both sides
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    expected = kendalltau(values[x], values[y], variant="b").statistic
    assert kendall_tau_b(_table(x, y, 5), values) == pytest.approx(expected, abs=1e-12)


def test_only_the_order_of_values_matters_and_unsorted_label_order_is_fine():
    x, y = _codes(40, 4, 1, seed=3)
    values = np.array([10.0, -2.0, 7.0, 0.5])  # label order is not value order
    expected = kendalltau(values[x], values[y], variant="b").statistic
    assert kendall_tau_b(_table(x, y, 4), values) == pytest.approx(expected, abs=1e-12)


def test_weighted_table_is_the_tau_of_the_expanded_resample():
    """A resample repeating item i w_i times: pair (i, j) counts w_i w_j times, copies of one item are double ties."""
    rng = np.random.default_rng(5)
    x, y = _codes(30, 5, 2, seed=5)
    values = np.arange(5.0)
    for _ in range(5):
        w = np.bincount(rng.integers(0, 30, 30), minlength=30).astype(float)
        expanded = kendalltau(np.repeat(x, w.astype(int)), np.repeat(y, w.astype(int)), variant="b").statistic
        assert kendall_tau_b(_table(x, y, 5, w), values) == pytest.approx(expanded, abs=1e-12)
        # the per-pair derivation, O(n^2): n_c - n_d = sum_{i<j} w_i w_j sign(dx) sign(dy)
        s = np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :])
        n = w.sum()
        n1 = ((np.bincount(x, w) ** 2).sum() - n) / 2
        n2 = ((np.bincount(y, w) ** 2).sum() - n) / 2
        by_pairs = (w @ s @ w / 2) / np.sqrt((n * (n - 1) / 2 - n1) * (n * (n - 1) / 2 - n2))
        assert kendall_tau_b(_table(x, y, 5, w), values) == pytest.approx(by_pairs, abs=1e-12)


def test_batches_of_tables_keep_leading_axes():
    tables = np.stack([_table(*_codes(25, 5, 1, seed=s), 5) for s in range(6)]).reshape(2, 3, 5, 5)
    out = kendall_tau_b(tables, np.arange(5.0))
    assert out.shape == (2, 3)
    assert out[1, 2] == pytest.approx(kendall_tau_b(tables[1, 2], np.arange(5.0)))


def test_perfect_reversed_and_undefined():
    values = np.arange(5.0)
    x = np.array([0, 1, 2, 3, 4, 4])
    assert kendall_tau_b(_table(x, x, 5), values) == pytest.approx(1.0)
    assert kendall_tau_b(_table(x, 4 - x, 5), values) == pytest.approx(-1.0)
    assert np.isnan(kendall_tau_b(_table(x, np.full(6, 2), 5), values))  # constant rater: no untied pair
    assert np.isnan(kendall_tau_b(_table([1], [1], 5), values))  # one item
    assert np.isnan(kendall_tau_b(np.zeros((5, 5)), values))  # no item


def test_rater_vs_human_leaves_unparsed_items_out_like_alpha():
    rng = np.random.default_rng(11)
    x, y = _codes(80, 5, 1, seed=11)
    human = [ORD.labels[i] for i in x]
    rater = [None if rng.random() < 0.2 else ORD.labels[j] for j in y]
    out = rater_vs_human(human, rater, ORD, n_boot=0)
    parsed = [i for i, r in enumerate(rater) if r is not None]
    expected = kendalltau(x[parsed], y[parsed], variant="b").statistic
    assert out["kendall_tau_b"]["value"] == pytest.approx(expected, abs=1e-12)
    assert out["kendall_tau_b"]["n"] == len(parsed) == out["n_items"] - out["n_unparsed"]


def test_interval_labels_use_their_numbers():
    x, y = _codes(50, 4, 1, seed=2)
    human = [INTERVAL.labels[i] for i in x]
    rater = [INTERVAL.labels[j] for j in y]
    numbers = np.array([INTERVAL.value(label) for label in INTERVAL.labels])
    out = rater_vs_human(human, rater, INTERVAL, n_boot=0)
    expected = kendalltau(numbers[x], numbers[y], variant="b").statistic
    assert out["kendall_tau_b"]["value"] == pytest.approx(expected, abs=1e-12)
