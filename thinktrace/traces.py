"""Artifacts of trace inference: the trace corpus (traces.jsonl), SFT rows in the exact inference format
(sft.jsonl, built with DSPy's ChatAdapter from the rater's own signature), and acceptance statistics."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Sequence

import dspy

from thinktrace.data import Corpus, Item
from thinktrace.records import ITEM, LABEL, RATIONALE


def trainset(corpus: Corpus, split: str = "train", per_annotator: bool = False,
             max_items: int | None = None) -> list[dspy.Example]:
    """Training examples for the teleprompter: one per item (gold label), or one per (item, annotator label) in
    per-annotator mode (`sampling.per_annotator`, or `data.aggregate: each`), so annotators who disagree get
    different traces."""
    per_annotator = per_annotator or corpus.aggregate == "each"
    items: list[Item] = corpus.split(split)
    if max_items:
        items = items[:max_items]
    examples = []
    for it in items:
        if per_annotator and it.labels:
            for n, (annotator, label) in enumerate(zip(it.annotators, it.labels)):
                who = annotator or f"#{n}"
                examples.append(dspy.Example(key=f"{it.item_id}::{who}", item_id=it.item_id, annotator=who,
                                             item=it.text, label=label, human_labels=list(it.labels)
                                             ).with_inputs("item"))
        else:
            examples.append(dspy.Example(key=it.item_id, item_id=it.item_id, annotator=None, item=it.text,
                                         label=it.label, human_labels=list(it.labels)).with_inputs("item"))
    return examples


def sft_rows(traces: Sequence[dict], signature, adapter: dspy.Adapter | None = None,
             with_rationale: bool = True) -> list[dict]:
    """Chat `messages` rows: system + user exactly as the adapter formats them at inference, the assistant turn
    the accepted trace and label. `with_rationale=False` gives the label-only ablation (rationale field dropped
    from the signature, so the prompt and the answer both lack it)."""
    adapter = adapter or dspy.ChatAdapter()
    sig = signature if with_rationale else signature.delete(RATIONALE)
    rows = []
    for t in traces:
        outputs = {RATIONALE: t[RATIONALE], LABEL: t[LABEL]} if with_rationale else {LABEL: t[LABEL]}
        row = adapter.format_finetune_data(sig, demos=[], inputs={ITEM: t[ITEM]}, outputs=outputs)
        rows.append({"messages": row["messages"], "key": t["key"], "item_id": t["item_id"], "label": t["label"]})
    return rows


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def acceptance_stats(attempts: Sequence[dict], examples: Sequence[dspy.Example]) -> dict:
    """Acceptance overall / per label / per strategy, LM samples per accepted trace, failures, unexplained."""
    by_key: dict[str, list[dict]] = defaultdict(list)
    for r in attempts:
        by_key[r["key"]].append(r)
    n_acc = sum(r["accepted"] for r in attempts)
    per_strategy: dict[str, dict] = {}
    for strategy in sorted({r["strategy"] for r in attempts}):
        rs = [r for r in attempts if r["strategy"] == strategy]
        acc = sum(r["accepted"] for r in rs)
        per_strategy[strategy] = {"attempts": len(rs), "accepted": acc, "rate": _rate(acc, len(rs)),
                                  "examples_explained": len({r["key"] for r in rs if r["accepted"]})}
    per_label: dict[str, dict] = {}
    for label in sorted({ex.label for ex in examples}):
        keys = [ex.key for ex in examples if ex.label == label]
        rs = [r for k in keys for r in by_key.get(k, [])]
        explained = sum(any(r["accepted"] for r in by_key.get(k, [])) for k in keys)
        per_label[label] = {"examples": len(keys), "explained": explained, "explained_rate": _rate(explained, len(keys)),
                            "attempts": len(rs), "accepted": sum(r["accepted"] for r in rs),
                            "rate": _rate(sum(r["accepted"] for r in rs), len(rs))}
    # per attempt index: how often the i-th attempt is accepted (for the acceptance-vs-attempt plot)
    by_index: dict[int, list[int]] = defaultdict(list)
    for r in attempts:
        by_index[r["attempt"]].append(int(r["accepted"]))
    errors = Counter((r.get("error") or "").split(":")[0] for r in attempts if r.get("error"))
    unexplained = [ex.key for ex in examples if not any(r["accepted"] for r in by_key.get(ex.key, []))]
    explained = len(examples) - len(unexplained)
    return {
        "examples": len(examples), "explained": explained, "explained_rate": _rate(explained, len(examples)),
        "attempts": len(attempts), "accepted": n_acc, "acceptance_rate": _rate(n_acc, len(attempts)),
        "samples_per_accepted_trace": round(len(attempts) / n_acc, 2) if n_acc else None,
        "failed": {"errors": sum(errors.values()), "by_type": dict(errors),
                   "unparsed": sum(1 for r in attempts if not r.get("error") and r.get("label") is None),
                   "no_rationale": sum(1 for r in attempts if not r.get("error") and not r.get("rationale"))},
        "per_strategy": per_strategy, "per_label": per_label,
        "by_attempt": {str(i): {"n": len(v), "rate": _rate(sum(v), len(v))} for i, v in sorted(by_index.items())},
        "unexplained": unexplained,
        "tokens": {k: sum((r.get("tokens") or {}).get(k, 0) for r in attempts) for k in ("prompt", "completion")},
    }
