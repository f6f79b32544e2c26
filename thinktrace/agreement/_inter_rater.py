"""Agreement among several LLM raters on the same items."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from thinktrace.agreement._alpha import alpha_from_counts
from thinktrace.agreement._bootstrap import check_n_boot, estimate, resample_weights
from thinktrace.agreement._encode import MISSING, domain, encode
from thinktrace.labels import LabelSet


def inter_rater_alpha(
    ratings: Mapping[str, Sequence[str | None]], label_set: LabelSet, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Krippendorff's α among LLM raters (coders = raters, items = units; None = unparsed = missing).

    High α means the raters label alike (consistency, not correctness). Returns the `Estimate` dict
    ``{"value", "ci": [low, high], "n"}`` plus ``"raters"`` (names in input order); n = items labelled by >= 2
    raters, which are the items the bootstrap resamples. value/ci are None when α is undefined.
    """
    n_boot = check_n_boot(n_boot)
    names = list(ratings)
    if len(names) < 2:
        raise ValueError(f"inter_rater_alpha needs at least two raters, got {len(names)}")
    lengths = {name: len(ratings[name]) for name in names}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"raters must label the same items; lengths differ: {lengths}")
    v = len(label_set)
    codes = np.stack([encode(ratings[name], label_set, f"ratings[{name!r}]", True) for name in names])
    counts = np.zeros((codes.shape[1], v), dtype=np.int64)
    for row in codes:
        ok = row != MISSING
        np.add.at(counts, (np.nonzero(ok)[0], row[ok]), 1)
    usable = counts[counts.sum(axis=1) >= 2]
    values, level = domain(label_set), label_set.level
    if usable.shape[0] == 0:
        return {"value": None, "ci": [None, None], "n": 0, "raters": names}
    point = alpha_from_counts(usable, values, level)
    boot = [
        alpha_from_counts(usable, values, level, w[k])
        for w in resample_weights(usable.shape[0], n_boot, seed)
        for k in range(w.shape[0])
    ]
    return {**estimate(point, np.array(boot), usable.shape[0]).as_dict(), "raters": names}
