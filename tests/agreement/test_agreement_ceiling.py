"""human_ceiling and majority: inter-annotator α and leave-one-annotator-out α."""

import json

import numpy as np
import pandas as pd
import pytest

from thinktrace.agreement import alpha, human_ceiling, majority
from thinktrace.labels import LabelSet

AB = LabelSet.of(["a", "b"], "nominal")


def _long(rows):
    return pd.DataFrame(rows, columns=["item_id", "annotator_id", "label"])


SMALL = _long(
    [
        ("i1", "A", "a"), ("i1", "B", "a"), ("i1", "C", "b"),
        ("i2", "A", "b"), ("i2", "B", "b"),
        ("i3", "A", "a"), ("i3", "C", "b"),
        ("i4", "B", "a"),  # a single label: not used
    ]
)  # fmt: skip


def test_majority_ties_follow_the_tie_break():
    assert majority(["b", "a"], AB, "lower") == "a" and majority(["b", "a"], AB, "upper") == "b"
    picks = {majority(["b", "a"], AB, key=f"item{k}") for k in range(20)}
    assert picks == {"a", "b"}  # nominal, half_even: by the item id's hash, not by label_set order
    assert majority(["2", "0"], LabelSet.of([0, 1, 2], "ordinal")) == "1"  # ordinal: the median of the tied labels
    assert majority(["b", "b", "a"], AB) == "b"
    assert majority(["b", None, "a", "b"], AB) == "b"
    with pytest.raises(ValueError, match="no labels"):
        majority([], AB)
    with pytest.raises(ValueError, match="not in label_set"):
        majority(["c"], AB)


def test_hand_computed_loo_alpha():
    # (annotator label, majority of the others): i1 A (a,a) B (a,a) C (b,a); i2 A (b,b) B (b,b); i3 A (a,b) C (b,a).
    # Coincidences: o_aa = 4, o_bb = 4, o_ab = o_ba = 3; n_a = n_b = 7, n = 14.
    # Nominal α = 1 - (n - 1) * (o_ab + o_ba) / (2 * n_a * n_b) = 1 - 13 * 6 / 98 = 10 / 49.
    out = human_ceiling(SMALL, AB, n_boot=50, tie_break="lower")  # the i1 tie (a, b) goes to a
    assert out["loo_alpha"]["value"] == pytest.approx(10 / 49) and out["tie_break"] == "lower"
    assert out["loo_alpha"]["n"] == 3 and out["n_loo_pairs"] == 7
    assert out["n_items"] == 4 and out["n_annotators"] == 3
    assert out["labels_per_item_mean"] == pytest.approx(8 / 4)
    matrix = np.array([[0, 1, 0, np.nan], [0, 1, np.nan, 0], [1, np.nan, 1, np.nan]])  # A, B, C x i1..i4
    assert out["inter_annotator_alpha"]["value"] == pytest.approx(alpha(matrix, "nominal"))
    json.dumps(out)


def test_none_when_no_item_has_two_labels():
    assert human_ceiling(_long([("i1", "A", "a"), ("i2", "B", "b")]), AB) is None
    assert human_ceiling(_long([]), AB) is None


def test_perfect_humans():
    rows = [(f"i{i}", ann, "ab"[i % 2]) for i in range(20) for ann in ("A", "B", "C")]
    out = human_ceiling(_long(rows), AB, n_boot=50)
    assert out["inter_annotator_alpha"]["value"] == 1.0 and out["inter_annotator_alpha"]["ci"] == [1.0, 1.0]
    assert out["loo_alpha"]["value"] == 1.0


def _naive_loo(long, label_set, aggregate, tie_break):
    values = {lab: label_set.value(lab) for lab in label_set.labels}
    own, agg = [], []
    for item_id, group in long.groupby("item_id"):
        labels = list(group["label"])
        if len(labels) < 2:
            continue
        for k, lab in enumerate(labels):
            others = labels[:k] + labels[k + 1 :]
            if aggregate == "majority":
                g = majority(others, label_set, tie_break, key=item_id)
            else:
                nums = [values[o] for o in others]
                g = label_set.nearest(float(np.mean(nums) if aggregate == "mean" else np.median(nums)), tie_break)
            own.append(values[lab])
            agg.append(values[g])
    return alpha(np.array([own, agg], float), label_set.level)


@pytest.mark.parametrize(
    "level, aggregate",
    [("nominal", "majority"), ("ordinal", "majority"), ("ordinal", "mean"), ("ordinal", "median"),
     ("interval", "mean"), ("interval", "median")],
)  # fmt: skip
@pytest.mark.parametrize("tie_break", ["half_even", "lower", "upper"])
def test_vectorized_loo_matches_naive_loop(level, aggregate, tie_break):
    ls = LabelSet.of([5, 1, 2, 4], level) if level == "interval" else LabelSet.of([0, 1, 2, 3], level)
    rng = np.random.default_rng(11)
    rows = []
    for i in range(60):
        truth = rng.integers(0, 4)
        for ann in rng.choice(6, size=rng.integers(1, 6), replace=False):
            lab = truth if rng.random() < 0.6 else rng.integers(0, 4)
            rows.append((f"i{i}", f"h{ann}", ls.labels[lab]))
    long = _long(rows)
    out = human_ceiling(long, ls, n_boot=0, aggregate=aggregate, tie_break=tie_break)
    assert out["loo_alpha"]["value"] == pytest.approx(_naive_loo(long, ls, aggregate, tie_break))
    pivot = long.assign(v=[ls.value(x) for x in long["label"]]).pivot(index="annotator_id", columns="item_id", values="v")
    assert out["inter_annotator_alpha"]["value"] == pytest.approx(alpha(pivot.to_numpy(float), level))


