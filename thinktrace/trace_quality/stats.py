"""The numbers of the trace-quality check, from the settled reader records: per accepted trace, did the reader
return the human label (a hit) with the masked trace (every statement of a label masked by `thinktrace.leak`, the
main condition), with the raw trace, without a trace, and with a rejected trace of the same example (masked the
same way, and raw)? And how many traces state their label at all (`leak_stats`).

Rates are shares of hits; all of them (and their paired differences) come from the same bootstrap resamples of
the traces (`thinktrace.agreement`'s resample design), so a difference is paired on the same traces. A record
with an error (a call that failed finally) leaves its trace out of the comparisons it belongs to (counted in
`n_errors`); an unparseable answer is an answer that is not the human label (a miss, counted in `n_unparsed`).

Verdict (the warning rule): the traces move the reader toward the human label when the paired difference
masked − without has a 95 % CI lower bound above 0 (without bootstrap resamples: when the difference itself is
above 0). Otherwise the corpus gets a warning. The raw trace's difference is reported beside it
(`raw_moves_toward_human`): a trace that states its label lets the reader copy it, which is no evidence that the
reasoning carries the label. Accepted vs rejected is read on the masked traces (`accepted_beats_rejected`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from thinktrace.agreement._bootstrap import estimate, paired_summary, resample_weights
from thinktrace.agreement._estimate import json_float
from thinktrace.labels import LabelSet
from thinktrace.leak import PLACEHOLDER, find_leaks, mask, states_label
from thinktrace.trace_quality.units import (CONDITIONS, MASKED, MASKED_REJECTED, REJECTED, WITH, WITHOUT,
                                            first_rejected, trace_id)

RULE = ("traces move the reader toward the human label when the 95 % bootstrap CI of the paired difference "
        "(rate with the masked trace - rate without, same traces; masked: every statement of a label replaced by "
        f"{PLACEHOLDER}) lies above 0 (with evaluate.bootstrap 0: when the difference is above 0); otherwise the "
        "report warns")


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
    """b - a: value, 95 % percentile CI, share of resamples where b is not above a (p_b_not_better), the two-sided
    p, resamples drawn and valid (`thinktrace.agreement`'s `paired_summary`, as every paired difference), n."""
    if not boot_a.size:
        return {"diff": json_float(b.mean() - a.mean()), "ci": [None, None], "p_b_not_better": None,
                "n_boot": 0, "n_valid": 0, "ci_undefined": False, "n": int(len(a))}
    return {"diff": json_float(b.mean() - a.mean()), **paired_summary(boot_b - boot_a, "p_b_not_better"),
            "n": int(len(a))}


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
    """The verdict of RULE on a b - a difference: its CI lies above 0 (None: nothing to compare)."""
    if not diff or diff.get("diff") is None:
        return None
    low = (diff.get("ci") or [None])[0]
    return bool(low > 0) if low is not None else bool(diff["diff"] > 0)


def _block(rows: list[dict], n_boot: int, seed: int) -> dict:
    """Rates and differences for a group of traces: all of them (masked, raw, without) and the rejected subset
    (accepted vs rejected, masked and raw)."""
    both = [r for r in rows if all(_answered(r[c]) for c in (MASKED, WITH, WITHOUT))]
    col = lambda group, cond: np.array([float(r[cond]["label"] == r["human"]) for r in group])  # noqa: E731
    out = compare({c: col(both, c) for c in (MASKED, WITH, WITHOUT)},
                  [(WITHOUT, MASKED), (WITHOUT, WITH), (MASKED, WITH)], n_boot, seed)
    out["moves_toward_human"] = moves_toward_human(out.get(f"{MASKED}_minus_{WITHOUT}"))
    out["raw_moves_toward_human"] = moves_toward_human(out.get(f"{WITH}_minus_{WITHOUT}"))
    sub = [r for r in both if _answered(r[REJECTED]) and _answered(r[MASKED_REJECTED])]
    rej = compare({c: col(sub, c) for c in (MASKED, MASKED_REJECTED, WITH, REJECTED, WITHOUT)},
                  [(MASKED_REJECTED, MASKED), (WITHOUT, MASKED_REJECTED), (REJECTED, WITH), (WITHOUT, REJECTED)],
                  n_boot, seed) if sub else {"n": 0}
    rej["accepted_beats_rejected"] = moves_toward_human(rej.get(f"{MASKED}_minus_{MASKED_REJECTED}"))
    rej["n_items"] = len({r["item_id"] for r in sub})
    rej["by_strategy"] = {s: sum(1 for r in sub if r[REJECTED].get("trace_strategy") == s)
                          for s in sorted({r[REJECTED].get("trace_strategy") or "?" for r in sub})}
    out["rejected"] = rej
    return out


def _texts_stats(pairs: list[tuple[str, str, str]], label_set: LabelSet) -> dict:
    """Leak counts of (text, own label, human label) triples: how many state their own (an unparsed own label: not
    stated) / the human label, how many the mask changes."""
    n = len(pairs)
    own = sum(label is not None and states_label(text, label_set, label) for text, label, _ in pairs)
    human = sum(states_label(text, label_set, h) for text, _, h in pairs)
    share = lambda k: json_float(k / n) if n else None  # noqa: E731
    return {"n": n, "states_own_label": own, "share_states_own_label": share(own), "states_human_label": human,
            "share_states_human_label": share(human),
            "masked": sum(mask(text, label_set) != text for text, _, _ in pairs)}


def leak_stats(traces: list[dict], attempts: list[dict], label_set: LabelSet) -> dict:
    """How often the checked traces state a label (`thinktrace.leak`): the accepted traces and the rejected trace
    each example shows the reader, and the leaks left after masking (0 unless the detector is broken)."""
    rejected = first_rejected(attempts)
    keys = list(dict.fromkeys(t["key"] for t in traces if t["key"] in rejected))
    human = {t["key"]: t["human"] for t in traces}
    acc = [(t["rationale"], t.get("label") or t["human"], t["human"]) for t in traces]
    rej = [(rejected[k]["rationale"], rejected[k].get("label"), human[k]) for k in keys]
    return {"accepted": _texts_stats(acc, label_set), "rejected": _texts_stats(rej, label_set),
            "residual_after_mask": sum(len(find_leaks(mask(text, label_set), label_set)) for text, _, _ in acc + rej),
            "placeholder": PLACEHOLDER}


def quality_metrics(traces: list[dict], done: dict, label_set: Sequence[str], *, reader: str, n_boot: int,
                    seed: int, leaks: dict | None = None) -> dict:
    """The `trace_quality` section of metrics.json: overall, per human label, counts, verdicts and warnings.
    `done`: {(condition, unit): settled record}; `leaks`: `leak_stats` of these traces."""
    rows = [{"human": t["human"], "item_id": t["item_id"], MASKED: _record(done, MASKED, trace_id(t)),
             WITH: _record(done, WITH, trace_id(t)), WITHOUT: _record(done, WITHOUT, t["item_id"]),
             MASKED_REJECTED: _record(done, MASKED_REJECTED, t["key"]), REJECTED: _record(done, REJECTED, t["key"])}
            for t in traces]
    records = list(done.values())
    out: dict = {"reader": reader, "n_traces": len(traces), "n_items": len({t["item_id"] for t in traces}),
                 "rule": RULE,
                 "n_errors": {c: sum(1 for r in records if r.get("condition") == c and r.get("error"))
                              for c in CONDITIONS},
                 "n_unparsed": {c: sum(1 for r in records if r.get("condition") == c and not r.get("error")
                                       and r.get("label") is None) for c in CONDITIONS},
                 "overall": _block(rows, n_boot, seed)}
    if leaks is not None:
        out["leaks"] = leaks
    out["per_label"] = {lab: _block([r for r in rows if r["human"] == lab], n_boot, seed)
                        for lab in label_set if any(r["human"] == lab for r in rows)}
    verdict = out["overall"]["moves_toward_human"]
    out["moves_toward_human"] = verdict
    out["raw_moves_toward_human"] = out["overall"]["raw_moves_toward_human"]
    out["warnings"] = [] if verdict in (True, None) else [warning_text(out)]
    if (leaks or {}).get("residual_after_mask"):
        out["warnings"].append(f"trace quality: {leaks['residual_after_mask']} label leaks are left in the masked "
                               "traces (thinktrace.leak): the masked condition is not free of copied labels")
    return out


def _fmt(est: dict | None) -> str:
    if not est or est.get("value") is None:
        return "n/a"
    low, high = est.get("ci") or [None, None]
    ci = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
    return f"{est['value']:.2f}{ci}"


def warning_text(q: dict) -> str:
    o = q["overall"]
    d = o.get(f"{MASKED}_minus_{WITHOUT}") or {}
    low, high = d.get("ci") or [None, None]
    ci = f" [{low:+.2f}, {high:+.2f}]" if low is not None and high is not None else " (no CI)"
    return (f"trace quality: the masked traces do not move the reader ({q['reader']}) toward the human label: it "
            f"returns the human label at {_fmt(o.get(MASKED))} with the masked trace (every statement of a label "
            f"masked) and {_fmt(o.get(WITHOUT))} without it, difference {d.get('diff') or 0:+.2f}{ci} on "
            f"{o.get('n')} traces; with the raw trace {_fmt(o.get(WITH))} (rule: the masked difference's CI must "
            "lie above 0)")
