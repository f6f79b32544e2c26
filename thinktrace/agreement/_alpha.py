"""Krippendorff's α, computed by the `krippendorff` package (never reimplemented here).

α = 1 - D_o / D_e: observed disagreement over the disagreement expected by chance, with the distance of the level
of measurement (nominal: equal or not; ordinal: rank distance weighted by how many values lie between; interval:
squared difference). α = 1 is perfect agreement, α = 0 agreement at chance level, α < 0 systematic disagreement
(coders disagree more than chance would make them). Only pairable values count: a unit (item) coded by fewer than
two coders contributes nothing.

α is undefined, and these functions return nan instead of raising, when fewer than two pairable values exist (no
unit has two or more values) or all pairable values are equal (no variation: D_e = 0).
"""

from __future__ import annotations

import warnings

import krippendorff
import numpy as np

LEVELS = ("nominal", "ordinal", "interval", "ratio")


def check_level(level: str) -> str:
    """Validate a level of measurement."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {list(LEVELS)}, got {level!r}")
    return level


def alpha(matrix: np.ndarray, level: str) -> float:
    """Krippendorff's α of a coders x items matrix of numbers, np.nan = missing.

    level: "nominal", "ordinal" (values are ranks or any ordered numbers), "interval" or "ratio".
    Returns α in (-inf, 1]: 1 perfect agreement, 0 chance-level agreement, < 0 systematic disagreement; nan when α
    is undefined (fewer than two pairable values, or no variation among the pairable values).
    """
    check_level(level)
    data = np.asarray(matrix, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"matrix must be 2-D (coders x items), got shape {data.shape}")
    present = ~np.isnan(data)
    pairable = present[:, present.sum(axis=0) >= 2]
    if pairable.sum() < 2:
        return float("nan")
    values = data[:, present.sum(axis=0) >= 2][pairable]
    if np.unique(values).size < 2:
        return float("nan")
    return _call(reliability_data=data, level_of_measurement=level)


def _call(**kwargs) -> float:
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(krippendorff.alpha(**kwargs))
    return value if np.isfinite(value) else float("nan")


def compact_units(rows: np.ndarray, multiplicity: np.ndarray | None = None) -> np.ndarray:
    """An equivalent, usually much smaller, value-count matrix for α.

    rows: (units, V) value counts per unit type; multiplicity: how often each unit type occurs (default 1).
    Units with fewer than two values are dropped (they contribute no coincidences). Unanimous units (all m values
    equal to c) contribute exactly m to the coincidence o_cc, linearly in m, so all unanimous units of value c merge
    into one unit whose count is their total; other units are repeated by their multiplicity. The coincidence
    matrix, hence α, is unchanged.
    """
    rows = np.asarray(rows)
    mult = np.ones(rows.shape[0]) if multiplicity is None else np.asarray(multiplicity)
    m = rows.sum(axis=1)
    keep = (m >= 2) & (mult > 0)
    rows, mult, m = rows[keep], mult[keep], m[keep]
    unanimous = rows.max(axis=1) == m
    merged = (rows[unanimous] * mult[unanimous, None]).sum(axis=0)
    merged_units = np.diag(merged)[merged > 0]
    mixed = np.repeat(rows[~unanimous], np.rint(mult[~unanimous]).astype(np.int64), axis=0)
    return np.vstack([merged_units, mixed]).astype(np.int64)


def alpha_from_counts(
    rows: np.ndarray, domain: np.ndarray, level: str, multiplicity: np.ndarray | None = None
) -> float:
    """α from per-unit value counts (columns = `domain` values, in scale order for ordinal); nan when undefined.

    Equivalent to `alpha` on the coders x items matrix the counts come from.
    """
    units = compact_units(rows, multiplicity)
    if units.shape[0] == 0 or np.count_nonzero(units.sum(axis=0)) < 2:
        return float("nan")
    return _call(value_counts=units, value_domain=np.asarray(domain, dtype=float), level_of_measurement=level)


def pair_templates(n_values: int) -> np.ndarray:
    """(V*V, V) value counts of a two-value unit for each ordered pair (c, k): ``e_c + e_k``."""
    eye = np.eye(n_values, dtype=np.int64)
    return (eye[:, None, :] + eye[None, :, :]).reshape(n_values * n_values, n_values)


def alpha_from_pairs(pair_counts: np.ndarray, domain: np.ndarray, level: str) -> float:
    """α of two coders from a (V, V) table: ``pair_counts[c, k]`` = units where coder 1 gave c and coder 2 gave k.

    Units where a coder is missing are not pairable and are simply not in the table. nan when undefined.
    """
    v = len(domain)
    return alpha_from_counts(pair_templates(v), domain, level, np.asarray(pair_counts).reshape(v * v))
