"""The human ceiling: how well humans agree with each other, and with the aggregated label of the others.

An LLM rater is scored against the aggregated human label; a single human scored the same way (against the
aggregate of the OTHER annotators, leave-one-out) shows what agreement is reachable at all on this data.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from thinktrace.agreement._alpha import alpha_from_counts, alpha_from_pairs
from thinktrace.agreement._bootstrap import check_n_boot, estimate, resample_weights
from thinktrace.agreement._encode import domain, encode, is_missing
from thinktrace.labels import LabelSet

AGGREGATES = ("majority", "mean", "median")
COLUMNS = ("item_id", "annotator_id", "label")


def majority(labels: Sequence[str], label_set: LabelSet) -> str:
    """The most frequent label; a tie goes to the tied label that comes first in `label_set`.

    Missing labels (None/nan) are ignored. Raises ValueError when no label is left or one is outside the set.
    """
    codes = encode(list(labels), label_set, "labels", allow_missing=True)
    codes = codes[codes >= 0]
    if codes.size == 0:
        raise ValueError("majority of no labels: need at least one label")
    return label_set.labels[int(np.argmax(np.bincount(codes, minlength=len(label_set))))]


def _aggregate_codes(counts: np.ndarray, label_set: LabelSet, aggregate: str) -> np.ndarray:
    """The aggregate label code for each row of value counts (..., V) (rows must have >= 1 label).

    majority: most frequent, ties -> earliest in label_set (argmax returns the first maximum).
    mean / median: ``label_set.nearest`` of the mean / median of the label values.
    """
    if aggregate == "majority":
        return np.argmax(counts, axis=-1)
    values = domain(label_set)
    total = counts.sum(axis=-1)
    if aggregate == "mean":
        center = (counts * values).sum(axis=-1) / np.maximum(total, 1)
    else:  # median over the multiset of values, numpy's convention (mean of the two middle values when even)
        order = np.argsort(values, kind="stable")
        sorted_values = values[order]
        cum = np.cumsum(counts[..., order], axis=-1)
        lo_pos = (total - 1) // 2
        hi_pos = total // 2
        lo = sorted_values[np.argmax(cum > lo_pos[..., None], axis=-1)]
        hi = sorted_values[np.argmax(cum > hi_pos[..., None], axis=-1)]
        center = (lo + hi) / 2.0
    position = {label: i for i, label in enumerate(label_set.labels)}
    uniq, inverse = np.unique(center, return_inverse=True)
    mapped = np.array([position[label_set.nearest(float(x))] for x in uniq], dtype=np.int64)
    return mapped[inverse].reshape(center.shape)


def _item_counts(long: pd.DataFrame, label_set: LabelSet) -> tuple[np.ndarray, int]:
    """Value counts per item (items x V) from the long table; the number of distinct annotators."""
    if not isinstance(long, pd.DataFrame):
        raise ValueError(f"long must be a pandas DataFrame, got {type(long).__name__}")
    missing = [c for c in COLUMNS if c not in long.columns]
    if missing:
        raise ValueError(f"long table lacks column(s) {missing}; needs {list(COLUMNS)}")
    labelled = long[np.array([not is_missing(x) for x in long["label"]], dtype=bool)]
    codes = encode(list(labelled["label"]), label_set, "long.label", allow_missing=False)
    item_codes, _ = pd.factorize(labelled["item_id"])
    n_items = int(item_codes.max()) + 1 if len(item_codes) else 0
    v = len(label_set)
    counts = np.bincount(item_codes * v + codes, minlength=n_items * v).reshape(n_items, v)
    return counts, int(labelled["annotator_id"].nunique())


def _loo_pair_rows(counts: np.ndarray, label_set: LabelSet, aggregate: str) -> np.ndarray:
    """Per item, counts of (annotator label c, aggregate of the other annotators g) pairs, flattened to (items, V*V).

    An annotator's label c on an item leaves others = counts - e_c; each of the counts[c] annotators who gave c
    forms the same pair (c, aggregate(others)). Only items with >= 2 labels are passed in, so others is never empty.
    """
    n, v = counts.shape
    # (items, c, V); rows for a label c nobody gave on the item are clipped and never used.
    others = np.maximum(counts[:, None, :] - np.eye(v, dtype=counts.dtype)[None, :, :], 0)
    agg = _aggregate_codes(others, label_set, aggregate)  # (items, c)
    rows = np.zeros((n, v, v))
    item_idx, c_idx = np.nonzero(counts > 0)
    rows[item_idx, c_idx, agg[item_idx, c_idx]] = counts[item_idx, c_idx]
    return rows.reshape(n, v * v)


def human_ceiling(
    long: pd.DataFrame,
    label_set: LabelSet,
    n_boot: int = 1000,
    seed: int = 0,
    aggregate: str = "majority",
) -> dict | None:
    """Human agreement on a long table (one row per human label: item_id, annotator_id, label) as a JSON-safe dict.

    Returns None when no item has two or more labels (agreement is then undefined). Otherwise:
      inter_annotator_alpha: Krippendorff's α among all annotators (the coders x items matrix). 1 perfect, 0 chance.
      loo_alpha: leave-one-annotator-out α. For each annotator and each item they labelled that has at least one
        other label, the annotator's label is paired with the aggregate of the OTHER annotators' labels
        (`aggregate`: "majority" = most frequent, ties -> earliest in label_set; "mean"/"median" = label_set.nearest
        of the mean/median value, ordinal/interval only). α of all these pairs pooled as two coders at
        label_set.level: how well one human agrees with the aggregated label, i.e. what a rater compared to the
        aggregated label can be expected to reach -- the human ceiling.
      n_annotators, n_items (items with a label), labels_per_item_mean, n_loo_pairs.
    Each α is an `Estimate` dict whose n is the number of items with >= 2 labels; CIs resample those items (each
    with all its labels) `n_boot` times with seed `seed`. Each row counts as one label; missing labels are dropped.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {list(AGGREGATES)}, got {aggregate!r}")
    if aggregate != "majority" and label_set.level == "nominal":
        raise ValueError(f"aggregate {aggregate!r} needs an ordinal or interval label_set (nominal labels have no mean)")
    n_boot = check_n_boot(n_boot)
    counts, n_annotators = _item_counts(long, label_set)
    n_items = counts.shape[0]
    if n_items == 0:
        return None
    usable = counts[counts.sum(axis=1) >= 2]
    if usable.shape[0] == 0:
        return None
    values, level = domain(label_set), label_set.level
    v = len(label_set)
    loo_rows = _loo_pair_rows(usable, label_set, aggregate)

    # Items with the same value counts are interchangeable: keep each distinct row once with its multiplicity.
    unit_types, type_of_item = np.unique(usable, axis=0, return_inverse=True)
    item_type = np.zeros((usable.shape[0], unit_types.shape[0]))
    item_type[np.arange(usable.shape[0]), type_of_item.reshape(-1)] = 1.0

    point_iaa = alpha_from_counts(unit_types, values, level, item_type.sum(axis=0))
    point_loo = alpha_from_pairs(loo_rows.sum(axis=0).reshape(v, v), values, level)
    boot_iaa, boot_loo = [], []
    for w in resample_weights(usable.shape[0], n_boot, seed):
        type_totals, pair_totals = w @ item_type, w @ loo_rows
        for k in range(w.shape[0]):
            boot_iaa.append(alpha_from_counts(unit_types, values, level, type_totals[k]))
            boot_loo.append(alpha_from_pairs(pair_totals[k].reshape(v, v), values, level))
    n_used = usable.shape[0]
    return {
        "inter_annotator_alpha": estimate(point_iaa, np.array(boot_iaa), n_used).as_dict(),
        "loo_alpha": estimate(point_loo, np.array(boot_loo), n_used).as_dict(),
        "n_annotators": n_annotators,
        "n_items": int(n_items),
        "labels_per_item_mean": float(counts.sum() / n_items),
        "n_loo_pairs": int(round(loo_rows.sum())),
        "aggregate": aggregate,
    }
