"""The numbers of the trace-quality check, from the settled reader records: per accepted trace, did the reader
return the human label (a hit) with the trace, without it, and with a rejected trace of the same example?

Rates are shares of hits; all of them (and their paired differences) come from the same bootstrap resamples of
the traces (`thinktrace.agreement`'s resample design), so a difference is paired on the same traces. A record
with an error (a call that failed finally) leaves its trace out of the comparisons it belongs to (counted in
`n_errors`); an unparseable answer is an answer that is not the human label (a miss, counted in `n_unparsed`).

Verdict (the warning rule): the traces move the reader toward the human label when the paired difference
with − without has a 95 % CI lower bound above 0 (without bootstrap resamples: when the difference itself is
above 0). Otherwise the corpus gets a warning.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from thinktrace.agreement._bootstrap import estimate, resample_weights
from thinktrace.agreement._estimate import json_float
from thinktrace.trace_quality.units import REJECTED, WITH, WITHOUT, trace_id

RULE = ("traces move the reader toward the human label when the 95 % bootstrap CI of the paired difference "
        "(rate with trace - rate without, same traces) lies above 0 (with evaluate.bootstrap 0: when the difference "
        "is above 0); otherwise the report warns")


def _record(done: dict, condition: str, unit: str) -> dict | None:
    return done.get((condition, unit))


def _answered(r: dict | None) -> bool:
    return r is not None and not r.get("error")


def _rates(columns: dict[str, np.ndarray], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Bootstrap rates of each 0/1 column over the same resamples of its rows."""
    n = len(next(iter(columns.values())))
    boots: dict[str, list] = {k: [] for k in columns}
    for w in resample_weights(n, n_boot, seed):
        for k, col in columns.items():
            boots[k].append(w @ col / n)
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in boots.items()}


def _diff(a: np.ndarray, b: np.ndarray, boot_a: np.ndarray, boot_b: np.ndarray) -> dict:
    """b - a: value, 95 % percentile CI, share of resamples where b is not above a (p_b_not_better), n."""
    d = boot_b - boot_a
    low, high = (np.percentile(d, [2.5, 97.5]) if d.size else (np.nan, np.nan))
    return {"diff": json_float(b.mean() - a.mean()), "ci": [json_float(low), json_float(high)],
            "p_b_not_better": json_float((d <= 0).mean()) if d.size else None, "n": int(len(a))}


def compare(columns: dict[str, np.ndarray], pairs: Sequence[tuple[str, str]], n_boot: int, seed: int) -> dict:
    """{name: rate estimate} for each column and {"<b>_minus_<a>": paired difference} for each (a, b) pair."""
    n = len(next(iter(columns.values())))
    if n == 0:
        return {"n": 0}
    boots = _rates(columns, n_boot, seed)
    out: dict = {"n": n}
    for k, col in columns.items():
        out[k] = estimate(col.mean(), boots[k], n).as_dict()
    for a, b in pairs:
        out[f"{b}_minus_{a}"] = _diff(columns[a], columns[b], boots[a], boots[b])
    return out


def moves_toward_human(diff: dict | None) -> bool | None:
    """The verdict of RULE on a with - without difference (None: nothing to compare)."""
    if not diff or diff.get("diff") is None:
        return None
    low = (diff.get("ci") or [None])[0]
    return bool(low > 0) if low is not None else bool(diff["diff"] > 0)


def _block(rows: list[dict], n_boot: int, seed: int) -> dict:
    """Rates and differences for a group of traces: all of them (with vs without) and the rejected subset."""
    both = [r for r in rows if _answered(r[WITH]) and _answered(r[WITHOUT])]
    col = lambda group, cond: np.array([float(r[cond]["label"] == r["human"]) for r in group])  # noqa: E731
    out = compare({WITH: col(both, WITH), WITHOUT: col(both, WITHOUT)}, [(WITHOUT, WITH)], n_boot, seed)
    out["moves_toward_human"] = moves_toward_human(out.get(f"{WITH}_minus_{WITHOUT}"))
    sub = [r for r in both if _answered(r[REJECTED])]
    rej = compare({WITH: col(sub, WITH), REJECTED: col(sub, REJECTED), WITHOUT: col(sub, WITHOUT)},
                  [(REJECTED, WITH), (WITHOUT, REJECTED)], n_boot, seed) if sub else {"n": 0}
    rej["n_items"] = len({r["item_id"] for r in sub})
    rej["by_strategy"] = {s: sum(1 for r in sub if r[REJECTED].get("trace_strategy") == s)
                          for s in sorted({r[REJECTED].get("trace_strategy") or "?" for r in sub})}
    out["rejected"] = rej
    return out


def quality_metrics(traces: list[dict], done: dict, label_set: Sequence[str], *, reader: str, n_boot: int,
                    seed: int) -> dict:
    """The `trace_quality` section of metrics.json: overall, per human label, counts, verdict and warnings.
    `done`: {(condition, unit): settled record}."""
    rows = [{"human": t["human"], "item_id": t["item_id"], WITH: _record(done, WITH, trace_id(t)),
             WITHOUT: _record(done, WITHOUT, t["item_id"]), REJECTED: _record(done, REJECTED, t["key"])}
            for t in traces]
    records = list(done.values())
    out: dict = {"reader": reader, "n_traces": len(traces), "n_items": len({t["item_id"] for t in traces}),
                 "rule": RULE,
                 "n_errors": {c: sum(1 for r in records if r.get("condition") == c and r.get("error"))
                              for c in (WITH, WITHOUT, REJECTED)},
                 "n_unparsed": {c: sum(1 for r in records if r.get("condition") == c and not r.get("error")
                                       and r.get("label") is None) for c in (WITH, WITHOUT, REJECTED)},
                 "overall": _block(rows, n_boot, seed)}
    out["per_label"] = {lab: _block([r for r in rows if r["human"] == lab], n_boot, seed)
                        for lab in label_set if any(r["human"] == lab for r in rows)}
    verdict = out["overall"]["moves_toward_human"]
    out["moves_toward_human"] = verdict
    out["warnings"] = [] if verdict in (True, None) else [warning_text(out)]
    return out


def _fmt(est: dict | None) -> str:
    if not est or est.get("value") is None:
        return "n/a"
    low, high = est.get("ci") or [None, None]
    ci = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
    return f"{est['value']:.2f}{ci}"


def warning_text(q: dict) -> str:
    o = q["overall"]
    d = o.get(f"{WITH}_minus_{WITHOUT}") or {}
    low, high = d.get("ci") or [None, None]
    ci = f" [{low:+.2f}, {high:+.2f}]" if low is not None and high is not None else " (no CI)"
    return (f"trace quality: the traces do not move the reader ({q['reader']}) toward the human label: it returns "
            f"the human label at {_fmt(o.get(WITH))} with the trace and {_fmt(o.get(WITHOUT))} without it, "
            f"difference {d.get('diff', 0):+.2f}{ci} on {o.get('n')} traces (rule: the CI must lie above 0)")
