"""`data.lead`: items shown as their head and the lead of their body, grouped by body (Newsroom's 7 summaries of
one article), and the three benchmark specs of issue 27 (each must pass --dry-run)."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError
from support import shared_datasets

from thinktrace.data import DataConfig, load_corpus
from thinktrace.errors import DataError

ROOT = Path(__file__).resolve().parent.parent
SENT = ["neg", "neu", "pos"]


def summaries(n_articles: int = 12, per: int = 7) -> pd.DataFrame:
    rng = random.Random(3)
    rows = []
    for a in range(n_articles):
        body = " ".join(f"w{a}_{k}" for k in range(200))
        for s in range(per):
            for ann in range(3):
                rows.append({"item_id": f"n{a}-{s}", "text": f"Generated summary:\nsummary {s} of {a}\n\n"
                             f"Source article:\nTitle {a}\n{body}", "annotator_id": f"p{ann}",
                             "label": rng.choice(SENT)})
    return pd.DataFrame(rows)


def load(tmp_path, frame, **kw):
    frame.to_csv(tmp_path / "d.csv", index=False)
    return load_corpus(DataConfig(source="d.csv", label_set=SENT, **kw), tmp_path, 0)


def test_the_lead_keeps_the_head_and_the_first_words_of_the_body(tmp_path):
    corpus = load(tmp_path, summaries(), lead={"marker": "Source article:", "words": 10})
    item = next(it for it in corpus.items if it.item_id == "n3-2")
    assert item.text == ("Generated summary:\nsummary 2 of 3\n\nSource article:\nTitle 3 "
                         + " ".join(f"w3_{k}" for k in range(8)) + " …")  # "Title 3" + 8 = 10 words
    short = load(tmp_path, summaries(), lead={"marker": "Source article:", "words": 500})
    assert not any(it.text.endswith("…") for it in short.items)  # a body within the limit is not marked as cut


def test_group_by_body_keeps_an_articles_summaries_in_one_split(tmp_path):
    corpus = load(tmp_path, summaries(), split={"train": 0.5, "dev": 0.25, "test": 0.25},
                  lead={"marker": "Source article:", "words": 10, "group_by_body": True})
    split_of: dict[str, set] = {}
    for it in corpus.items:
        split_of.setdefault(it.item_id.split("-")[0], set()).add(it.split)
    assert all(len(s) == 1 for s in split_of.values())
    assert corpus.stats["groups_per_split"] == {"train": 6, "dev": 3, "test": 3}
    # without the grouping, the same split scatters articles over splits
    loose = load(tmp_path, summaries(), split={"train": 0.5, "dev": 0.25, "test": 0.25},
                 lead={"marker": "Source article:", "words": 10})
    scattered: dict[str, set] = {}
    for it in loose.items:
        scattered.setdefault(it.item_id.split("-")[0], set()).add(it.split)
    assert sum(len(s) > 1 for s in scattered.values()) > 6


def test_lead_errors_are_one_line_and_name_the_field(tmp_path):
    frame = summaries(2)
    frame.loc[frame.item_id == "n1-3", "text"] = "no marker here"
    with pytest.raises(DataError) as err:
        load(tmp_path, frame, lead={"marker": "Source article:"})
    assert err.value.field == "data.lead.marker" and "3 row(s)" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValidationError, match="use one of them"):
        DataConfig(source="d.csv", label_set=SENT, columns={"group": "g"},
                   lead={"marker": "x", "group_by_body": True})


BENCHMARK = sorted((ROOT / "experiments" / "guidelines").glob("*.yaml"))


def test_the_benchmark_has_three_corpora():
    assert [p.stem for p in BENCHMARK] == ["convabuse", "newsroom", "vader"]


@pytest.mark.parametrize("path", BENCHMARK, ids=[p.stem for p in BENCHMARK])
def test_benchmark_specs_dry_run_with_a_test_split_of_150_or_more(path, capsys):
    from thinktrace.compile import main

    if path.stem != "vader" and not shared_datasets().exists():
        pytest.skip("needs the shared datasets folder")
    assert main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    test = int(out.split("test=", 1)[1].split(";", 1)[0])
    assert test >= 150
    assert "+compiled" in out and "compete=['gepa', 'mipro']" in out
