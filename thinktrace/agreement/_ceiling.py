"""The human ceiling: how well humans agree with each other, and with the aggregated label of the others.

An LLM rater is scored against the aggregated human label; a single human scored the same way (against the
aggregate of the OTHER annotators, leave-one-out) shows what agreement is reachable at all on this data. The
leave-one-out targets are built by `thinktrace.gold.gold_from_counts`, the function that builds the gold labels, with
the same aggregate and tie rule (`data.tie_break`), so humans and LLM raters are scored against targets built alike.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from thinktrace.agreement._alpha import alpha_from_counts, alpha_from_pairs
from thinktrace.agreement._bootstrap import check_n_boot, estimate, resample_weights
from thinktrace.agreement._encode import domain, encode, is_missing
from thinktrace.gold import DEFAULT_TIE_BREAK, check_tie_break, gold_from_counts, needs_key
from thinktrace.labels import LabelSet

AGGREGATES = ("majority", "mean", "median")
COLUMNS = ("item_id", "annotator_id", "label")


def majority(labels: Sequence[str], label_set: LabelSet, tie_break: str = DEFAULT_TIE_BREAK, key: str = "") -> str:
    """The most frequent label; a tie is broken by `tie_break` as the gold labels are (`thinktrace.gold`): half_even
    takes the median of the tied labels on an ordered scale and, on a nominal one, the tied label picked by a hash
    of `key` (the item id); lower / upper take the tied label earliest / latest in `label_set`.

    Missing labels (None/nan) are ignored. Raises ValueError when no label is left or one is outside the set.
    """
    codes = encode(list(labels), label_set, "labels", allow_missing=True)
    codes = codes[codes >= 0]
    if codes.size == 0:
        raise ValueError("majority of no labels: need at least one label")
    counts = np.bincount(codes, minlength=len(label_set))
    return gold_from_counts(counts, label_set, "majority", tie_break, key).label


def _aggregate_codes(counts: np.ndarray, label_set: LabelSet, aggregate: str, tie_break: str,
                     keys: Sequence[str]) -> np.ndarray:
    """The aggregate label code for each row of value counts (items, C, V) (rows must have >= 1 label); `keys` are
    the item ids. Each distinct row is aggregated once by `gold_from_counts` (the gold rule), per item only where a
    tie can depend on the item id."""
    position = {label: i for i, label in enumerate(label_set.labels)}

    def code(row: np.ndarray, key: str) -> int:
        return position[gold_from_counts(row, label_set, aggregate, tie_break, key).label] if row.sum() else 0

    if not needs_key(label_set, aggregate, tie_break):
        flat = counts.reshape(-1, counts.shape[-1])
        rows, inverse = np.unique(flat, axis=0, return_inverse=True)
        codes = np.array([code(row, "") for row in rows], dtype=np.int64)
        return codes[inverse.reshape(-1)].reshape(counts.shape[:-1])
    out = np.zeros(counts.shape[:-1], dtype=np.int64)
    for index in np.ndindex(*counts.shape[:-1]):
        out[index] = code(counts[index], keys[index[0]])
    return out


def _item_counts(long: pd.DataFrame, label_set: LabelSet) -> tuple[np.ndarray, int, list[str]]:
    """Value counts per item (items x V) from the long table; the number of distinct annotators; the item ids."""
    if not isinstance(long, pd.DataFrame):
        raise ValueError(f"long must be a pandas DataFrame, got {type(long).__name__}")
    missing = [c for c in COLUMNS if c not in long.columns]
    if missing:
        raise ValueError(f"long table lacks column(s) {missing}; needs {list(COLUMNS)}")
    labelled = long[np.array([not is_missing(x) for x in long["label"]], dtype=bool)]
    codes = encode(list(labelled["label"]), label_set, "long.label", allow_missing=False)
    item_codes, item_ids = pd.factorize(labelled["item_id"])
    n_items = int(item_codes.max()) + 1 if len(item_codes) else 0
    v = len(label_set)
    counts = np.bincount(item_codes * v + codes, minlength=n_items * v).reshape(n_items, v)
    return counts, int(labelled["annotator_id"].nunique()), [str(x) for x in item_ids]


def _loo_pair_rows(counts: np.ndarray, label_set: LabelSet, aggregate: str, tie_break: str,
                   keys: Sequence[str]) -> np.ndarray:
    """Per item, counts of (annotator label c, aggregate of the other annotators g) pairs, flattened to (items, V*V).

    An annotator's label c on an item leaves others = counts - e_c; each of the counts[c] annotators who gave c
    forms the same pair (c, aggregate(others)). Only items with >= 2 labels are passed in, so others is never empty.
    """
    n, v = counts.shape
    # (items, c, V); rows for a label c nobody gave on the item are clipped and never used.
    others = np.maximum(counts[:, None, :] - np.eye(v, dtype=counts.dtype)[None, :, :], 0)
    others[counts == 0] = 0  # a label c nobody gave: no pair, nothing to aggregate
    agg = _aggregate_codes(others, label_set, aggregate, tie_break, keys)  # (items, c)
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
    tie_break: str = DEFAULT_TIE_BREAK,
) -> dict | None:
    """Human agreement on a long table (one row per human label: item_id, annotator_id, label) as a JSON-safe dict.

    Returns None when no item has two or more labels (agreement is then undefined). Otherwise:
      inter_annotator_alpha: Krippendorff's α among all annotators (the coders x items matrix). 1 perfect, 0 chance.
      loo_alpha: leave-one-annotator-out α. For each annotator and each item they labelled that has at least one
        other label, the annotator's label is paired with the aggregate of the OTHER annotators' labels
        (`aggregate`: "majority" = most frequent; "mean"/"median" = the label nearest the mean/median value,
        ordinal/interval only; ties broken by `tie_break` exactly as the gold labels are, `thinktrace.gold`: the
        target is what the gold label would be without this annotator). α of all these pairs pooled as two coders at
        label_set.level: how well one human agrees with the aggregated label, i.e. what a rater compared to the
        aggregated label can be expected to reach -- the human ceiling.
      n_annotators, n_items (items with a label), labels_per_item_mean, n_loo_pairs, aggregate, tie_break.
    Each α is an `Estimate` dict whose n is the number of items with >= 2 labels; CIs resample those items (each
    with all its labels) `n_boot` times with seed `seed`. Each row counts as one label; missing labels are dropped.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {list(AGGREGATES)}, got {aggregate!r}")
    if aggregate != "majority" and label_set.level == "nominal":
        raise ValueError(f"aggregate {aggregate!r} needs an ordinal or interval label_set (nominal labels have no mean)")
    check_tie_break(tie_break)
    n_boot = check_n_boot(n_boot)
    counts, n_annotators, item_ids = _item_counts(long, label_set)
    n_items = counts.shape[0]
    if n_items == 0:
        return None
    enough = counts.sum(axis=1) >= 2
    usable = counts[enough]
    if usable.shape[0] == 0:
        return None
    values, level = domain(label_set), label_set.level
    v = len(label_set)
    loo_rows = _loo_pair_rows(usable, label_set, aggregate, tie_break, [k for k, ok in zip(item_ids, enough) if ok])

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
        "tie_break": tie_break,
    }