@pytest.mark.parametrize("aggregate", ["majority", "median", "mean"])
def test_loo_targets_are_the_gold_rule_and_symmetric(aggregate):
    """Leave-one-out targets are built by the gold rule: each (annotator label, target) pair is what
    `thinktrace.gold.gold_label` gives for the other annotators' labels. On a 3-rater corpus the others' median is
    often a midpoint; with the symmetric rule, mirroring the scale mirrors the targets (same α), while the old rule
    (every tie to the lower label) does not."""
    from thinktrace.agreement._ceiling import _item_counts, _loo_pair_rows
    from thinktrace.gold import gold_label

    ls = LabelSet.of([1, 2, 3, 4, 5], "ordinal")
    rng = np.random.default_rng(5)
    rows = [(f"i{i}", f"h{a}", ls.labels[int(rng.integers(0, 5))]) for i in range(80) for a in range(3)]
    long = _long(rows)
    counts, _, ids = _item_counts(long, ls)
    pairs = _loo_pair_rows(counts, ls, aggregate, "half_even", ids).reshape(len(ids), 5, 5)
    for k, (item_id, group) in enumerate(long.groupby("item_id", sort=False)):
        labels = list(group["label"])
        for j, lab in enumerate(labels):
            target = gold_label(labels[:j] + labels[j + 1:], ls, aggregate, "half_even", key=item_id).label
            assert pairs[k, ls.index(lab), ls.index(target)] > 0
    mirror = long.assign(label=[ls.labels[4 - ls.index(x)] for x in long["label"]])
    sym = [human_ceiling(d, ls, n_boot=0, aggregate=aggregate)["loo_alpha"]["value"] for d in (long, mirror)]
    assert sym[0] == pytest.approx(sym[1])
    old = [human_ceiling(d, ls, n_boot=0, aggregate=aggregate, tie_break="lower")["loo_alpha"]["value"]
           for d in (long, mirror)]
    assert old[0] != pytest.approx(old[1])


def test_the_run_metrics_ceiling_uses_the_corpus_tie_break(tmp_path):
    from thinktrace.data import load_corpus
    from thinktrace.data.config import DataConfig
    from thinktrace.metrics import split_metrics

    long = _long([(f"i{i}", f"h{a}", str(1 + (i + a) % 3)) for i in range(12) for a in range(3)])
    long.assign(text=[f"t {x}" for x in long["item_id"]]).to_csv(tmp_path / "d.csv", index=False)
    for rule in ("half_even", "lower"):
        corpus = load_corpus(DataConfig(source="d.csv", label_set=[1, 2, 3], level="ordinal", aggregate="median",
                                        tie_break=rule, split={"train": 0, "dev": 0, "test": 1}), tmp_path, 0)
        out = split_metrics(corpus, "test", corpus.split("test"), [], n_boot=0, seed=0, aggregate="median")
        expected = human_ceiling(corpus.long("test"), corpus.label_set, n_boot=0, aggregate="median", tie_break=rule)
        assert out["human_ceiling"]["tie_break"] == rule and out["human_ceiling"] == expected


def test_bootstrap_deterministic_and_ci_brackets_value():
    rng = np.random.default_rng(2)
    rows = [(f"i{i}", f"h{a}", "ab"[int(rng.random() < 0.3) ^ (i % 2)]) for i in range(80) for a in range(4)]
    long = _long(rows)
    one = human_ceiling(long, AB, n_boot=200, seed=1)
    assert one == human_ceiling(long, AB, n_boot=200, seed=1)
    est = one["inter_annotator_alpha"]
    assert est["ci"][0] < est["value"] < est["ci"][1]


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="lacks column"):
        human_ceiling(pd.DataFrame({"item_id": [1], "label": ["a"]}), AB)
    with pytest.raises(ValueError, match="not in label_set"):
        human_ceiling(_long([("i1", "A", "a"), ("i1", "B", "z")]), AB)
    with pytest.raises(ValueError, match="aggregate must be one of"):
        human_ceiling(SMALL, AB, aggregate="mode")
    with pytest.raises(ValueError, match="ordinal or interval"):
        human_ceiling(SMALL, AB, aggregate="mean")
    with pytest.raises(ValueError, match="DataFrame"):
        human_ceiling([("i1", "A", "a")], AB)
    with pytest.raises(ValueError, match="tie_break must be one of"):
        human_ceiling(SMALL, AB, tie_break="down")
