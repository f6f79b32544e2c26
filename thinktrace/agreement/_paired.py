"""Comparing two raters on the same items with a paired bootstrap."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from thinktrace.agreement._bootstrap import check_n_boot, paired_summary, resampled_totals
from thinktrace.agreement._encode import encode
from thinktrace.agreement._estimate import json_float
from thinktrace.agreement._rater import (HIGHER_IS_BETTER, METRICS, SCALE_ONLY, confusion_rows, encode_pair,
                                         table_metric)
from thinktrace.labels import LabelSet


def paired_difference(
    human: Sequence[str],
    rater_a: Sequence[str | None],
    rater_b: Sequence[str | None],
    label_set: LabelSet,
    metric: str = "alpha",
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Is rater b better than rater a? ``metric(b) - metric(a)`` on the same items, with a paired bootstrap.

    Each resample draws items with replacement and scores BOTH raters on those same items, so item difficulty
    cancels out of the difference. metric: "alpha", "accuracy", "macro_f1", "mae" (ordinal/interval only; lower
    MAE is better, so a negative diff means b is better), "kendall_tau_b" or "icc" (ICC(3,1)). τ-b and ICC use each
    rater's parsed items (an unparsed item is left out, as in α) and are not defined on nominal labels: there a, b,
    diff, ci and the p-value are None (n/a). All metrics draw the same resamples for the same (n items, n_boot,
    seed), so differences in different metrics are paired on the same resamples too.

    Returns ``{"metric", "a", "b", "diff", "ci": [lo, hi], "p_b_not_better", "p_two_sided", "n", "n_boot",
    "n_valid", "ci_undefined"}``: a, b the metric on all items, diff = b - a, ci its 95 % percentile bootstrap
    interval, p_b_not_better the share of resamples in which b is not better than a (diff <= 0; for MAE diff >= 0)
    among resamples where the diff is defined: a one-sided bootstrap p-value, small when b is reliably better.
    p_two_sided: ``min(1, 2 * min(share(diff <= 0), share(diff >= 0)))`` over the same defined resamples (for a
    multiple-comparison adjustment such as Holm's). n: number of items. n_boot: resamples drawn; n_valid: those
    where the diff is defined (e.g. τ-b of a rater that gave one label on every resampled item is not); below 95 %
    valid the CI is undefined: ci is [None, None] and ci_undefined is true (the p-values stay). nan values come
    back as None.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(METRICS)}")
    if metric == "mae" and label_set.level == "nominal":
        raise ValueError("metric 'mae' needs an ordinal or interval label_set; this one is nominal")
    n_boot = check_n_boot(n_boot)
    if len(rater_a) != len(rater_b):
        raise ValueError(f"rater_a has {len(rater_a)} labels but rater_b has {len(rater_b)}; they must be the same items")
    h, a = encode_pair(human, rater_a, label_set, "rater_a")
    b = encode(rater_b, label_set, "rater_b", allow_missing=True)
    v = len(label_set)
    rows_a, rows_b = confusion_rows(h, a, v), confusion_rows(h, b, v)
    value_a = float(table_metric(rows_a.sum(axis=0).reshape(v, v + 1), metric, label_set))
    value_b = float(table_metric(rows_b.sum(axis=0).reshape(v, v + 1), metric, label_set))
    boot_a, boot_b = resampled_totals([rows_a, rows_b], n_boot, seed)
    diffs = table_metric(boot_b.reshape(-1, v, v + 1), metric, label_set) - table_metric(
        boot_a.reshape(-1, v, v + 1), metric, label_set
    )
    if metric in SCALE_ONLY and label_set.level == "nominal":
        diffs = np.zeros(0)  # n/a, not undefined: no resamples to count
    summary = paired_summary(diffs, "p_b_not_better", HIGHER_IS_BETTER[metric])
    return {
        "metric": metric,
        "a": json_float(value_a),
        "b": json_float(value_b),
        "diff": json_float(value_b - value_a),
        "ci": summary["ci"],
        "p_b_not_better": summary["p_b_not_better"],
        "p_two_sided": summary["p_two_sided"],
        "n": len(h),
        "n_boot": summary["n_boot"],
        "n_valid": summary["n_valid"],
        "ci_undefined": summary["ci_undefined"],
    }


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values of one family of tests, in the input order.

    With the m p-values sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max over j <= i of
    min(1, (m - j + 1) * p_(j)) (step-down; rejecting where the adjusted p < level controls the family-wise error
    rate at that level under any dependence). A None (no p: no bootstrap, undefined) still counts in m and is taken
    as p = 1, so it never shrinks the others' adjustment; it comes back as None.
    """
    p = np.array([1.0 if x is None else float(x) for x in p_values])
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order])) if m else p
    out = np.empty(m)
    out[order] = adjusted
    return [None if x is None else float(a) for x, a in zip(p_values, out)]


def paired_mean_difference(
    human: Sequence[str],
    raters_a: dict[str, Sequence[str | None]],
    raters_b: dict[str, Sequence[str | None]],
    label_set: LabelSet,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Is program b better than program a, judged by every rater? The mean over raters of α(rater under b) −
    α(rater under a), on the same items, with a paired bootstrap (each resample draws items once and scores every
    rater under both programs on them). An undefined α counts as 0 (chance), as a guideline candidate's dev score
    does. raters_a and raters_b name the same raters.

    Returns ``{"a", "b", "diff", "ci", "se", "p_b_not_better", "p_two_sided", "n", "n_boot", "n_valid",
    "ci_undefined"}``: a, b the mean α on all items, se the bootstrap standard deviation of the difference (what a
    power calculation needs)."""
    if set(raters_a) != set(raters_b) or not raters_a:
        raise ValueError(f"raters_a {sorted(raters_a)} and raters_b {sorted(raters_b)} must name the same raters")
    n_boot = check_n_boot(n_boot)
    v = len(label_set)
    names = sorted(raters_a)
    rows = []
    for name in names:
        for labels in (raters_a[name], raters_b[name]):
            h, r = encode_pair(human, labels, label_set, name)
            rows.append(confusion_rows(h, r, v))

    def mean_alpha(tables: list[np.ndarray], start: int) -> np.ndarray:
        vals = [np.nan_to_num(np.asarray(table_metric(t.reshape(-1, v, v + 1), "alpha", label_set), dtype=float))
                for t in tables[start::2]]
        return np.mean(vals, axis=0)

    full = [r.sum(axis=0) for r in rows]
    value_a, value_b = float(mean_alpha(full, 0)[0]), float(mean_alpha(full, 1)[0])
    boot = resampled_totals(rows, n_boot, seed)
    diffs = mean_alpha(boot, 1) - mean_alpha(boot, 0)
    summary = paired_summary(diffs, "p_b_not_better", True)
    return {"a": json_float(value_a), "b": json_float(value_b), "diff": json_float(value_b - value_a),
            "ci": summary["ci"], "se": json_float(float(np.std(diffs, ddof=1))) if len(diffs) > 1 else None,
            "p_b_not_better": summary["p_b_not_better"], "p_two_sided": summary["p_two_sided"], "n": len(human),
            "n_boot": summary["n_boot"], "n_valid": summary["n_valid"], "ci_undefined": summary["ci_undefined"]}
