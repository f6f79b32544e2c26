"""Percentile bootstrap over items.

Every statistic in this package is a function of per-item tables that add up over items (confusion counts, value
counts, pair counts). A bootstrap resample draws item indices with replacement; the resampled tables are then
``W @ per_item`` where ``W[b, i]`` is how often item i was drawn in resample b. All statistics computed from the
same ``W`` therefore use the same resamples (needed for paired comparisons).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from thinktrace.agreement._estimate import Estimate

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
    """An `Estimate` from the point value and the bootstrap values."""
    low, high = percentile_ci(boot)
    return Estimate(value=float(value), low=low, high=high, n=int(n))
