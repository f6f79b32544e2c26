"""Agreement metrics of a run, computed from its prediction records: per split and rater, α with CI and the
task's other metrics (Kendall's τ-b and ICC(3,1) among them; None = n/a on nominal labels), parse failures and LM
errors, the human ceiling and the agreement among LLM raters (α and ICC).

Two checks say when a rater's numbers do not measure a rater (`evaluate.min_parse_rate`, `evaluate.collapse_share`,
`evaluate.collapse_spread`; the report and the exit code read them):
  parse rate   parsed answers / answers (records without an LM error; an LM error is a failed call, counted against
               `calls.max_failed`). Below `min_parse_rate` the variant failed (`parse_failed`: exit 4, like final LM
               failures), e.g. a model that answers "The label must be one of: ..." for every item.
  collapse     the rater's most frequent answer covers share r of its parsed answers, the gold's most frequent label
               share g of the items. Collapsed when r >= max(collapse_share, 1 - collapse_spread * (1 - g)): the
               rater leaves at most `collapse_spread` (a third) as many answers off its top label as the gold leaves
               items off its own. Relative, so a concentrated gold is not a collapse: gold at 78 % one label
               (ConvAbuse) needs r >= 92.7 % (a rater at 90 % is not flagged); gold at 70 % or less needs r >= 90 %.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from thinktrace.agreement import (human_ceiling, inter_rater_alpha, inter_rater_icc, paired_difference,
                                  paired_inter_rater_difference, paired_inter_rater_icc_difference, rater_vs_human)
from thinktrace.data import Corpus, Item

# comparisons: metric -> key of its nested paired difference (α's is the comparison entry itself)
DIFF_KEYS = {"kendall_tau_b": "kendall_tau_b_diff", "icc": "icc_diff"}


#: the defaults of the checks (`thinktrace.spec.EvaluateConfig` has the same)
MIN_PARSE_RATE, COLLAPSE_SHARE, COLLAPSE_SPREAD = 0.9, 0.9, 1 / 3


def top_label(labels: Sequence[str | None], order: Sequence[str]) -> tuple[str | None, int, int]:
    """(most frequent label, its count, labels counted), None labels left out; ties: the earliest in `order`."""
    seen = [str(x) for x in labels if x is not None]
    if not seen:
        return None, 0, 0
    rank = {lab: i for i, lab in enumerate(order)}
    counts: dict[str, int] = defaultdict(int)
    for x in seen:
        counts[x] += 1
    top = min(counts, key=lambda lab: (-counts[lab], rank.get(lab, len(rank)), lab))
    return top, counts[top], len(seen)


def collapse(human: Sequence[str], rater: Sequence[str | None], order: Sequence[str], *,
             share: float = COLLAPSE_SHARE, spread: float = COLLAPSE_SPREAD) -> dict | None:
    """How concentrated the rater's parsed answers are against the gold labels of the same items (the rule in the
    module docstring); None when nothing parsed."""
    top, count, n = top_label(rater, order)
    if not n:
        return None
    gold, gold_count, gold_n = top_label(human, order)
    gold_share = gold_count / gold_n if gold_n else 0.0
    threshold = max(share, 1 - spread * (1 - gold_share))
    return {"top_label": top, "top_count": count, "n": n, "share": round(count / n, 4), "gold_top_label": gold,
            "gold_top_share": round(gold_share, 4), "threshold": round(threshold, 4),
            "collapsed": count / n >= threshold - 1e-12}


def rater_metrics(items: Sequence[Item], records: Sequence[dict], corpus: Corpus, *, n_boot: int,
                  seed: int, min_parse_rate: float = MIN_PARSE_RATE, collapse_share: float = COLLAPSE_SHARE,
                  collapse_spread: float = COLLAPSE_SPREAD) -> dict:
    """Metrics of one rater on `items`, in item order; an item without a record counts as unparsed. With the
    checks of the module docstring: n_answers, parse_rate (None: no answer), parse_failed and collapse."""
    by_id = {r["item_id"]: r for r in records}
    human = [it.label for it in items]
    rater = labels_of(items, records)
    result = rater_vs_human(human, rater, corpus.label_set, n_boot=n_boot, seed=seed)
    result["n_errors"] = sum(1 for it in items if by_id.get(it.item_id, {}).get("error"))
    result["n_label_by_choice"] = sum(1 for it in items if by_id.get(it.item_id, {}).get("label_source") == "choice")
    result["n_missing"] = sum(1 for it in items if it.item_id not in by_id)
    n_answers = len(items) - result["n_errors"] - result["n_missing"]
    n_parsed = sum(1 for it, x in zip(items, rater) if x is not None and not by_id[it.item_id].get("error"))
    result["n_answers"] = n_answers
    result["parse_rate"] = round(n_parsed / n_answers, 4) if n_answers > 0 else None
    result["parse_failed"] = n_answers > 0 and n_parsed / n_answers < min_parse_rate
    result["collapse"] = collapse(human, rater, corpus.label_set.labels, share=collapse_share, spread=collapse_spread)
    result["tokens"] = {k: sum((r.get("tokens") or {}).get(k, 0) for r in records) for k in ("prompt", "completion")}
    lat = sorted(r.get("latency_s") or 0.0 for r in records)
    result["latency_s_median"] = lat[len(lat) // 2] if lat else None
    return result


def labels_of(items: Sequence[Item], records: Sequence[dict]) -> list[str | None]:
    """The rater's parsed label per item, in item order (None: unparsed or no record)."""
    by_id = {r["item_id"]: r.get("label") for r in records}
    return [by_id.get(it.item_id) for it in items]


