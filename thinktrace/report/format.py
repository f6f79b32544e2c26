"""How numbers read in every report: estimates with their CI, p-values, shares."""

from __future__ import annotations


def fmt_est(est: dict | None, digits: int = 3) -> str:
    """`0.412 [0.301, 0.520]`, or `n/a` when undefined."""
    if not est or est.get("value") is None:
        return "n/a"

    def num(x) -> str:  # -0.000 reads as a sign that is not there
        return f"{round(x, digits) + 0.0:.{digits}f}"

    ci = est.get("ci") or [None, None]
    if ci[0] is None or ci[1] is None:
        return num(est["value"])
    return f"{num(est['value'])} [{num(ci[0])}, {num(ci[1])}]"


def fmt_diff(comp: dict | None, key: str = "diff") -> str:
    """A paired difference {diff, ci} as `0.120 [-0.050, 0.300]`; `n/a` when there is none."""
    if not comp:
        return "n/a"
    return fmt_est({"value": comp.get(key), "ci": comp.get("ci")})


def fmt_p(value) -> str:
    """A bootstrap p-value with 3 decimals, `n/a` when undefined (no resamples)."""
    return "n/a" if value is None else f"{value:.3f}"


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def num(x, fmt: str) -> str:
    return "n/a" if isinstance(x, bool) or not isinstance(x, (int, float)) else format(x, fmt)
