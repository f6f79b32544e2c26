"""Agreement metrics of a run, computed from its prediction records: per split and rater, α with CI and the
task's other metrics (Kendall's τ-b and ICC(3,1) among them; None = n/a on nominal labels), parse failures and LM
errors, the human ceiling and the agreement among LLM raters (α and ICC)."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from thinktrace.agreement import (human_ceiling, inter_rater_alpha, inter_rater_icc, paired_difference,
                                  paired_inter_rater_difference, paired_inter_rater_icc_difference, rater_vs_human)
from thinktrace.data import Corpus, Item

# comparisons: metric -> key of its nested paired difference (α's is the comparison entry itself)
DIFF_KEYS = {"kendall_tau_b": "kendall_tau_b_diff", "icc": "icc_diff"}


def rater_metrics(items: Sequence[Item], records: Sequence[dict], corpus: Corpus, *, n_boot: int,
                  seed: int) -> dict:
    """Metrics of one rater on `items`, in item order; an item without a record counts as unparsed."""
    by_id = {r["item_id"]: r for r in records}
    human = [it.label for it in items]
    rater = labels_of(items, records)
    result = rater_vs_human(human, rater, corpus.label_set, n_boot=n_boot, seed=seed)
    result["n_errors"] = sum(1 for it in items if by_id.get(it.item_id, {}).get("error"))
    result["n_label_by_choice"] = sum(1 for it in items if by_id.get(it.item_id, {}).get("label_source") == "choice")
    result["n_missing"] = sum(1 for it in items if it.item_id not in by_id)
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

    α's difference is the entry itself (metric, value_a, value_b, diff, ci, p_b_not_better, n); the τ-b and ICC(3,1)
    differences are nested under `DIFF_KEYS` with the same fields, drawn on the same resamples (same seed and items).
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
                          "p_b_not_better": d["p_b_not_better"], "n": d["n"]}
        out.append(entry)
    return out


def split_metrics(corpus: Corpus, split: str, items: Sequence[Item], records: Sequence[dict], *, n_boot: int,
                  seed: int, aggregate: str, pairs: Sequence[tuple[str, str]] = (),
                  inter_rater_groups: dict[str, list[str]] | None = None) -> dict:
    per_rater: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["split"] == split:
            per_rater[r["rater"]].append(r)
    raters = {name: rater_metrics(items, recs, corpus, n_boot=n_boot, seed=seed) for name, recs in per_rater.items()}
    ids = {it.item_id for it in items}
    long = corpus.long(split)
    long = long[long["item_id"].isin(ids)]
    ceiling = human_ceiling(long, corpus.label_set, n_boot=n_boot, seed=seed,
                            aggregate="majority" if aggregate == "each" else aggregate) if len(long) else None
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
