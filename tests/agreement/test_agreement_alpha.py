"""Krippendorff's α wrapper: published golden values, undefined cases, and the value-count path."""

import math

import numpy as np
import pytest

from thinktrace.agreement import alpha
from thinktrace.agreement._alpha import alpha_from_counts, alpha_from_pairs, compact_units

NAN = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x 12 units, missing data.
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
        [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
    ]
)


@pytest.mark.parametrize("level, expected", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_golden_krippendorff_2011(level, expected):
    assert round(alpha(KRIPPENDORFF_2011, level), 3) == expected


def test_perfect_agreement_is_one():
    data = np.array([[1, 2, 3, 1, 2], [1, 2, 3, 1, 2], [1, 2, NAN, 1, 2]], dtype=float)
    for level in ("nominal", "ordinal", "interval"):
        assert alpha(data, level) == pytest.approx(1.0)


def test_systematic_disagreement_is_negative():
    data = np.array([[1, 2, 1, 2, 1, 2], [2, 1, 2, 1, 2, 1]], dtype=float)
    assert alpha(data, "nominal") < 0


@pytest.mark.parametrize(
    "data",
    [
        np.array([[1, 2, 3]], dtype=float),  # one coder: nothing pairable
        np.array([[1, NAN, 3], [NAN, 2, NAN]]),  # no unit with two values
        np.array([[2, 2, 2], [2, 2, NAN]], dtype=float),  # no variation
        np.full((2, 3), NAN),
    ],
)
def test_undefined_alpha_is_nan_not_an_error(data):
    assert math.isnan(alpha(data, "nominal"))


def test_invalid_level_and_shape_raise():
    with pytest.raises(ValueError, match="level must be one of"):
        alpha(KRIPPENDORFF_2011, "categorical")
    with pytest.raises(ValueError, match="2-D"):
        alpha(np.array([1.0, 2.0]), "nominal")


def _value_counts(matrix, domain):
    return np.stack([(matrix == v).sum(axis=0) for v in domain], axis=1)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_value_count_path_with_compaction_equals_direct_alpha(level):
    rng = np.random.default_rng(3)
    domain = np.array([-1.0, 0.0, 2.5, 4.0])
    for _ in range(10):
        truth = rng.integers(0, 4, 40)
        data = np.where(rng.random((5, 40)) < 0.7, truth, rng.integers(0, 4, (5, 40))).astype(float)
        data[rng.random((5, 40)) < 0.3] = NAN
        data = np.where(np.isnan(data), NAN, domain[np.nan_to_num(data).astype(int)])
        direct = alpha(data, level)
        via_counts = alpha_from_counts(_value_counts(data, domain), domain, level)
        assert via_counts == pytest.approx(direct, abs=1e-12)


def test_compaction_merges_unanimous_units_and_repeats_mixed_ones():
    rows = np.array([[2, 0, 0], [3, 0, 0], [1, 1, 0], [0, 0, 1]])
    units = compact_units(rows, np.array([2, 1, 3, 5]))
    assert sorted(map(tuple, units.tolist())) == sorted([(7, 0, 0), (1, 1, 0), (1, 1, 0), (1, 1, 0)])


def test_pairs_equal_two_coder_matrix():
    domain = np.array([0.0, 1.0, 2.0])
    pairs = np.array([[3, 1, 0], [0, 2, 1], [1, 0, 4]])
    c1, c2 = [], []
    for i in range(3):
        for j in range(3):
            c1 += [i] * pairs[i, j]
            c2 += [j] * pairs[i, j]
    for level in ("nominal", "ordinal", "interval"):
        assert alpha_from_pairs(pairs, domain, level) == pytest.approx(alpha(np.array([c1, c2], float), level))
