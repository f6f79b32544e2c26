"""Agreement among several LLM raters on the same items."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from thinktrace.agreement._alpha import alpha_from_counts
from thinktrace.agreement._bootstrap import check_n_boot, estimate, paired_summary, resample_weights
from thinktrace.agreement._encode import MISSING, domain, encode
from thinktrace.agreement._estimate import json_float
from thinktrace.labels import LabelSet


def check_raters(ratings: Mapping[str, Sequence], needs: str) -> list[str]:
    """The rater names, after checking there are at least two (`needs`: the error's text) labelling as many
    items each."""
    names = list(ratings)
    if len(names) < 2:
        raise ValueError(f"{needs}, got {len(names)}")
    lengths = {name: len(ratings[name]) for name in names}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"raters must label the same items; lengths differ: {lengths}")
    return names


def label_counts(ratings: Mapping[str, Sequence[str | None]], label_set: LabelSet) -> np.ndarray:
    """items x labels: how many raters gave each label to each item (missing labels not counted)."""
    names = list(ratings)
    codes = np.stack([encode(ratings[name], label_set, f"ratings[{name!r}]", True) for name in names])
    counts = np.zeros((codes.shape[1], len(label_set)), dtype=np.int64)
    for row in codes:
        ok = row != MISSING
        np.add.at(counts, (np.nonzero(ok)[0], row[ok]), 1)
    return counts


def paired_inter_rater_difference(
    before: Mapping[str, Sequence[str | None]], after: Mapping[str, Sequence[str | None]], label_set: LabelSet,
    n_boot: int = 1000, seed: int = 0,
) -> dict:
    """Do the `after` raters agree more with each other than the `before` raters? α among `after` minus α among
    `before` on the same items (each group needs >= 2 raters), with a paired bootstrap: each resample draws items
    and recomputes BOTH α on them. Only items labelled by >= 2 raters in both groups count (n).

    Returns ``{"before", "after", "diff", "ci": [lo, hi], "p_after_not_better", "p_two_sided", "n", "n_boot",
    "n_valid", "ci_undefined"}``; None where undefined. p_after_not_better: share of the defined resamples with
    diff <= 0; p_two_sided, n_boot, n_valid, ci_undefined as in `paired_difference` (below 95 % of the resamples
    defined, ci is [None, None]).
    """
    n_boot = check_n_boot(n_boot)
    for name, group in (("before", before), ("after", after)):
        if len(group) < 2:
            raise ValueError(f"paired_inter_rater_difference needs at least two {name} raters, got {len(group)}")
    lengths = {len(v) for v in [*before.values(), *after.values()]}
    if len(lengths) != 1:
        raise ValueError(f"all raters must label the same items; lengths differ: {sorted(lengths)}")
    cb, ca = label_counts(before, label_set), label_counts(after, label_set)
    keep = (cb.sum(axis=1) >= 2) & (ca.sum(axis=1) >= 2)
    cb, ca = cb[keep], ca[keep]
    n = int(keep.sum())
    if n == 0:
        return {"before": None, "after": None, "diff": None, "ci": [None, None], "p_after_not_better": None,
                "p_two_sided": None, "n": 0, "n_boot": 0, "n_valid": 0, "ci_undefined": False}
    values, level = domain(label_set), label_set.level
    a_before, a_after = alpha_from_counts(cb, values, level), alpha_from_counts(ca, values, level)
    diffs = np.array([alpha_from_counts(ca, values, level, w[k]) - alpha_from_counts(cb, values, level, w[k])
                      for w in resample_weights(n, n_boot, seed) for k in range(w.shape[0])])
    summary = paired_summary(diffs, "p_after_not_better")
    return {"before": json_float(a_before), "after": json_float(a_after), "diff": json_float(a_after - a_before),
            "ci": summary.pop("ci"), "p_after_not_better": summary.pop("p_after_not_better"),
            "p_two_sided": summary.pop("p_two_sided"), "n": n, **summary}


def inter_rater_alpha(
    ratings: Mapping[str, Sequence[str | None]], label_set: LabelSet, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Krippendorff's α among LLM raters (coders = raters, items = units; None = unparsed = missing).

    High α means the raters label alike (consistency, not correctness). Returns the `Estimate` dict
    ``{"value", "ci": [low, high], "n", "n_boot", "n_valid", "ci_undefined"}`` plus ``"raters"`` (names in input
    order); n = items labelled by >= 2 raters, which are the items the bootstrap resamples. value/ci are None when
    α is undefined; ci is [None, None] when fewer than 95 % of the resamples gave a defined α.
    """
    n_boot = check_n_boot(n_boot)
    names = check_raters(ratings, "inter_rater_alpha needs at least two raters")
    counts = label_counts(ratings, label_set)
    usable = counts[counts.sum(axis=1) >= 2]
    values, level = domain(label_set), label_set.level
    if usable.shape[0] == 0:
        return {"value": None, "ci": [None, None], "n": 0, "n_boot": 0, "n_valid": 0, "ci_undefined": False,
                "raters": names}
    point = alpha_from_counts(usable, values, level)
    boot = [
        alpha_from_counts(usable, values, level, w[k])
        for w in resample_weights(usable.shape[0], n_boot, seed)
        for k in range(w.shape[0])
    ]
    return {**estimate(point, np.array(boot), usable.shape[0]).as_dict(), "raters": names}
