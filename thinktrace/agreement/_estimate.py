"""`Estimate`: a point estimate with its percentile-bootstrap 95 % interval, and JSON-safe conversion."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: A bootstrap CI is reported only when at least this share of the resamples gave a defined (finite) statistic;
#: below it the CI is undefined: the resamples left would describe a different population of items than the data.
MIN_VALID_SHARE = 0.95


def json_float(x: Any) -> float | None:
    """A Python float for JSON: numpy scalars become floats, nan/inf become None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def ci_undefined(n_boot: int, n_valid: int) -> bool:
    """The rule: a bootstrap CI is undefined when resamples were drawn (n_boot > 0) and fewer than
    `MIN_VALID_SHARE` (95 %) of them gave a defined value (n_valid < 0.95 * n_boot). n_boot == 0 is "no CI"
    (no bootstrap run), not undefined."""
    return n_boot > 0 and n_valid < MIN_VALID_SHARE * n_boot


@dataclass(frozen=True)
class Estimate:
    """A statistic on a set of items with a percentile-bootstrap 95 % confidence interval.

    value: the statistic on all items (nan when it is undefined on them, e.g. α without variation).
    low, high: the 2.5 % and 97.5 % percentiles of the statistic over the bootstrap resamples of the items on which
        it is defined. nan when no bootstrap was run (n_boot == 0), or when the CI is undefined (`ci_undefined`:
        fewer than 95 % of the resamples gave a defined value). A narrow interval means the value is stable under
        resampling of items, not that it is correct.
    n: the number of items the statistic used.
    n_boot: the resamples drawn; n_valid: those on which the statistic was defined (finite). The defaults (0, 0)
        mean no bootstrap.
    """

    value: float
    low: float
    high: float
    n: int
    n_boot: int = 0
    n_valid: int = 0

    @property
    def ci_undefined(self) -> bool:
        """True when fewer than 95 % of the resamples were valid (`ci_undefined`): the CI is then not reported."""
        return ci_undefined(self.n_boot, self.n_valid)

    def as_dict(self) -> dict:
        """``{"value", "ci": [low, high], "n", "n_boot", "n_valid", "ci_undefined"}`` with plain Python numbers;
        nan becomes None (JSON null). When ci_undefined is true, ci is [None, None] while value stays. A document
        written before these keys existed lacks them: read that as every resample valid."""
        undefined = self.ci_undefined
        ci = [None, None] if undefined else [json_float(self.low), json_float(self.high)]
        return {"value": json_float(self.value), "ci": ci, "n": int(self.n), "n_boot": int(self.n_boot),
                "n_valid": int(self.n_valid), "ci_undefined": undefined}
