"""How numbers read in every report: estimates with their CI, p-values, shares."""

from __future__ import annotations


def ci_is_undefined(est: dict | None) -> bool:
    """Whether an estimate's or paired difference's CI is undefined: fewer than 95 % of its bootstrap resamples gave
    a defined value (`thinktrace.agreement`). A document written before the flag existed lacks it: defined."""
    return bool((est or {}).get("ci_undefined"))


def undefined_ci(est: dict) -> str:
    """`CI undefined (646/1000 valid resamples)`: what stands where an undefined CI would."""
    return f"CI undefined ({est.get('n_valid', '?')}/{est.get('n_boot', '?')} valid resamples)"


def fmt_est(est: dict | None, digits: int = 3) -> str:
    """`0.412 [0.301, 0.520]`; `0.412 [CI undefined (646/1000 valid resamples)]` when fewer than 95 % of the
    resamples were valid; `n/a` when undefined."""
    if not est or est.get("value") is None:
        return "n/a"

    def num(x) -> str:  # -0.000 reads as a sign that is not there
        return f"{round(x, digits) + 0.0:.{digits}f}"

    if ci_is_undefined(est):
        return f"{num(est['value'])} [{undefined_ci(est)}]"
    ci = est.get("ci") or [None, None]
    if ci[0] is None or ci[1] is None:
        return num(est["value"])
    return f"{num(est['value'])} [{num(ci[0])}, {num(ci[1])}]"


def fmt_diff(comp: dict | None, key: str = "diff") -> str:
    """A paired difference {diff, ci} as `0.120 [-0.050, 0.300]` (an undefined CI as in `fmt_est`); `n/a` when
    there is none."""
    if not comp:
        return "n/a"
    return fmt_est({"value": comp.get(key), "ci": comp.get("ci"), "ci_undefined": comp.get("ci_undefined"),
                    "n_boot": comp.get("n_boot"), "n_valid": comp.get("n_valid")})


def fmt_p(value) -> str:
    """A bootstrap p-value with 3 decimals, `n/a` when undefined (no resamples)."""
    return "n/a" if value is None else f"{value:.3f}"


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def num(x, fmt: str) -> str:
    return "n/a" if isinstance(x, bool) or not isinstance(x, (int, float)) else format(x, fmt)
