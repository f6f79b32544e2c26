"""ICC(3,1) among several LLM raters on the same items, and its paired change between two groups of raters.

The items resampled are those the α among the same raters resamples (items labelled by >= 2 raters, see
`inter_rater_alpha` / `paired_inter_rater_difference`), drawn from the same seeded weight matrix, so ICC and α
share their resamples. ICC needs a complete items x raters table: an item that any rater of the group left
unparsed is excluded (its moment row is zero; listwise deletion, as pingouin's nan_policy="omit") and the number of
items used is reported as n.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from thinktrace.agreement._bootstrap import check_n_boot, estimate, paired_summary, resampled_totals
from thinktrace.agreement._encode import MISSING, domain, encode
from thinktrace.agreement._estimate import json_float
from thinktrace.agreement._icc import icc3_1, icc_moment_rows
from thinktrace.agreement._inter_rater import check_raters
from thinktrace.labels import LabelSet


def value_matrix(ratings: Mapping[str, Sequence[str | None]], label_set: LabelSet, what: str = "ratings") -> np.ndarray:
    """items x raters matrix of label values (rank for ordinal, the number for interval); np.nan = unparsed.

    Raises ValueError with fewer than two raters or when the raters' lengths differ.
    """
    names = check_raters(ratings, f"ICC among raters needs at least two {what} raters")
    codes = np.stack([encode(ratings[n], label_set, f"{what}[{n!r}]", True) for n in names], axis=1)
    values = domain(label_set)
    return np.where(codes == MISSING, np.nan, values[np.maximum(codes, 0)])


def _labelled(matrix: np.ndarray) -> np.ndarray:
    """Items labelled by >= 2 raters: the items α among these raters is computed and resampled on."""
    return (~np.isnan(matrix)).sum(axis=1) >= 2


def inter_rater_icc(
    ratings: Mapping[str, Sequence[str | None]], label_set: LabelSet, n_boot: int = 1000, seed: int = 0
) -> dict:
    """ICC(3,1) among LLM raters (judges = raters, targets = items; None = unparsed), with a bootstrap 95 % CI.

    High ICC means the raters order and space the items alike (consistency, not correctness; a rater's constant
    offset does not lower it). Returns the `Estimate` dict ``{"value", "ci": [low, high], "n", "n_boot", "n_valid",
    "ci_undefined"}`` plus "raters" (names in input order) and "n_incomplete" (items some rater left unparsed,
    excluded). value/ci are None when ICC is undefined, and always on nominal labels (n/a); ci is [None, None] when
    fewer than 95 % of the resamples gave a defined ICC.
    """
    n_boot = check_n_boot(n_boot)
    names = list(ratings)
    matrix = value_matrix(ratings, label_set)
    complete = ~np.isnan(matrix).any(axis=1)
    base = {"raters": names, "n_incomplete": int((~complete).sum())}
    resampled = _labelled(matrix)
    n_used = int(complete.sum())
    if label_set.level == "nominal" or not resampled.any():
        return {"value": None, "ci": [None, None], "n": n_used, "n_boot": 0, "n_valid": 0, "ci_undefined": False,
                **base}
    rows = icc_moment_rows(matrix[resampled])
    (boot,) = resampled_totals([rows], n_boot, seed)
    return {**estimate(icc3_1(rows.sum(axis=0)), icc3_1(boot), n_used).as_dict(), **base}


def paired_inter_rater_icc_difference(
    before: Mapping[str, Sequence[str | None]], after: Mapping[str, Sequence[str | None]], label_set: LabelSet,
    n_boot: int = 1000, seed: int = 0,
) -> dict:
    """ICC(3,1) among the `after` raters minus among the `before` raters on the same items, paired bootstrap.

    Items resampled: labelled by >= 2 raters in both groups (the items of `paired_inter_rater_difference`, same
    resamples); items used (n): complete in both groups. Each resample scores both groups on the same items.
    Returns ``{"before", "after", "diff", "ci": [lo, hi], "p_after_not_better", "p_two_sided", "n", "n_boot",
    "n_valid", "ci_undefined"}``: p_after_not_better is the share of resamples with diff <= 0 among those where it
    is defined; the others as in `paired_difference` (below 95 % of the resamples defined, ci is [None, None]).
    None where undefined, and everywhere on nominal labels (n/a).
    """
    n_boot = check_n_boot(n_boot)
    mb, ma = value_matrix(before, label_set, "before"), value_matrix(after, label_set, "after")
    if mb.shape[0] != ma.shape[0]:
        raise ValueError(f"all raters must label the same items; lengths differ: {sorted({mb.shape[0], ma.shape[0]})}")
    resampled = _labelled(mb) & _labelled(ma)
    both = ~(np.isnan(mb).any(axis=1) | np.isnan(ma).any(axis=1))
    n_used = int(both.sum())
    if label_set.level == "nominal" or not resampled.any():
        return {"before": None, "after": None, "diff": None, "ci": [None, None], "p_after_not_better": None,
                "p_two_sided": None, "n": n_used, "n_boot": 0, "n_valid": 0, "ci_undefined": False}
    excluded = np.where(both[resampled, None], 0.0, np.nan)  # items incomplete in either group drop from both
    rows_b, rows_a = icc_moment_rows(mb[resampled] + excluded), icc_moment_rows(ma[resampled] + excluded)
    icc_b, icc_a = icc3_1(rows_b.sum(axis=0)), icc3_1(rows_a.sum(axis=0))
    boot_b, boot_a = resampled_totals([rows_b, rows_a], n_boot, seed)
    diffs = icc3_1(boot_a) - icc3_1(boot_b)
    summary = paired_summary(diffs, "p_after_not_better")
    return {"before": json_float(icc_b), "after": json_float(icc_a), "diff": json_float(icc_a - icc_b),
            "ci": summary.pop("ci"), "p_after_not_better": summary.pop("p_after_not_better"),
            "p_two_sided": summary.pop("p_two_sided"), "n": n_used, **summary}
