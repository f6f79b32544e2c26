"""Estimate and the bootstrap machinery: JSON safety, determinism, percentile bounds."""

import json
import math

import numpy as np
import pytest

from thinktrace.agreement import Estimate
from thinktrace.agreement._bootstrap import check_n_boot, estimate, percentile_ci, resample_weights, resampled_totals


def test_as_dict_is_json_safe():
    d = Estimate(value=float("nan"), low=np.float64(0.1), high=float("inf"), n=np.int64(3)).as_dict()
    assert d == {"value": None, "ci": [0.1, None], "n": 3, "n_boot": 0, "n_valid": 0, "ci_undefined": False}
    json.dumps(d)
    assert type(d["ci"][0]) is float and type(d["n"]) is int


def test_resample_weights_are_deterministic_draws_with_replacement():
    a = np.concatenate(list(resample_weights(50, 300, seed=7)))
    b = np.concatenate(list(resample_weights(50, 300, seed=7)))
    c = np.concatenate(list(resample_weights(50, 300, seed=8)))
    assert a.shape == (300, 50)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert (a.sum(axis=1) == 50).all()
    assert (a > 1).any()  # with replacement


def test_no_bootstrap_gives_nan_bounds():
    assert list(resample_weights(10, 0, 0)) == []
    (totals,) = resampled_totals([np.ones((10, 2))], 0, 0)
    assert totals.shape == (0, 2)
    est = estimate(0.5, np.array([]), 10)
    assert est.value == 0.5 and math.isnan(est.low) and math.isnan(est.high)


def test_percentile_ci_ignores_undefined_resamples():
    boot = np.concatenate([np.linspace(0, 1, 1001), [np.nan] * 50])
    low, high = percentile_ci(boot)
    assert low == pytest.approx(0.025) and high == pytest.approx(0.975)
    assert all(math.isnan(x) for x in percentile_ci(np.array([np.nan])))


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_invalid_n_boot_raises(bad):
    with pytest.raises(ValueError, match="n_boot"):
        check_n_boot(bad)
