"""ICC(3,1) against Shrout & Fleiss (1979) Table 2 and pingouin.intraclass_corr (ICC3) as the oracle."""

import numpy as np
import pandas as pd
import pingouin
import pytest

from thinktrace.agreement import icc3_1, icc_moment_rows, inter_rater_icc, rater_vs_human
from thinktrace.agreement._icc import icc_from_pairs
from thinktrace.labels import LabelSet

# Shrout & Fleiss (1979), Table 2: 6 targets (rows) x 4 judges (columns). Their Table 4 gives ICC(3,1) = .71.
SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], dtype=float
)
ORD = LabelSet.of([1, 2, 3, 4, 5], "ordinal")
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.dropna")  # inside pingouin


def _icc(matrix):
    return float(icc3_1(icc_moment_rows(matrix).sum(axis=0)))


def _pingouin_icc3(matrix):
    n, k = matrix.shape
    long = pd.DataFrame({"target": np.repeat(np.arange(n), k), "judge": np.tile(np.arange(k), n),
                         "score": matrix.ravel()})
    table = pingouin.intraclass_corr(long, targets="target", raters="judge", ratings="score", nan_policy="omit")
    return float(table.loc[table["Type"].isin(["ICC3", "ICC(C,1)"]), "ICC"].iloc[0])  # renamed in pingouin 0.7


def test_shrout_fleiss_table_2():
    # Sums of squares of their Table 2 example: BMS = 11.24, EMS = 1.02 -> (11.24 - 1.02) / (11.24 + 3 * 1.02).
    assert _icc(SHROUT_FLEISS) == pytest.approx(0.7148, abs=5e-5)
    assert round(_icc(SHROUT_FLEISS), 2) == 0.71
    assert _icc(SHROUT_FLEISS) == pytest.approx(_pingouin_icc3(SHROUT_FLEISS), abs=1e-12)


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("seed", range(3))
def test_matches_pingouin_icc3(k, seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, 6, 40)
    matrix = np.clip(truth[:, None] + rng.integers(-1, 2, (40, k)) + np.arange(k)[None, :] % 2, 1, 6).astype(float)
    assert _icc(matrix) == pytest.approx(_pingouin_icc3(matrix), abs=1e-12)


def test_items_with_a_missing_value_are_left_out_as_pingouin_omits_them():
    matrix = SHROUT_FLEISS.copy()
    matrix[1, 2] = np.nan
    complete = np.delete(SHROUT_FLEISS, 1, axis=0)
    assert _icc(matrix) == pytest.approx(_icc(complete), abs=1e-12)
    assert _icc(matrix) == pytest.approx(_pingouin_icc3(matrix), abs=1e-12)
    assert icc_moment_rows(matrix)[1].tolist() == [0.0] * 7


def test_weighted_totals_are_the_icc_of_the_expanded_resample():
    rng = np.random.default_rng(4)
    rows = icc_moment_rows(SHROUT_FLEISS)
    for _ in range(5):
        w = np.bincount(rng.integers(0, 6, 6), minlength=6)
        expanded = np.repeat(SHROUT_FLEISS, w, axis=0)
        expected = _pingouin_icc3(expanded) if np.unique(expanded, axis=0).shape[0] > 1 else np.nan
        assert icc3_1(w @ rows) == pytest.approx(expected, abs=1e-12, nan_ok=True)


def test_two_judge_table_equals_the_matrix_form_and_shift_invariance():
    rng = np.random.default_rng(9)
    x = rng.integers(0, 5, 50)
    y = np.clip(x + rng.integers(-1, 2, 50), 0, 4)
    table = np.zeros((5, 5))
    np.add.at(table, (x, y), 1.0)
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    expected = _pingouin_icc3(np.column_stack([values[x], values[y]]))
    assert icc_from_pairs(table, values) == pytest.approx(expected, abs=1e-12)
    assert icc_from_pairs(table, values + 1e6) == pytest.approx(expected, abs=1e-9)  # large interval values


def test_consistency_ignores_a_constant_offset_and_undefined_cases():
    x = np.array([1.0, 2.0, 3.0, 4.0, 2.0])
    assert _icc(np.column_stack([x, x + 1])) == pytest.approx(1.0)  # consistency, not absolute agreement
    assert np.isnan(_icc(np.column_stack([np.full(5, 3.0), np.full(5, 3.0)])))  # no variance at all
    assert np.isnan(_icc(np.column_stack([np.full(5, 3.0), np.full(5, 4.0)])))  # only the judges differ
    assert np.isnan(_icc(SHROUT_FLEISS[:1]))  # one target
    assert np.isnan(_icc(SHROUT_FLEISS[:, :1]))  # one judge


def test_rater_vs_human_icc_on_parsed_items():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, 70)
    y = np.clip(x + rng.integers(-2, 2, 70), 0, 4)
    human = [ORD.labels[i] for i in x]
    rater = [None if i % 7 == 0 else ORD.labels[j] for i, j in enumerate(y)]
    out = rater_vs_human(human, rater, ORD, n_boot=0)
    parsed = np.array([r is not None for r in rater])
    expected = _pingouin_icc3(np.column_stack([x[parsed], y[parsed]]).astype(float))  # ordinal: ranks
    assert out["icc"]["value"] == pytest.approx(expected, abs=1e-12)
    assert out["icc"]["n"] == int(parsed.sum())


def test_inter_rater_icc_matches_pingouin_and_reports_incomplete_items():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 5, 30)
    codes = np.clip(truth[:, None] + rng.integers(-1, 2, (30, 3)), 0, 4)
    ratings = {f"m{j}": [ORD.labels[c] for c in codes[:, j]] for j in range(3)}
    ratings["m1"][4] = None
    ratings["m2"][9] = None
    out = inter_rater_icc(ratings, ORD, n_boot=0)
    matrix = codes.astype(float)
    matrix[4, 1] = matrix[9, 2] = np.nan
    assert out["value"] == pytest.approx(_pingouin_icc3(matrix), abs=1e-12)
    assert out["n"] == 28 and out["n_incomplete"] == 2 and out["raters"] == ["m0", "m1", "m2"]
