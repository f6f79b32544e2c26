"""One LLM rater against the aggregated human label: α, exact-match and scale metrics, with bootstrap CIs."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from thinktrace.agreement._alpha import alpha_from_pairs
from thinktrace.agreement._bootstrap import check_n_boot, estimate, resampled_totals
from thinktrace.agreement._classification import accuracy, macro_f1
from thinktrace.agreement._encode import MISSING, domain, encode
from thinktrace.agreement._estimate import json_float
from thinktrace.agreement._icc import icc_from_pairs
from thinktrace.agreement._kendall import kendall_tau_b
from thinktrace.agreement._ordinal import mae, spearman
from thinktrace.labels import LabelSet

METRICS = ("alpha", "accuracy", "macro_f1", "mae", "kendall_tau_b", "icc")
# Defined on ordinal/interval labels only; nan (JSON null, "n/a") on nominal ones, never a number.
SCALE_ONLY = ("kendall_tau_b", "icc")
HIGHER_IS_BETTER = {"alpha": True, "accuracy": True, "macro_f1": True, "mae": False, "spearman": True,
                    "kendall_tau_b": True, "icc": True}


def encode_pair(
    human: Sequence[str], rater: Sequence[str | None], label_set: LabelSet, rater_name: str = "rater"
) -> tuple[np.ndarray, np.ndarray]:
    """Codes of human (no missing allowed) and rater labels (None = unparsed -> MISSING); checks lengths."""
    if len(human) != len(rater):
        raise ValueError(f"human has {len(human)} labels but {rater_name} has {len(rater)}; they must be the same items")
    if len(human) == 0:
        raise ValueError("no items: human and rater labels are empty")
    return encode(human, label_set, "human", allow_missing=False), encode(rater, label_set, rater_name, True)


def confusion_rows(h: np.ndarray, r: np.ndarray, n_values: int) -> np.ndarray:
    """Per-item one-hot confusion cells, shape (n_items, V * (V + 1)); the last rater column = unparsed."""
    r = np.where(r == MISSING, n_values, r)
    cells = h * (n_values + 1) + r
    rows = np.zeros((len(h), n_values * (n_values + 1)))
    rows[np.arange(len(h)), cells] = 1.0
    return rows


def table_metric(tables: np.ndarray, metric: str, label_set: LabelSet) -> np.ndarray:
    """A metric for each confusion table in `tables` (..., V, V + 1); τ-b and ICC are nan on nominal labels."""
    v = len(label_set)
    values = domain(label_set)
    if metric in SCALE_ONLY and label_set.level == "nominal":
        return np.full(tables.shape[:-2], np.nan)
    if metric == "accuracy":
        return accuracy(tables)
    if metric == "macro_f1":
        return macro_f1(tables)
    if metric == "mae":
        return mae(tables[..., :v], values)
    if metric == "spearman":
        return spearman(tables[..., :v], values)
    if metric == "kendall_tau_b":
        return kendall_tau_b(tables[..., :v], values)
    if metric == "icc":
        return icc_from_pairs(tables[..., :v], values)
    if metric == "alpha":
        flat = tables.reshape(-1, v, v + 1)
        out = np.array([alpha_from_pairs(t[:, :v], values, label_set.level) for t in flat])
        return out.reshape(tables.shape[:-2])
    raise ValueError(f"unknown metric {metric!r}; choose one of {list(METRICS) + ['spearman']}")


def metrics_for(label_set: LabelSet) -> tuple[str, ...]:
    """The metrics reported for a level: nominal -> accuracy, macro-F1; ordinal/interval -> MAE, Spearman, accuracy.

    Kendall's τ-b and ICC(3,1) are reported on every level; on nominal labels their value is None (n/a).
    """
    if label_set.level == "nominal":
        return ("alpha", "accuracy", "macro_f1", *SCALE_ONLY)
    return ("alpha", "mae", "spearman", "accuracy", *SCALE_ONLY)


def rater_vs_human(
    human: Sequence[str],
    rater: Sequence[str | None],
    label_set: LabelSet,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Agreement of one rater with the aggregated human label, item by item, as a JSON-safe dict.

    human: the aggregated human label of each item (canonical labels of `label_set`). rater: the rater's parsed
    label of the same items, None where its output did not parse.

    Returns ``{"level", "n_items", "n_unparsed", "coverage", "alpha", ...}``:
      coverage: parsed / n_items (1 = every output parsed).
      alpha: Krippendorff's α between the two "coders" human and rater at ``label_set.level``; unparsed items are
        missing values (not pairable, so they are left out of α). 1 perfect, 0 chance, < 0 systematic disagreement.
      nominal: "accuracy" (unparsed = wrong) and "macro_f1" (unparsed = its own wrong prediction).
      ordinal / interval: "mae" and "spearman" (parsed items only, on the label_set.value scale) and "accuracy"
        (exact match, unparsed = wrong).
      "kendall_tau_b": Kendall's τ-b between human and rater values (as scipy's kendalltau, variant 'b'; ties
        counted exactly); "icc": ICC(3,1), two-way mixed, consistency, single rater (Shrout & Fleiss 1979) with
        human and rater as the two judges. Both on parsed items only (an unparsed item is left out, as in α; n says
        how many were used), on label_set.value (rank for ordinal, the number for interval). On nominal labels
        they are not defined: value and ci are None (n/a), never a number.
    Each metric is an `Estimate` dict ``{"value", "ci": [low, high], "n", "n_boot", "n_valid", "ci_undefined"}``:
    CIs are 95 % percentile bootstrap intervals, all metrics computed on the same `n_boot` resamples of items (seeded
    by `seed`); n_valid counts the resamples on which the metric is defined (τ-b is not on a resample where the
    rater gave one label throughout). Below 95 % valid the CI is undefined: ci [None, None], ci_undefined true, the
    value stays. (n/a metrics on nominal labels: n_boot 0.)
    """
    n_boot = check_n_boot(n_boot)
    h, r = encode_pair(human, rater, label_set)
    v = len(label_set)
    rows = confusion_rows(h, r, v)
    point = rows.sum(axis=0).reshape(v, v + 1)
    (boot,) = resampled_totals([rows], n_boot, seed)
    boot = boot.reshape(-1, v, v + 1)

    n_items = len(h)
    n_parsed = int((r != MISSING).sum())
    out: dict = {
        "level": label_set.level,
        "n_items": n_items,
        "n_unparsed": n_items - n_parsed,
        "coverage": json_float(n_parsed / n_items),
    }
    for metric in metrics_for(label_set):
        n_used = n_items if metric in ("accuracy", "macro_f1") else n_parsed  # others: parsed items only
        value = float(table_metric(point, metric, label_set))
        na = metric in SCALE_ONLY and label_set.level == "nominal"  # n/a, not undefined: no resamples to count
        resampled = np.zeros(0) if na else table_metric(boot, metric, label_set)
        out[metric] = estimate(value, resampled, n_used).as_dict()
    return out
