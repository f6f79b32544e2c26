from pathlib import Path

from thinktrace.data import DataConfig, load_corpus
from thinktrace.traces import trainset

TOY = Path(__file__).resolve().parent / "data" / "toy_long.csv"


def corpus(**kw):
    cfg = DataConfig(source=str(TOY), label_set=["negative", "neutral", "positive"], **kw)
    return load_corpus(cfg, Path("."), seed=0)


def test_trainset_per_item_and_per_annotator():
    c = corpus()
    per_item = trainset(c)
    assert [e.key for e in per_item] == [it.item_id for it in c.split("train")]
    assert all(e.label == it.label for e, it in zip(per_item, c.split("train")))
    per_ann = trainset(c, per_annotator=True)
    assert len(per_ann) == sum(len(it.labels) for it in c.split("train"))
    assert len({e.key for e in per_ann}) == len(per_ann)
    first = c.split("train")[0]
    mine = [e for e in per_ann if e.item_id == first.item_id]
    assert [e.label for e in mine] == first.labels and [e.annotator for e in mine] == first.annotators
    assert [e.key for e in trainset(corpus(aggregate="each"))] == [e.key for e in per_ann]
    assert len(trainset(c, max_items=3)) == 3
    assert not {e.item_id for e in per_item} & {it.item_id for it in c.split("test")}


def test_trainset_caps_examples_per_label_keeping_the_first_in_order():
    from collections import Counter

    c = corpus()
    per_ann = trainset(c, per_annotator=True)
    counts = Counter(e.label for e in per_ann)
    assert max(counts.values()) > 1
    capped = trainset(c, per_annotator=True, max_per_label=1)
    assert Counter(e.label for e in capped) == {label: 1 for label in counts}
    first = {}
    for e in per_ann:
        first.setdefault(e.label, e.key)
    assert [e.key for e in capped] == [k for k in (e.key for e in per_ann) if k in set(first.values())]
    assert trainset(c, per_annotator=True, max_per_label=10_000) == per_ann


def test_a_run_samples_only_the_capped_examples(tmp_path):
    import json
    from collections import Counter

    from support import read_jsonl
    from support.specs import toy_spec, write_spec

    from thinktrace.compile import main

    spec = toy_spec(**{"sampling.per_annotator": True, "sampling.max_per_label": 2,
                       "sampling.strategy": "blind_then_hinted", "trace_quality.enabled": False,
                       "guidelines.enabled": False, "evaluate.max_items": 2})
    out = tmp_path / "run"
    assert main([str(write_spec(tmp_path, spec)), "--out", str(out)]) == 0
    capped = trainset(corpus(), per_annotator=True, max_per_label=2)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["traces"]["examples"] == len(capped) < len(trainset(corpus(), per_annotator=True))
    sampled = {a["key"] for a in read_jsonl(out / "attempts.jsonl")}
    assert sampled == {e.key for e in capped}  # nothing spent on the examples past the cap
    assert max(Counter(t["human"] for t in read_jsonl(out / "traces.jsonl")).values()) <= 2
