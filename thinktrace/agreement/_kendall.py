"""Kendall's τ-b between the human and the rater values, from the confusion table (exact under bootstrap weights).

τ-b = (n_c - n_d) / sqrt((n0 - n1) (n0 - n2)) over all pairs of items (Kendall 1945; scipy's kendalltau variant
'b'): n_c / n_d concordant / discordant pairs, n0 = N (N - 1) / 2 pairs, n1 / n2 pairs tied on the human / rater
side. A tie on both sides counts in n1 and n2 and in neither n_c nor n_d.

Weights. A bootstrap resample repeats item i w_i times. A pair of distinct items (i, j) then appears w_i w_j times,
all with the sign s_ij = sign(x_i - x_j) sign(y_i - y_j); the w_i (w_i - 1) / 2 pairs of copies of item i are tied
on both sides (s = 0). So n_c - n_d = sum_{i<j} w_i w_j s_ij = 1/2 w' S w, and n1 = sum over human values g of
t_g (t_g - 1) / 2 with t_g the weighted count of items with value g (n2 alike). Items with the same (human, rater)
cell have s = 0 with each other and the same s with any other item, so grouping items by cell turns these sums
into sums over the cells of the weighted confusion table T = sum_i w_i e_{cell(i)}:
    n_c - n_d = 1/2 sum_{a,b,c,d} T[a,b] T[c,d] sx[a,c] sy[b,d] = 1/2 <T, Sx T Sy'>,   sx[a,c] = sign(v_a - v_c),
which is exact (ties included), O(V^3) per resample instead of O(n^2), and scores all resamples at once.
"""

from __future__ import annotations

import numpy as np


def _tied_pairs(counts: np.ndarray, same: np.ndarray) -> np.ndarray:
    """Pairs of items tied in value, from value counts (..., V); same[a, c]: labels a and c have the same value."""
    n = counts.sum(axis=-1)
    return (np.einsum("...a,ac,...c->...", counts, same, counts) - n) / 2.0


def kendall_tau_b(pairs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """τ-b of (weighted) confusion tables (..., V, V): rows human label, columns rater label, in label_set order.

    values: the scale value of each label (rank for ordinal, the number for interval); only their order matters.
    Leading axes (bootstrap resamples) are kept. 1 = the rater orders every pair of items as the humans do, 0 = no
    association, -1 = reversed. nan when fewer than two items or either side is constant (no untied pair).
    """
    pairs = np.asarray(pairs, dtype=float)
    values = np.asarray(values, dtype=float)
    sign = np.sign(values[:, None] - values[None, :])
    same = (sign == 0).astype(float)
    field = sign @ pairs @ sign.T  # field[a, b] = sum_{c,d} T[c, d] sign(v_a - v_c) sign(v_b - v_d)
    s = (pairs * field).sum(axis=(-2, -1)) / 2.0
    n = pairs.sum(axis=(-2, -1))
    n0 = n * (n - 1) / 2.0
    n1 = _tied_pairs(pairs.sum(axis=-1), same)
    n2 = _tied_pairs(pairs.sum(axis=-2), same)
    untied_x, untied_y = n0 - n1, n0 - n2
    ok = (untied_x > 0) & (untied_y > 0)  # exact: pair counts of integer weights are integers in float
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = np.where(ok, s / np.sqrt(np.where(ok, untied_x * untied_y, 1.0)), np.nan)
    return np.clip(tau, -1.0, 1.0)
