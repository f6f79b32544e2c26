"""Artifacts of trace inference: the trace corpus (traces.jsonl), SFT rows in the exact inference format
(sft.jsonl, built with DSPy's ChatAdapter from the rater's own signature), the shuffled-trace control's traces
(`shuffled_rationales`), and acceptance statistics."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Sequence

import dspy

from thinktrace.data import Corpus, Item
from thinktrace.records import ITEM, LABEL, RATIONALE, record_cut


def trainset(corpus: Corpus, split: str = "train", per_annotator: bool = False,
             max_items: int | None = None, max_per_label: int | None = None) -> list[dspy.Example]:
    """Training examples for the teleprompter: one per item (gold label), or one per (item, annotator label) in
    per-annotator mode (`sampling.per_annotator`, or `data.aggregate: each`), so annotators who disagree get
    different traces. `max_per_label`: at most that many examples per label, the first ones in split order."""
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
    return cap_per_label(examples, max_per_label)


def cap_per_label(examples: Sequence, cap: int | None) -> list:
    """The first `cap` examples (train examples, traces or rows: anything with a `label`) of each label, in their
    order; all of them when `cap` is None. Sampling (`sampling.max_per_label`) and fine-tuning
    (`finetune.max_per_label`) cap with it."""
    if not cap:
        return list(examples)
    seen: dict[str, int] = {}
    out = []
    for ex in examples:
        label = str(ex.get("label"))
        if seen.get(label, 0) < cap:
            seen[label] = seen.get(label, 0) + 1
            out.append(ex)
    return out


def sft_rows(traces: Sequence[dict], signature, adapter: dspy.Adapter | None = None,
             with_rationale: bool = True, with_label: bool = True, task: str | None = None) -> list[dict]:
    """Chat `messages` rows: system + user exactly as the adapter formats them at inference, the assistant turn
    the accepted trace and label. `with_rationale=False` gives the label-only ablation (rationale field dropped
    from the signature, so the prompt and the answer both lack it); `with_label=False` the rationale task of the
    multitask format (the label field dropped: the prompt asks for the rationale alone). `task` is recorded on
    each row (the multitask format's `label` / `rationale`)."""
    adapter = adapter or dspy.ChatAdapter()
    if not (with_rationale or with_label):
        raise ValueError("a row needs a rationale or a label to answer with")
    sig = signature if with_rationale else signature.delete(RATIONALE)
    sig = sig if with_label else sig.delete(LABEL)
    rows = []
    for t in traces:
        outputs = {k: t[k] for k in (RATIONALE, LABEL) if k in sig.output_fields}
        row = adapter.format_finetune_data(sig, demos=[], inputs={ITEM: t[ITEM]}, outputs=outputs)
        rows.append({"messages": row["messages"], "key": t["key"], "item_id": t["item_id"], "label": t["label"],
                     **({"task": task} if task else {})})
    return rows


def shuffled_rationales(traces: Sequence[dict], seed: int) -> list[dict]:
    """The shuffled-trace control (`<base>+shuffled-trace-sft`): the same traces in the same order, with the same
    items and labels, each rationale moved to the trace of another item with the same label, so the rows keep
    their number, labels and the multiset of rationales per label but a rationale no longer explains its item.

    Per label: the traces are ordered by item (item order and order within an item seeded by `seed` and the
    label), largest item first, and each takes the rationale `m` places on in that cyclic order, `m` the most
    traces one item has: a deterministic derangement in which no rationale stays on its own item. Where one item
    holds more than half of the label's traces (a label with a single trace or a single item, in particular),
    only 2 x (the others) can move; the rest of that item's traces keep their own rationale and are counted
    (`rationale_moved` False), so the control keeps trace-sft's rows. Each returned trace says where its
    rationale came from (`rationale_item_id`, `rationale_key`, `rationale_attempt`) and `rationale_moved`."""
    out = [dict(t, rationale_item_id=t["item_id"], rationale_key=t["key"], rationale_attempt=t.get("attempt"),
                rationale_moved=False) for t in traces]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(traces):
        groups[str(t[LABEL])].append(i)
    for label, indices in groups.items():
        rng = random.Random(f"shuffled-trace|{seed}|{label}")
        by_item: dict[str, list[int]] = defaultdict(list)
        for i in indices:
            by_item[str(traces[i]["item_id"])].append(i)
        items = sorted(by_item)
        rng.shuffle(items)
        for item in items:
            rng.shuffle(by_item[item])
        items.sort(key=lambda item: -len(by_item[item]))  # stable: the seeded order among items of one size
        order = [i for item in items for i in by_item[item]]
        n, m = len(order), len(by_item[items[0]])
        if m > n - m:  # the largest item cannot give every one of its traces a rationale of another item
            order, m = order[:n - m] + order[m:], n - m
        for pos, i in enumerate(order):
            src = traces[order[(pos + m) % len(order)]]
            out[i].update(rationale=src[RATIONALE], rationale_item_id=src["item_id"], rationale_key=src["key"],
                          rationale_attempt=src.get("attempt"), rationale_moved=True)
    return out


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _cut_counts(attempts: Sequence[dict]) -> dict:
    """Answered attempts whose answer was cut (`thinktrace.records.record_cut`): all of them, those accepted
    anyway (`sampling.accept_cut`), and those rejected although their label matched the human's (traces lost to
    the cut). `label_source_choice`: of the cut ones, those whose label was written under the grammar."""
    cut = [r for r in attempts if not r.get("error") and record_cut(r)]
    lost = [r for r in cut if not r["accepted"] and r.get("rationale")
            and (r["label_match"] if r.get("label_match") is not None else r.get("label") == r.get("human"))]
    return {"attempts": len(cut), "accepted": sum(bool(r["accepted"]) for r in cut),
            "label_matched_rejected": len(lost), "label_source_choice": sum(1 for r in cut if r.get("label_source") == "choice")}


def acceptance_stats(attempts: Sequence[dict], examples: Sequence[dspy.Example]) -> dict:
    """Acceptance overall / per label / per strategy, LM samples per accepted trace, failures, unexplained, cut
    answers (`cut`: overall; `per_strategy[s]["cut"]`: per strategy; see `_cut_counts`)."""
    by_key: dict[str, list[dict]] = defaultdict(list)
    for r in attempts:
        by_key[r["key"]].append(r)
    n_acc = sum(r["accepted"] for r in attempts)
    per_strategy: dict[str, dict] = {}
    for strategy in sorted({r["strategy"] for r in attempts}):
        rs = [r for r in attempts if r["strategy"] == strategy]
        acc = sum(r["accepted"] for r in rs)
        per_strategy[strategy] = {"attempts": len(rs), "accepted": acc, "rate": _rate(acc, len(rs)),
                                  "examples_explained": len({r["key"] for r in rs if r["accepted"]}),
                                  "cut": _cut_counts(rs)}
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
        "cut": _cut_counts(attempts),
        "per_strategy": per_strategy, "per_label": per_label,
        "by_attempt": {str(i): {"n": len(v), "rate": _rate(sum(v), len(v))} for i, v in sorted(by_index.items())},
        "unexplained": unexplained,
        "tokens": {k: sum((r.get("tokens") or {}).get(k, 0) for r in attempts) for k in ("prompt", "completion")},
    }
