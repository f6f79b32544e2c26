"""`Estimate`: a point estimate with its percentile-bootstrap 95 % interval, and JSON-safe conversion."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def json_float(x: Any) -> float | None:
    """A Python float for JSON: numpy scalars become floats, nan/inf become None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class Estimate:
    """A statistic on a set of items with a percentile-bootstrap 95 % confidence interval.

    value: the statistic on all items (nan when it is undefined on them, e.g. α without variation).
    low, high: the 2.5 % and 97.5 % percentiles of the statistic over bootstrap resamples of the items; resamples on
        which the statistic is undefined are left out. nan when no bootstrap was run (n_boot == 0) or no resample
        gave a defined value. A narrow interval means the value is stable under resampling of items, not that it is
        correct.
    n: the number of items the statistic used.
    """

    value: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict:
        """``{"value", "ci": [low, high], "n"}`` with plain Python numbers; nan becomes None (JSON null)."""
        return {"value": json_float(self.value), "ci": [json_float(self.low), json_float(self.high)], "n": int(self.n)}
