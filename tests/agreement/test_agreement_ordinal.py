"""MAE and Spearman from tables of parsed (human, rater) pairs."""

import numpy as np
import pandas as pd
import pytest

from thinktrace.agreement._ordinal import mae, spearman


def _pairs(h, r, v):
    t = np.zeros((v, v))
    np.add.at(t, (h, r), 1)
    return t


def test_mae_on_scale_values():
    values = np.array([1.0, 2.0, 5.0])
    t = _pairs([0, 1, 2, 0], [0, 2, 0, 1], 3)
    assert mae(t, values) == pytest.approx((0 + 3 + 4 + 1) / 4)
    assert np.isnan(mae(np.zeros((3, 3)), values))


@pytest.mark.parametrize("values", [np.arange(5.0), np.array([3.0, -1.0, 10.0, 0.5, 2.0])])
def test_spearman_matches_pandas_with_ties(values):
    rng = np.random.default_rng(1)
    tables, expected = [], []
    for _ in range(15):
        h = rng.integers(0, 5, 40)
        r = np.where(rng.random(40) < 0.6, h, rng.integers(0, 5, 40))
        tables.append(_pairs(h, r, 5))
        # Spearman = Pearson of average ranks (what scipy.stats.spearmanr computes; scipy is not installed)
        ranks_h = pd.Series(values[h]).rank(method="average")
        ranks_r = pd.Series(values[r]).rank(method="average")
        expected.append(ranks_h.corr(ranks_r))
    assert np.allclose(spearman(np.stack(tables), values), expected)


def test_spearman_undefined_when_constant():
    values = np.arange(3.0)
    assert np.isnan(spearman(_pairs([0, 1, 2], [1, 1, 1], 3), values))
    assert spearman(_pairs([0, 1, 2], [2, 1, 0], 3), values) == pytest.approx(-1.0)
