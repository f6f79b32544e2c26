"""Turning canonical string labels into integer codes (position in the label set) and scale values."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from thinktrace.labels import LabelSet

MISSING = -1


def is_missing(x: object) -> bool:
    """None, a float nan or pandas' NA/NaT: a label that is absent (e.g. LM output that did not parse)."""
    if x is None:
        return True
    if isinstance(x, float):
        return math.isnan(x)
    return type(x).__name__ in {"NAType", "NaTType"}


def encode(values: Sequence[object], label_set: LabelSet, name: str, allow_missing: bool) -> np.ndarray:
    """Integer codes of canonical labels: position in `label_set`; MISSING (-1) for a missing one.

    Raises ValueError naming `name` when a value is not a label of `label_set` (labels must already be canonical,
    e.g. parsed with ``label_set.parse``), or is missing while `allow_missing` is False.
    """
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name} must be a sequence of labels, not a single string")
    position = {label: i for i, label in enumerate(label_set.labels)}
    codes = np.empty(len(values), dtype=np.int64)
    bad: list[object] = []
    n_missing = 0
    for i, v in enumerate(values):
        if is_missing(v):
            codes[i] = MISSING
            n_missing += 1
        elif v in position:
            codes[i] = position[v]  # type: ignore[index]
        else:
            codes[i] = MISSING
            bad.append(v)
    if bad:
        shown = sorted({repr(b) for b in bad})[:5]
        raise ValueError(
            f"{name}: {len(bad)} value(s) not in label_set {list(label_set.labels)}: {', '.join(shown)}"
            " (labels must be canonical strings; parse LM output with label_set.parse first)"
        )
    if n_missing and not allow_missing:
        raise ValueError(f"{name}: {n_missing} missing label(s); every item needs a label here")
    return codes


def domain(label_set: LabelSet) -> np.ndarray:
    """The number of each label, in label_set order: rank (nominal/ordinal) or the number itself (interval)."""
    return np.array([label_set.value(label) for label in label_set.labels], dtype=float)
