"""ICC(3,1): two-way mixed, consistency, single rater (Shrout & Fleiss 1979), from weighted sums of squares.

Items are the targets, raters (or human and rater) the k judges. From the two-way ANOVA without replication:
    ICC(3,1) = (BMS - EMS) / (BMS + (k - 1) EMS)
BMS = between-targets mean square, EMS = residual mean square (judges' mean differences are removed, so a rater
that is consistently one step above the humans still has ICC 1). 1 = perfect consistency, 0 = none, negative =
less than none (bounded below by -1 / (k - 1)).

Every sum of squares is a function of per-item moments that add up over items, so a bootstrap resample with item
weights w (item i repeated w_i times) is scored exactly from ``w @ rows`` with rows = (1, x_i1..x_ik,
sum_j x_ij^2, (sum_j x_ij)^2) per item: with N = sum w, T_j the weighted column totals, G = sum_j T_j,
    SS_total = sum w x^2 - G^2 / (N k),   SS_targets = sum w (row sum)^2 / k - G^2 / (N k),
    SS_judges = sum_j T_j^2 / N - G^2 / (N k),   SS_error = SS_total - SS_targets - SS_judges,
    BMS = SS_targets / (N - 1),   EMS = SS_error / ((N - 1)(k - 1)).
ICC is invariant to adding one constant to all values; values are shifted toward 0 first to keep the sums exact.
"""

from __future__ import annotations

import numpy as np


def icc3_1(totals: np.ndarray) -> np.ndarray:
    """ICC(3,1) from moment totals (..., k + 3) as made by `icc_moment_rows` (summed, or weighted, over items).

    nan when undefined: fewer than two items, fewer than two judges, or no variance left after removing the judges'
    means (BMS + (k - 1) EMS = 0, e.g. every item gets the same value).
    """
    totals = np.asarray(totals, dtype=float)
    k = totals.shape[-1] - 3
    if k < 2:
        return np.full(totals.shape[:-1], np.nan)
    n, cols, sq, row_sq = totals[..., 0], totals[..., 1:k + 1], totals[..., k + 1], totals[..., k + 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        safe_n = np.where(n > 0, n, 1.0)
        correction = cols.sum(axis=-1) ** 2 / (safe_n * k)
        ss_total = sq - correction
        ss_targets = row_sq / k - correction
        ss_judges = (cols**2).sum(axis=-1) / safe_n - correction
        ss_error = np.maximum(ss_total - ss_targets - ss_judges, 0.0)  # a sum of squares; < 0 only by rounding
        df = np.where(n > 1, n - 1, 1.0)
        bms, ems = ss_targets / df, ss_error / (df * (k - 1))
        denom = bms + (k - 1) * ems
        scale = np.maximum(ss_total, 0.0) / df
        ok = (n >= 2) & (denom > 1e-12 * np.maximum(scale, 1e-300))
        return np.where(ok, (bms - ems) / np.where(ok, denom, 1.0), np.nan)


def icc_moment_rows(matrix: np.ndarray, shift: float | None = None) -> np.ndarray:
    """Per-item moments (n_items, k + 3) of an items x judges value matrix (np.nan = missing).

    An item with a missing value is excluded: its row is all zeros (a complete two-way design is needed; this is
    listwise deletion, as pingouin's intraclass_corr with nan_policy="omit"). Rows stay aligned with the items, so a
    bootstrap over the items shares its resamples with the other statistics drawn on the same items. shift: the
    constant subtracted from all values (default: the mean of the complete items' values).
    """
    x = np.asarray(matrix, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"matrix must be 2-D (items x judges), got shape {x.shape}")
    complete = ~np.isnan(x).any(axis=1)
    if shift is None:
        shift = float(x[complete].mean()) if complete.any() else 0.0
    x = np.where(complete[:, None], x - shift, 0.0)
    return np.column_stack([complete.astype(float), x, (x**2).sum(axis=1), x.sum(axis=1) ** 2])


def icc_from_pairs(pairs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """ICC(3,1) of two judges (human, rater) from (weighted) confusion tables (..., V, V), leading axes kept.

    pairs[a, b]: items where the human gave label a and the rater label b; values: the scale value of each label
    (rank for ordinal, the number for interval). Equivalent to `icc3_1` on the items x 2 matrix the table counts.
    """
    pairs = np.asarray(pairs, dtype=float)
    v = np.asarray(values, dtype=float)
    v = v - v.mean()
    human, rater = pairs.sum(axis=-1), pairs.sum(axis=-2)
    row_sum_sq = (v[:, None] + v[None, :]) ** 2
    totals = np.stack(
        [
            pairs.sum(axis=(-2, -1)),
            human @ v,
            rater @ v,
            human @ v**2 + rater @ v**2,
            (pairs * row_sum_sq).sum(axis=(-2, -1)),
        ],
        axis=-1,
    )
    return icc3_1(totals)
