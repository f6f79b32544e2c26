"""Percentile bootstrap over items.

Every statistic in this package is a function of per-item tables that add up over items (confusion counts, value
counts, pair counts). A bootstrap resample draws item indices with replacement; the resampled tables are then
``W @ per_item`` where ``W[b, i]`` is how often item i was drawn in resample b. All statistics computed from the
same ``W`` therefore use the same resamples (needed for paired comparisons).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from thinktrace.agreement._estimate import Estimate, ci_undefined, json_float

# Upper bound on resamples x items drawn at once (memory of the index array, ~32 MB of int64).
_CHUNK_DRAWS = 4_000_000


def check_n_boot(n_boot: int) -> int:
    """Validate `n_boot` (a non-negative int)."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ValueError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    return int(n_boot)


def resample_weights(n: int, n_boot: int, seed: int):
    """Yield chunks of the resample-count matrix: float arrays (b, n), ``W[k, i]`` = draws of item i in resample k.

    Deterministic for a given (n, n_boot, seed): draws come from ``np.random.default_rng(seed)`` in a fixed order.
    Each row sums to n (a resample has as many items as the data).
    """
    if n_boot == 0:
        return
    if n <= 0:
        raise ValueError("cannot bootstrap zero items")
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK_DRAWS // n)
    done = 0
    while done < n_boot:
        b = min(per_chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        idx += (np.arange(b, dtype=idx.dtype) * n)[:, None]
        yield np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def resampled_totals(per_item: Sequence[np.ndarray], n_boot: int, seed: int) -> list[np.ndarray]:
    """Bootstrap totals of additive per-item tables, all from the SAME resamples.

    per_item: arrays of shape (n_items, k_j) with the same n_items. Returns arrays (n_boot, k_j): the column sums of
    each table over the items of each resample.
    """
    n = per_item[0].shape[0]
    if any(t.shape[0] != n for t in per_item):
        raise ValueError("per-item tables must have the same number of items")
    out: list[list[np.ndarray]] = [[] for _ in per_item]
    for w in resample_weights(n, n_boot, seed):
        for acc, table in zip(out, per_item):
            acc.append(w @ table)
    return [np.concatenate(acc) if acc else np.zeros((0, t.shape[1])) for acc, t in zip(out, per_item)]


def percentile_ci(boot: np.ndarray) -> tuple[float, float]:
    """2.5 % and 97.5 % percentiles of the defined (finite) bootstrap values; (nan, nan) when there are none."""
    boot = np.asarray(boot, dtype=float)
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(boot, [2.5, 97.5])
    return float(low), float(high)


def estimate(value: float, boot: np.ndarray, n: int) -> Estimate:
    """An `Estimate` from the point value and the bootstrap values (one per resample drawn, nan = undefined on
    that resample): it carries how many were drawn and how many were defined; its CI is nan when fewer than 95 %
    were (`thinktrace.agreement._estimate.ci_undefined`)."""
    boot = np.asarray(boot, dtype=float).reshape(-1)
    n_boot, n_valid = int(boot.size), int(np.isfinite(boot).sum())
    low, high = (float("nan"), float("nan")) if ci_undefined(n_boot, n_valid) else percentile_ci(boot)
    return Estimate(value=float(value), low=low, high=high, n=int(n), n_boot=n_boot, n_valid=n_valid)


def p_two_sided(defined: np.ndarray) -> float:
    """Two-sided percentile-bootstrap p of "the difference is 0": ``min(1, 2 * min(share(d <= 0), share(d >= 0)))``
    over the defined resampled differences d (nan when there are none). It is about the smallest level at which
    the equal-tailed percentile CI excludes 0 (p < 0.05 <=> the 95 % CI lies on one side of 0, ties aside)."""
    defined = np.asarray(defined, dtype=float)
    if defined.size == 0:
        return float("nan")
    return float(min(1.0, 2.0 * min((defined <= 0).mean(), (defined >= 0).mean())))


def paired_summary(diffs: np.ndarray, p_key: str, higher_is_better: bool = True) -> dict:
    """What a paired bootstrap reports about its resampled differences (one per resample drawn, nan = undefined):
    ``{"ci": [lo, hi], p_key, "p_two_sided", "n_boot", "n_valid", "ci_undefined"}``.

    p_key: the one-sided p, the share of defined resamples where b is not better (diff <= 0; >= 0 when lower is
    better). Both p-values use the defined resamples only and are reported even when the CI is undefined (fewer
    than 95 % defined; ci is then [None, None]); None when no resample is defined."""
    diffs = np.asarray(diffs, dtype=float).reshape(-1)
    defined = diffs[np.isfinite(diffs)]
    n_boot, n_valid = int(diffs.size), int(defined.size)
    undefined = ci_undefined(n_boot, n_valid)
    low, high = (float("nan"), float("nan")) if undefined else percentile_ci(defined)
    if n_valid:
        not_better = defined <= 0 if higher_is_better else defined >= 0
        p_one = float(not_better.mean())
    else:
        p_one = float("nan")
    return {"ci": [json_float(low), json_float(high)], p_key: json_float(p_one),
            "p_two_sided": json_float(p_two_sided(defined)), "n_boot": n_boot, "n_valid": n_valid,
            "ci_undefined": undefined}
