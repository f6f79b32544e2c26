"""The shuffled-trace control (`finetune.ablation_shuffled`, `<base>+shuffled-trace-sft`): trace-sft's rows with
each rationale moved to another item of the same label, a deterministic derangement seeded by the run seed; the
plan names the adapter and its pairing with trace-sft. (The toy run that trains and evaluates it: the `clean` run of
tests/test_self_traces.py.)"""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
from support.specs import toy_spec, write_spec

from thinktrace.traces import shuffled_rationales


def trace(item: str, label: str, n: int = 0) -> dict:
    return {"key": item, "item_id": item, "item": f"text {item}", "human": label, "label": label,
            "rationale": f"why {item} is {label} #{n}", "strategy": "blind", "attempt": n}


def corpus() -> list[dict]:
    """A: 6 items; B: 3 items, one of them with 2 traces (keep 2); C: a single trace; D: one item with 3 traces and
    another with 1 (more than half on one item); E: 2 traces of one item."""
    return ([trace(f"a{i}", "A") for i in range(6)] + [trace("b0", "B"), trace("b0", "B", 1), trace("b1", "B"),
                                                       trace("b2", "B")]
            + [trace("c0", "C")] + [trace("d0", "D", n) for n in range(3)] + [trace("d1", "D")]
            + [trace("e0", "E"), trace("e0", "E", 1)])


def test_same_rows_labels_and_rationales_per_label_none_left_on_its_item():
    traces = corpus()
    out = shuffled_rationales(traces, seed=0)
    assert [(t["key"], t["item_id"], t["item"], t["label"], t["attempt"]) for t in out] == \
        [(t["key"], t["item_id"], t["item"], t["label"], t["attempt"]) for t in traces]
    def per_label(rows):
        return {lab: Counter(t["rationale"] for t in rows if t["label"] == lab) for lab in "ABCDE"}
    assert per_label(out) == per_label(traces)  # the same rationales per label, each used once
    by_label = defaultdict(list)
    for t in out:
        by_label[t["label"]].append(t)
    for lab in "AB":  # two or more items, none holding more than half: every rationale moves to another item
        assert all(t["rationale_moved"] and t["rationale_item_id"] != t["item_id"] for t in by_label[lab])
    assert not any(t["rationale_moved"] for t in by_label["C"] + by_label["E"])  # nowhere to go: kept, counted
    assert [t["rationale"] for t in by_label["C"]] == ["why c0 is C #0"]
    d = by_label["D"]  # 3 traces of d0, 1 of d1: d1 and one d0 swap, the other two d0 traces keep theirs
    assert sum(t["rationale_moved"] for t in d) == 2
    assert all(t["rationale_item_id"] != t["item_id"] for t in d if t["rationale_moved"])
    assert all(t["rationale"] == f"why {t['item_id']} is D #{t['attempt']}" for t in d if not t["rationale_moved"])
    for t in out:  # where each rationale came from is recorded
        src = next(s for s in traces if (s["key"], s["attempt"]) == (t["rationale_key"], t["rationale_attempt"]))
        assert src["rationale"] == t["rationale"] and src["item_id"] == t["rationale_item_id"]
    assert traces == corpus()  # the input is left as it was


def test_deterministic_per_seed():
    traces = corpus()
    assert shuffled_rationales(traces, 0) == shuffled_rationales(traces, 0)
    assert [t["rationale"] for t in shuffled_rationales(traces, 0)] != \
        [t["rationale"] for t in shuffled_rationales(traces, 1)]
    assert shuffled_rationales([], 0) == []


@pytest.mark.parametrize("ablation", [True, False])
def test_the_plan_names_the_shuffled_adapter(tmp_path, ablation):
    from thinktrace.data import load_corpus
    from thinktrace.spec import load_spec
    from thinktrace.run.stages import FinetuneStage, plan_stages

    path = write_spec(tmp_path, toy_spec(**{"finetune": {"enabled": True, "base": "smollm2-135m",
                                                         "ablation_shuffled": ablation}}))
    loaded = load_spec(path)
    plan = plan_stages(loaded.spec, load_corpus(loaded.spec.data, loaded.base_dir, loaded.spec.seed))
    assert ("shuffled-trace-sft" in plan["finetune"]["adapters"]) is ablation
    assert ("smollm2-135m+shuffled-trace-sft" in plan["evaluate"]["variants"]) is ablation
    assert "shuffled-trace-sft" in FinetuneStage.against["trace-sft"]  # paired: trace-sft − shuffled-trace-sft
