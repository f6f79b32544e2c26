"""Agreement metrics of a run, computed from its prediction records: per split and rater, α with CI and the
task's other metrics, parse failures and LM errors, the human ceiling and the agreement among LLM raters."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from thinktrace.agreement import (human_ceiling, inter_rater_alpha, paired_difference, paired_inter_rater_difference,
                                  rater_vs_human)
from thinktrace.data import Corpus, Item


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
    """Paired-bootstrap difference in α (b - a) on the same items, for each (a, b) pair with records for both."""
    human = [it.label for it in items]
    out = []
    for a, b in pairs:
        if a not in per_rater or b not in per_rater:
            continue
        la, lb = labels_of(items, per_rater[a]), labels_of(items, per_rater[b])
        diff = paired_difference(human, la, lb, corpus.label_set, metric="alpha", n_boot=n_boot, seed=seed)
        out.append({**diff, "a": a, "b": b, "value_a": diff["a"], "value_b": diff["b"]})
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
            inter[group] = inter_rater_alpha({n: labels[n] for n in names}, corpus.label_set, n_boot=n_boot,
                                             seed=seed)
    result = {"n_items": len(items), "raters": raters, "human_ceiling": ceiling, "inter_rater": inter or None,
              "comparisons": comparisons(items, per_rater, pairs, corpus, n_boot=n_boot, seed=seed)}
    groups = inter_rater_groups or {}
    before = [n for n in groups.get("baseline", []) if n in per_rater]
    after = [n for n in groups.get("refined-guideline", []) if n in per_rater]
    if len(before) >= 2 and len(after) >= 2:  # the same raters with the original vs the refined guideline
        result["inter_rater_change"] = {
            "a": "baseline", "b": "refined-guideline",
            **paired_inter_rater_difference({n: labels[n] for n in before}, {n: labels[n] for n in after},
                                            corpus.label_set, n_boot=n_boot, seed=seed)}
    return result