def comparisons(items: Sequence[Item], per_rater: dict[str, list[dict]], pairs: Sequence[tuple[str, str]],
                corpus: Corpus, *, n_boot: int, seed: int) -> list[dict]:
    """Paired-bootstrap difference (b - a) on the same items, for each (a, b) pair with records for both.

    α's difference is the entry itself (metric, value_a, value_b, diff, ci, p_b_not_better, p_two_sided, n, n_boot,
    n_valid, ci_undefined; see `paired_difference`); the τ-b and ICC(3,1) differences are nested under `DIFF_KEYS`
    with the same fields, drawn on the same resamples (same seed and items).
    """
    human = [it.label for it in items]
    out = []
    for a, b in pairs:
        if a not in per_rater or b not in per_rater:
            continue
        la, lb = labels_of(items, per_rater[a]), labels_of(items, per_rater[b])
        diff = paired_difference(human, la, lb, corpus.label_set, metric="alpha", n_boot=n_boot, seed=seed)
        entry = {**diff, "a": a, "b": b, "value_a": diff["a"], "value_b": diff["b"]}
        for metric, key in DIFF_KEYS.items():
            d = paired_difference(human, la, lb, corpus.label_set, metric=metric, n_boot=n_boot, seed=seed)
            entry[key] = {"value_a": d["a"], "value_b": d["b"], "diff": d["diff"], "ci": d["ci"],
                          "p_b_not_better": d["p_b_not_better"], "p_two_sided": d["p_two_sided"], "n": d["n"],
                          "n_boot": d["n_boot"], "n_valid": d["n_valid"], "ci_undefined": d["ci_undefined"]}
        out.append(entry)
    return out


def split_metrics(corpus: Corpus, split: str, items: Sequence[Item], records: Sequence[dict], *, n_boot: int,
                  seed: int, aggregate: str, pairs: Sequence[tuple[str, str]] = (),
                  inter_rater_groups: dict[str, list[str]] | None = None, min_parse_rate: float = MIN_PARSE_RATE,
                  collapse_share: float = COLLAPSE_SHARE, collapse_spread: float = COLLAPSE_SPREAD) -> dict:
    per_rater: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["split"] == split:
            per_rater[r["rater"]].append(r)
    checks = {"min_parse_rate": min_parse_rate, "collapse_share": collapse_share, "collapse_spread": collapse_spread}
    raters = {name: rater_metrics(items, recs, corpus, n_boot=n_boot, seed=seed, **checks)
              for name, recs in per_rater.items()}
    ids = {it.item_id for it in items}
    long = corpus.long(split)
    long = long[long["item_id"].isin(ids)]
    ceiling = human_ceiling(long, corpus.label_set, n_boot=n_boot, seed=seed,
                            aggregate="majority" if aggregate == "each" else aggregate,
                            tie_break=corpus.tie_break) if len(long) else None
    labels = {n: labels_of(items, recs) for n, recs in per_rater.items()}  # item order, None = unparsed
    inter = {}
    for group, names in (inter_rater_groups or {"all": list(per_rater)}).items():
        names = [n for n in names if n in per_rater]
        if len(names) >= 2:
            group_labels = {n: labels[n] for n in names}
            inter[group] = inter_rater_alpha(group_labels, corpus.label_set, n_boot=n_boot, seed=seed)
            inter[group]["icc"] = inter_rater_icc(group_labels, corpus.label_set, n_boot=n_boot, seed=seed)
    result = {"n_items": len(items), "raters": raters, "human_ceiling": ceiling, "inter_rater": inter or None,
              "comparisons": comparisons(items, per_rater, pairs, corpus, n_boot=n_boot, seed=seed)}
    groups = inter_rater_groups or {}
    before = [n for n in groups.get("baseline", []) if n in per_rater]
    after = [n for n in groups.get("refined-guideline", []) if n in per_rater]
    if len(before) >= 2 and len(after) >= 2:  # the same raters with the original vs the refined guideline
        lb, la = {n: labels[n] for n in before}, {n: labels[n] for n in after}
        result["inter_rater_change"] = {
            "a": "baseline", "b": "refined-guideline",
            **paired_inter_rater_difference(lb, la, corpus.label_set, n_boot=n_boot, seed=seed),
            "icc_diff": paired_inter_rater_icc_difference(lb, la, corpus.label_set, n_boot=n_boot, seed=seed)}
    return result


def failed_variants(splits: dict) -> list[dict]:
    """The variants whose parse rate fell below `evaluate.min_parse_rate`, per split (split order, then name):
    {"split", "variant", "parsed", "n_answers", "parse_rate"}."""
    out = []
    for split, m in splits.items():
        for name, r in ((m or {}).get("raters") or {}).items():
            if r.get("parse_failed"):
                out.append({"split": split, "variant": name, "parsed": r["n_items"] - r.get("n_unparsed", 0),
                            "n_answers": r.get("n_answers", 0), "parse_rate": r.get("parse_rate")})
    return out
