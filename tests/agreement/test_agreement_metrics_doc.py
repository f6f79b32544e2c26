"""The evaluation's metrics document (thinktrace.metrics.split_metrics, what metrics.json holds per split) carries
Kendall's τ-b and ICC(3,1) per rater, their paired differences, ICC among raters and its before/after change."""

import json

import numpy as np

from thinktrace.agreement import inter_rater_icc, paired_difference, rater_vs_human
from thinktrace.data import Corpus, Item
from thinktrace.labels import LabelSet
from thinktrace.metrics import split_metrics

ORD = LabelSet.of([1, 2, 3, 4, 5], "ordinal")
NOMINAL = LabelSet.of(["neg", "neu", "pos"], "nominal")
GROUPS = {"baseline": ["a", "b"], "refined-guideline": ["a+refined", "b+refined"]}
PAIRS = [("a", "a+refined"), ("b", "b+refined")]


def _run(label_set, n=40, seed=0):
    """A corpus of n test items (3 human labels each) and prediction records of four raters, one unparsed each."""
    rng = np.random.default_rng(seed)
    v = len(label_set)
    items, records = [], []
    for i in range(n):
        labels = [label_set.labels[c] for c in np.clip(rng.integers(0, v) + rng.integers(-1, 2, 3), 0, v - 1)]
        gold = max(set(labels), key=labels.count)
        items.append(Item(f"t{i:03d}", f"text {i}", gold, labels, ["h0", "h1", "h2"], "test"))
        for name, noise in (("a", 2), ("b", 2), ("a+refined", 1), ("b+refined", 1)):
            code = int(np.clip(label_set.labels.index(gold) + rng.integers(-noise, noise + 1), 0, v - 1))
            label = None if i == len(name) else label_set.labels[code]
            records.append({"item_id": f"t{i:03d}", "split": "test", "rater": name, "label": label})
    corpus = Corpus(items=items, label_set=label_set, per_annotator=True, stats={})
    doc = split_metrics(corpus, "test", items, records, n_boot=100, seed=0, aggregate="majority", pairs=PAIRS,
                        inter_rater_groups=GROUPS)
    return json.loads(json.dumps(doc, allow_nan=False)), items, records


def _labels(items, records, name):
    by_id = {r["item_id"]: r["label"] for r in records if r["rater"] == name}
    return [by_id[it.item_id] for it in items]


def test_ordinal_document_carries_tau_and_icc():
    doc, items, records = _run(ORD)
    human = [it.label for it in items]
    for name, rater in doc["raters"].items():
        for key in ("kendall_tau_b", "icc"):
            assert set(rater[key]) == {"value", "ci", "n", "n_boot", "n_valid", "ci_undefined"}
            assert isinstance(rater[key]["value"], float)
            assert rater[key]["n"] == 39
        assert rater["icc"] == rater_vs_human(human, _labels(items, records, name), ORD, n_boot=100)["icc"]
    comp = doc["comparisons"][0]
    assert (comp["a"], comp["b"]) == ("a", "a+refined")
    for key, metric in (("kendall_tau_b_diff", "kendall_tau_b"), ("icc_diff", "icc")):
        assert set(comp[key]) == {"value_a", "value_b", "diff", "ci", "p_b_not_better", "p_two_sided", "n", "n_boot",
                                  "n_valid", "ci_undefined"}
        assert comp[key]["value_a"] == doc["raters"]["a"][metric]["value"]
        assert comp[key]["value_b"] == doc["raters"]["a+refined"][metric]["value"]
        la, lb = _labels(items, records, "a"), _labels(items, records, "a+refined")
        assert comp[key]["ci"] == paired_difference(human, la, lb, ORD, metric=metric, n_boot=100)["ci"]
    for group, names in GROUPS.items():
        icc = doc["inter_rater"][group]["icc"]
        assert set(icc) == {"value", "ci", "n", "n_boot", "n_valid", "ci_undefined", "raters", "n_incomplete"}
        assert icc["raters"] == names
        assert icc == inter_rater_icc({n: _labels(items, records, n) for n in names}, ORD, n_boot=100)
    change = doc["inter_rater_change"]["icc_diff"]
    assert set(change) == {"before", "after", "diff", "ci", "p_after_not_better", "p_two_sided", "n", "n_boot",
                           "n_valid", "ci_undefined"}
    assert change["before"] is not None and change["n"] == 38  # items complete in both groups


def test_nominal_document_says_none():
    doc, _, _ = _run(NOMINAL, seed=1)
    for rater in doc["raters"].values():
        assert rater["kendall_tau_b"]["value"] is None and rater["icc"]["ci"] == [None, None]
        assert rater["alpha"]["value"] is not None
    assert doc["comparisons"][1]["icc_diff"]["diff"] is None
    assert doc["comparisons"][1]["kendall_tau_b_diff"]["value_a"] is None
    assert doc["inter_rater"]["baseline"]["icc"]["value"] is None
    assert doc["inter_rater_change"]["icc_diff"]["diff"] is None and doc["inter_rater_change"]["diff"] is not None
