"""Distance and rank metrics for ordinal and interval scales: MAE and Spearman's ρ.

Both use parsed items only. Input is the parsed part of the confusion table, shape (..., V, V) (rows: human label,
columns: rater label, in label_set order), and the scale value of each label (rank for ordinal, the number for
interval). Leading axes (bootstrap resamples) are kept.
"""

from __future__ import annotations

import numpy as np


def mae(pairs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mean absolute difference between rater and human values, in scale units (ranks for ordinal).

    0 = always the human value; 1 = off by one step (ordinal) or one unit (interval) on average. nan with no
    parsed items.
    """
    dist = np.abs(values[:, None] - values[None, :])
    total = pairs.sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, (pairs * dist).sum(axis=(-2, -1)) / np.where(total > 0, total, 1), np.nan)


def _mid_ranks(counts: np.ndarray) -> np.ndarray:
    """Average (1-based) rank of each value given value counts in scale order: ties share the mean rank."""
    return np.cumsum(counts, axis=-1) - counts + (counts + 1) / 2.0


def spearman(pairs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Spearman's ρ: Pearson correlation of the average ranks (ties get their mean rank), as scipy's spearmanr.

    1 = the rater orders items exactly as humans do, 0 = no monotone relation, -1 = reversed order. nan when fewer
    than two parsed items or either side is constant. Computed from the table so that all bootstrap resamples are
    scored at once. scipy is not a dependency (pandas' own spearman needs it), so the ranks are computed here from the
    value counts; the result equals Pearson's r of ``Series.rank(method="average")`` on both sides.
    """
    order = np.argsort(values, kind="stable")
    pairs = pairs[..., order, :][..., :, order]
    a = pairs.sum(axis=-1)  # human value counts
    b = pairs.sum(axis=-2)  # rater value counts
    n = a.sum(axis=-1)
    ra, rb = _mid_ranks(a), _mid_ranks(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        safe_n = np.where(n > 0, n, 1)
        da = ra - ((a * ra).sum(axis=-1) / safe_n)[..., None]
        db = rb - ((b * rb).sum(axis=-1) / safe_n)[..., None]
        cov = np.einsum("...ij,...i,...j->...", pairs, da, db)
        var_a = (a * da**2).sum(axis=-1)
        var_b = (b * db**2).sum(axis=-1)
        ok = (n >= 2) & (var_a > 0) & (var_b > 0)
        rho = np.where(ok, cov / np.sqrt(np.where(ok, var_a * var_b, 1)), np.nan)
    return np.clip(rho, -1.0, 1.0)
