"""Exact-match metrics from confusion tables: accuracy and macro-F1.

Tables have shape (..., V, V + 1): rows are the human label, columns the rater label, the last column counts items
whose rater output did not parse. Leading axes (e.g. bootstrap resamples) are kept, so one call scores them all.
"""

from __future__ import annotations

import numpy as np


def accuracy(tables: np.ndarray) -> np.ndarray:
    """Share of items where the rater gave exactly the human label; unparsed output counts as wrong.

    1 = always the human label, 1/V about what uniform guessing would get. nan with no items.
    """
    v = tables.shape[-2]
    correct = np.trace(tables[..., :v], axis1=-2, axis2=-1)
    total = tables.sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, correct / np.where(total > 0, total, 1), np.nan)


def macro_f1(tables: np.ndarray) -> np.ndarray:
    """Unweighted mean over labels of the per-label F1 = 2TP / (2TP + FP + FN).

    The mean runs over the labels that occur (as human label or as rater label) in the items scored, so a rare label
    weighs as much as a common one. Unparsed output is its own wrong prediction: a false negative for the human's
    label and a false positive for no label. 1 = perfect; nan with no items.
    """
    v = tables.shape[-2]
    square = tables[..., :v]
    tp = np.diagonal(square, axis1=-2, axis2=-1)
    row = tables.sum(axis=-1)  # human label totals, unparsed included
    col = square.sum(axis=-2)  # rater label totals
    present = (row + col) > 0
    denom = row + col  # = 2TP + FP + FN
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(present, 2 * tp / np.where(present, denom, 1), 0.0)
        n_present = present.sum(axis=-1)
        return np.where(n_present > 0, f1.sum(axis=-1) / np.maximum(n_present, 1), np.nan)
