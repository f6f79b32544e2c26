"""The `data` section of the spec and the corpus it loads: human labels per item, aggregated gold labels, splits.

`load_corpus(cfg, base_dir, seed)` reads the source (see `DataConfig.source`), turns every format into one human
label per row, checks every label against `label_set` (labels outside it are an error, never dropped), groups the
rows into items, drops items with fewer than `min_labels_per_item` labels (counted in `Corpus.stats`), orders the
items by a seeded hash of their id, keeps the first `limit`, and cuts train/dev/test by the split fractions.

Splits are assigned per item, never per row: the items are ordered by ``sha1(f"{seed}:{item_id}")`` and the first
``round(train * N)`` go to train, the next ``round(dev * N)`` to dev and the rest to test (largest-remainder
rounding, so the counts sum to N). An item is in exactly one split; the assignment does not depend on the order
of rows in the file; adding or removing items moves at most the few items whose hash lies next to a cut point.
"""

from __future__ import annotations

import codecs
import hashlib
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

import pandas as pd
from pydantic import Field, field_validator, model_validator

from thinktrace import _sources
from thinktrace.config import Section
from thinktrace.errors import DataError
from thinktrace.labels import LabelSet, canonical_str

SPLITS = ("train", "dev", "test")


# ==============================================================================================================
# Spec sections
# ==============================================================================================================
class SplitConfig(Section):
    """Fractions of the items that go to each split (by item, never by row); they must sum to 1."""

    train: float = Field(
        0.6, ge=0.0, le=1.0,
        description="Fraction of items for training: the examples whose thinking traces are inferred and used to "
        "fine-tune or optimize the LLM rater.",
    )
    dev: float = Field(
        0.2, ge=0.0, le=1.0,
        description="Fraction of items for development: model and prompt selection while optimizing.",
    )
    test: float = Field(
        0.2, ge=0.0, le=1.0,
        description="Fraction of items held out for the final evaluation against the humans (must give at least one "
        "item).",
    )

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitConfig":
        total = self.train + self.dev + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train + dev + test must sum to 1, got {self.train} + {self.dev} + {self.test} = {round(total, 6)}"
            )
        return self


class ColumnsConfig(Section):
    """Names of the columns of a tabular source."""

    item_id: Optional[str] = Field(
        "item_id",
        description="Column with the item id. Required in `long` format (unless set to null). In `wide` and "
        "`aggregated` format it may be absent from the data (or set to null): each item's id is then the first 16 "
        "hex digits of the SHA-1 of its text, so ids survive reordering, and rows with the same text are one item.",
    )
    text: str = Field("text", description="Column with the text the humans rated (shown to the LLM rater).")
    annotator_id: Optional[str] = Field(
        "annotator_id",
        description="Column with the annotator id (`long` format). Set to null when the data has none: annotators "
        "are then unknown (\"\") and per-annotator analyses are unavailable.",
    )
    label: str = Field(
        "label",
        description="Column with the human label (`long` and `aggregated` format). Empty cells are missing "
        "annotations: dropped and counted in the corpus stats.",
    )


_LabelValue = Union[str, int, float]


class DataConfig(Section):
    """Where the human annotations come from, how they are laid out, and how they become gold labels and splits."""

    source: str = Field(
        description="The data. A file path (.csv, .tsv, .jsonl, .json, .parquet; relative paths resolve against the "
        "spec file's directory); `hf:<name>` for a Hugging Face dataset by name (needs the hub or the local HF "
        "cache); `hf:<dir>` for a local directory saved with `Dataset.save_to_disk`/`DatasetDict.save_to_disk` or "
        "holding data files that `datasets.load_dataset(<dir>)` reads; or `package:<distribution>/<path inside it>` "
        "for a data file shipped inside an installed PyPI package (found through its metadata, never imported), "
        "e.g. `package:vaderSentiment/vaderSentiment/vader_lexicon.txt`.",
    )
    hf_split: str = Field("train", description="Split of an `hf:` dataset to read (all items are then re-split by `split`).")
    hf_config: Optional[str] = Field(None, description="Configuration (subset) name of an `hf:` dataset, if it has several.")
    format: Literal["long", "wide", "aggregated", "vader"] = Field(
        "long",
        description="Layout of the data. `long`: one row per (item, annotator, label). `wide`: one row per item with "
        "one column per annotator (listed in `annotator_columns`, or every column other than the item id and text); "
        "empty cells are items that annotator did not label. `aggregated`: one row per item with a single label "
        "(annotators unknown; rows repeating an item are merged). `vader`: the VADER lexicon text format, "
        "`token<TAB>mean<TAB>std<TAB>[r1, ..., r10]`: each token is an item rated by 10 humans on -4..4; "
        "annotator ids are the list positions 1..10.",
    )
    columns: ColumnsConfig = Field(default_factory=ColumnsConfig, description="Column names of a tabular source.")
    annotator_columns: Optional[list[str]] = Field(
        None,
        description="`wide` format: the columns holding the annotators' labels (column name = annotator id). "
        "Default: every column other than the item id and text columns.",
    )
    encoding: str = Field(
        "utf-8",
        description="Text encoding of CSV/TSV/JSON/lexicon files (e.g. utf-8, latin-1, cp1252). A UTF-8 byte-order "
        "mark is ignored.",
    )
    label_set: list[_LabelValue] = Field(
        description="The allowed labels, in scale order for ordinal data (at least two distinct). Labels are compared "
        "as canonical strings (`1.0` in the data matches `1`). Any human label outside this set is an error "
        "(listed with counts), never silently dropped. Quote yes/no/on/off labels: unquoted they are YAML booleans.",
    )
    level: Literal["nominal", "ordinal", "interval"] = Field(
        "nominal",
        description="Level of measurement of the labels: nominal (unordered categories), ordinal (ranked in "
        "`label_set` order), interval (numeric labels with meaningful distances). Drives agreement metrics and "
        "mean/median aggregation.",
    )
    label_synonyms: dict[str, str] = Field(
        default_factory=dict,
        description="Other spellings mapped to labels of `label_set` (e.g. {pos: positive}). Used to parse LLM "
        "output and applied to the human labels of the data as well (case- and punctuation-insensitive).",
    )
    aggregate: Literal["majority", "mean", "median", "each"] = Field(
        "majority",
        description="How an item's human labels become its gold label. majority: the most frequent label, ties going "
        "to the label earliest in `label_set`; mean / median (ordinal or interval only): mean or median of the "
        "label values (ranks on an ordinal scale, the numbers on an interval scale), mapped to the nearest label; "
        "each: every human label is its own training example (for per-annotator trace inference) while the gold "
        "label for evaluation is the majority.",
    )
    split: SplitConfig = Field(default_factory=SplitConfig, description="Train/dev/test fractions, by item.")
    limit: Optional[int] = Field(
        None, ge=1,
        description="Keep at most this many items, chosen deterministically (by the seeded item hash) before "
        "splitting. Null: all items.",
    )
    min_labels_per_item: int = Field(
        1, ge=1,
        description="Items with fewer human labels than this are dropped (and counted in the corpus stats); use 2 "
        "or more when measuring agreement between humans.",
    )
    seed: Optional[int] = Field(
        None,
        description="Seed of the item order used by `limit` and `split`. Null: the spec's top-level seed.",
    )

    # -- validation ---------------------------------------------------------------------------------------------
    @field_validator("label_set", mode="before")
    @classmethod
    def _no_yaml_booleans(cls, value):
        if isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value):
            raise ValueError(
                "label_set holds a YAML boolean (true/false); unquoted yes/no/on/off are booleans in YAML, so quote "
                "the labels, e.g. ['No', 'Yes']"
            )
        return value

    @field_validator("label_synonyms", mode="before")
    @classmethod
    def _synonym_strings(cls, value):
        if isinstance(value, dict):
            if any(isinstance(v, bool) or isinstance(k, bool) for k, v in value.items()):
                raise ValueError("label_synonyms holds a YAML boolean; quote yes/no/on/off/true/false")
            return {canonical_str(k): canonical_str(v) for k, v in value.items()}
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r} (e.g. utf-8, latin-1, cp1252)") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "DataConfig":
        labels = [canonical_str(v) for v in self.label_set]
        if len(set(labels)) < 2:
            raise ValueError(f"label_set needs at least two distinct labels, got {labels}")
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"label_set has duplicate labels: {dupes}")
        try:
            self.labels()
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if self.annotator_columns is not None and self.format != "wide":
            raise ValueError(f"annotator_columns is for format: wide (format is {self.format})")
        if self.aggregate in ("mean", "median") and self.level == "nominal":
            raise ValueError(
                f"aggregate: {self.aggregate} needs ordinal or interval labels (level is nominal); use majority"
            )
        return self

    def labels(self) -> LabelSet:
        """The `LabelSet` of this section: canonical labels, level and synonyms."""
        return LabelSet.of(self.label_set, level=self.level, synonyms=self.label_synonyms)

    @property
    def label_set_obj(self) -> LabelSet:
        """Same as `labels()`."""
        return self.labels()


# ==============================================================================================================
# Corpus
# ==============================================================================================================
@dataclass
class Item:
    """One rated text with all its human labels."""

    item_id: str
    text: str
    label: str  # gold label: the aggregated human label (canonical, in label_set)
    labels: list[str]  # every human label of this item (canonical), one per annotation
    annotators: list[str]  # annotator ids parallel to labels ("" when unknown)
    split: str  # "train" | "dev" | "test"
    score: float | None = None  # mean/median label value when aggregate is mean/median (LabelSet.value space)


@dataclass
class Corpus:
    """The loaded human annotations.

    `items` are in the seeded hash order used for `limit` and splitting (independent of row order in the file).
    `per_annotator` is True when every label has an annotator id and some item has at least two labels.
    `stats` counts what was read, dropped (and why), ties broken, items per split and label distributions.
    """

    items: list[Item]
    label_set: LabelSet
    per_annotator: bool
    stats: dict
    aggregate: str = "majority"

    def split(self, name: str) -> list[Item]:
        """The items of split `name` ("train", "dev" or "test")."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; one of {', '.join(SPLITS)}")
        return [item for item in self.items if item.split == name]

    def long(self, split: str | None = None) -> pd.DataFrame:
        """One row per human label: columns item_id, annotator_id, label (canonical); for the human ceiling.

        `split` None means all items. annotator_id is "" when unknown. A (item, annotator) pair can repeat only when
        the data holds repeat annotations (counted in `stats["repeat_annotations"]`).
        """
        items = self.items if split is None else self.split(split)
        rows = [(it.item_id, ann, lab) for it in items for ann, lab in zip(it.annotators, it.labels)]
        return pd.DataFrame(rows, columns=["item_id", "annotator_id", "label"])

    def examples(self, split: str) -> list[Item]:
        """Training/evaluation examples of a split.

        With aggregate `majority`, `mean` or `median`: the items themselves (label = gold label). With `each`: one
        example per human label, in item order: a copy of the item whose `label` is that annotator's label and whose
        `labels`/`annotators` hold just that label and annotator (item_id and text are shared, so examples group
        back into items by item_id; the item's gold label stays the majority, see `split()`).
        """
        items = self.split(split)
        if self.aggregate != "each":
            return items
        return [
            Item(it.item_id, it.text, lab, [lab], [ann], it.split, None)
            for it in items
            for ann, lab in zip(it.annotators, it.labels)
        ]


# ==============================================================================================================
# Loading
# ==============================================================================================================
@dataclass
class _Rows:
    """Any format turned into one human label per row (label None = missing annotation)."""

    item_ids: list  # str, or None when derived from the text
    texts: list
    annotators: list[str]
    labels: list
    rows: list[int]  # 1-based data row (line for vader) each entry comes from
    rows_read: int
    item_id_from: str
    one_row_per_item: bool
    extra: dict = field(default_factory=dict)


def load_corpus(cfg: DataConfig, base_dir: Path, seed: int) -> Corpus:
    """Load, check, aggregate and split the corpus described by `cfg`.

    `base_dir` is the spec file's directory (relative sources resolve against it); `seed` is the spec's top-level
    seed, used when `cfg.seed` is None. Every problem raises a one-line `DataError`.
    """
    seed = cfg.seed if cfg.seed is not None else seed
    src = _sources.resolve(cfg.source, Path(base_dir))
    file = src.label
    if cfg.format == "vader":
        rows = _vader_rows(_sources.read_text(src, cfg.encoding), file)
    else:
        frame = _sources.read_table(src, cfg)
        if len(frame) == 0:
            raise DataError("data.source", "the data has no rows", file)
        rows = _frame_rows(frame, cfg, file)
    if rows.rows_read == 0:
        raise DataError("data.source", "the data has no rows", file)

    label_set = cfg.labels()
    texts = _check_texts(rows, cfg, file)
    labels, missing = _check_labels(rows, label_set, cfg, file)
    items_by_id, dup_rows, repeats = _group(rows, texts, labels, file)
    stats: dict = {
        "file": file,
        "format": cfg.format,
        "rows_read": rows.rows_read,
        "labels_read": sum(1 for x in labels if x is not None),
        "missing_labels": missing,
        "labels_outside_label_set": 0,
        "item_id_from": rows.item_id_from,
        "items_read": len(items_by_id),
        "duplicate_rows_merged": dup_rows,
        "repeat_annotations": repeats,
        **rows.extra,
    }

    kept = {k: v for k, v in items_by_id.items() if len(v[1]) >= cfg.min_labels_per_item}
    dropped = {"fewer_than_min_labels": len(items_by_id) - len(kept), "over_limit": 0}
    if not kept:
        raise DataError(
            "data.min_labels_per_item",
            f"no item has at least {cfg.min_labels_per_item} human label(s) ({len(items_by_id)} items read, "
            f"{missing} missing labels)",
            file,
        )
    order = sorted(kept, key=lambda item_id: _hash(seed, item_id))
    if cfg.limit is not None and len(order) > cfg.limit:
        dropped["over_limit"] = len(order) - cfg.limit
        order = order[: cfg.limit]
    counts = _split_counts(len(order), cfg.split, file)
    assigned = [name for name, n in zip(SPLITS, counts) for _ in range(n)]

    items: list[Item] = []
    ties = 0
    majority = _agreement_majority() if cfg.aggregate in ("majority", "each") else None
    for item_id, split in zip(order, assigned):
        text, item_labels, item_annotators = kept[item_id]
        score = None
        if cfg.aggregate in ("mean", "median"):
            values = [label_set.value(x) for x in item_labels]
            score = statistics.fmean(values) if cfg.aggregate == "mean" else float(statistics.median(values))
            gold = label_set.nearest(score)
        else:
            gold, tie = _majority(item_labels, label_set, majority)
            ties += tie
        items.append(Item(item_id, text, gold, list(item_labels), list(item_annotators), split, score))

    all_labels = [x for it in items for x in it.labels]
    label_counts = Counter(all_labels)
    per_item = [len(it.labels) for it in items]
    per_annotator = bool(items) and all(a for it in items for a in it.annotators) and max(per_item) >= 2
    stats.update(
        dropped=dropped,
        items=len(items),
        labels=len(all_labels),
        ties_broken=ties,
        per_split=dict(zip(SPLITS, counts)),
        label_distribution={lab: label_counts[lab] for lab in label_set if label_counts[lab]},
        gold_distribution=dict(Counter(it.label for it in items).most_common()),
        labels_per_item={
            "min": min(per_item), "median": float(statistics.median(per_item)),
            "mean": round(statistics.fmean(per_item), 3), "max": max(per_item),
        },
        annotators=len({a for it in items for a in it.annotators if a}),
        seed=seed,
    )
    stats["gold_distribution"] = {lab: stats["gold_distribution"][lab] for lab in label_set if lab in stats["gold_distribution"]}
    return Corpus(items=items, label_set=label_set, per_annotator=per_annotator, stats=stats, aggregate=cfg.aggregate)


# -- formats ---------------------------------------------------------------------------------------------------
_VADER_RATINGS = re.compile(r"\s*\[(.*)\]\s*")


def _vader_rows(text: str, file: str) -> _Rows:
    """Parse the VADER lexicon: `token<TAB>mean<TAB>std<TAB>[r1, ..., r10]`.

    Each token is an item (id and text = the token) with its individual human ratings; annotator ids are the list
    positions "1".."10". Positions are NOT persistent raters: the lexicon lists ten independent crowd ratings per
    token without rater ids, so position k of one token and position k of another need not be the same person (use
    them for agreement measures that ignore rater identity, not for per-rater modelling). A token listed twice keeps its
    last entry, as VADER's own lexicon dictionary does; the replaced tokens are listed in stats.
    """
    entries: dict[str, tuple[int, list[str]]] = {}
    replaced: list[str] = []
    n_lines = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        n_lines += 1
        parts = line.rstrip("\r\n").split("\t")
        match = _VADER_RATINGS.fullmatch(parts[3]) if len(parts) >= 4 else None
        if match is None or not parts[0].strip():
            raise DataError(
                "data.format",
                f"line {lineno} is not a VADER lexicon entry (token<TAB>mean<TAB>std<TAB>[r1, ..., r10])",
                file,
            )
        ratings = [r.strip() for r in match.group(1).split(",") if r.strip()]
        token = parts[0].strip()
        if token in entries:
            replaced.append(token)
        entries[token] = (lineno, ratings)
    ids, texts, anns, labels, rows = [], [], [], [], []
    for token, (lineno, ratings) in entries.items():
        for k, rating in enumerate(ratings, 1):
            ids.append(token)
            texts.append(token)
            anns.append(str(k))
            labels.append(rating)
            rows.append(lineno)
    return _Rows(
        ids, texts, anns, labels, rows, rows_read=n_lines, item_id_from="vader token", one_row_per_item=True,
        extra={"duplicate_tokens_replaced": sorted(set(replaced))},
    )


def _missing_columns(frame: pd.DataFrame, wanted: dict[str, str], file: str) -> None:
    missing = {key: col for key, col in wanted.items() if col not in frame.columns}
    if missing:
        key, col = next(iter(missing.items()))
        names = ", ".join(f"{c!r}" for c in missing.values())
        found = ", ".join(str(c) for c in frame.columns)
        raise DataError(
            f"data.columns.{key}",
            f"column{'s' if len(missing) > 1 else ''} {names} not found; columns found: {found}",
            file,
        )


def _frame_rows(frame: pd.DataFrame, cfg: DataConfig, file: str) -> _Rows:
    cols = cfg.columns
    n = len(frame)
    row_numbers = list(range(1, n + 1))
    id_col = cols.item_id if cols.item_id is not None and (cfg.format == "long" or cols.item_id in frame.columns) else None
    wanted = {"text": cols.text}
    if cfg.format == "long":
        if cols.item_id is not None:
            wanted = {"item_id": cols.item_id, **wanted}
        if cols.annotator_id is not None:
            wanted["annotator_id"] = cols.annotator_id
        wanted["label"] = cols.label
    elif cfg.format == "aggregated":
        wanted["label"] = cols.label
    _missing_columns(frame, wanted, file)
    item_id_from = f"column {id_col!r}" if id_col else "sha1(text)"
    raw_ids = [_id_str(v) for v in frame[id_col].tolist()] if id_col else [None] * n
    if id_col:
        empty = [r for r, v in zip(row_numbers, raw_ids) if not v]
        if empty:
            raise DataError(
                f"data.columns.item_id",
                f"{len(empty)} row(s) have no item id in column {id_col!r} (first: row {empty[0]}); fill them in, or "
                "set columns.item_id to null (wide/aggregated) to derive ids from the text",
                file,
            )
    texts = frame[cols.text].tolist()

    if cfg.format == "long":
        anns = [_id_str(v) for v in frame[cols.annotator_id].tolist()] if cols.annotator_id is not None else [""] * n
        return _Rows(raw_ids, texts, anns, frame[cols.label].tolist(), row_numbers, n, item_id_from, False)
    if cfg.format == "aggregated":
        return _Rows(raw_ids, texts, [""] * n, frame[cols.label].tolist(), row_numbers, n, item_id_from, True)

    # wide
    if cfg.annotator_columns is not None:
        absent = [c for c in cfg.annotator_columns if c not in frame.columns]
        if absent:
            raise DataError(
                "data.annotator_columns",
                f"column(s) {', '.join(map(repr, absent))} not found; columns found: {', '.join(map(str, frame.columns))}",
                file,
            )
        ann_cols = list(cfg.annotator_columns)
    else:
        skip = {cols.text, id_col}
        ann_cols = [c for c in frame.columns if c not in skip]
    if not ann_cols:
        raise DataError(
            "data.annotator_columns",
            f"wide format needs at least one annotator column besides the item id and text; columns found: "
            f"{', '.join(map(str, frame.columns))}",
            file,
        )
    ids, out_texts, anns, labels, rows = [], [], [], [], []
    values = {c: frame[c].tolist() for c in ann_cols}
    for i in range(n):
        for c in ann_cols:
            ids.append(raw_ids[i])
            out_texts.append(texts[i])
            anns.append(str(c))
            labels.append(values[c][i])
            rows.append(i + 1)
    out = _Rows(ids, out_texts, anns, labels, rows, n, item_id_from, True)
    out.extra["annotator_columns"] = [str(c) for c in ann_cols]
    return out


# -- checks and grouping ---------------------------------------------------------------------------------------
def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple, dict, set)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _id_str(value: object) -> str:
    """An id cell as a string: integral floats lose their '.0' (ids read from numeric columns); missing -> ""."""
    if _is_missing(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _check_texts(rows: _Rows, cfg: DataConfig, file: str) -> list[str]:
    texts: list[str] = []
    empty: list[int] = []
    last_row = None
    for value, row in zip(rows.texts, rows.rows):
        if _is_missing(value):
            if row != last_row:
                empty.append(row)
            texts.append("")
        else:
            texts.append(value if isinstance(value, str) else str(value))
        last_row = row
    if empty:
        raise DataError(
            "data.columns.text",
            f"{len(empty)} row(s) have an empty text in column {cfg.columns.text!r} (first: row {empty[0]}); every "
            "item needs the text the humans rated",
            file,
        )
    for i, item_id in enumerate(rows.item_ids):
        if item_id is None:
            rows.item_ids[i] = hashlib.sha1(texts[i].encode("utf-8")).hexdigest()[:16]
    return texts


def _check_labels(rows: _Rows, label_set: LabelSet, cfg: DataConfig, file: str) -> tuple[list, int]:
    cache: dict = {}
    out: list = []
    missing = 0
    bad: Counter = Counter()
    first_bad_row = None
    synonyms = label_set.synonyms
    for value, row in zip(rows.labels, rows.rows):
        if _is_missing(value):
            out.append(None)
            missing += 1
            continue
        try:
            label = cache[value]
        except (KeyError, TypeError):
            label = label_set.canonical(value)
            if label is None and synonyms:
                label = synonyms.get(re.sub(r"[\s\"'`*_.,;:!?()\[\]{}<>]+", " ", str(value).lower()).strip())
            try:
                cache[value] = label
            except TypeError:
                pass
        if label is None:
            bad[canonical_str(value) if not isinstance(value, (list, dict)) else repr(value)] += 1
            if first_bad_row is None:
                first_bad_row = row
        out.append(label)
    if bad:
        total = sum(bad.values())
        shown = ", ".join(f"{v!r} ({n}x)" for v, n in bad.most_common(5))
        more = f" and {len(bad) - 5} more value(s)" if len(bad) > 5 else ""
        where = "line" if cfg.format == "vader" else "row"
        raise DataError(
            "data.label_set",
            f"{total} human label(s) are not in label_set {list(label_set.labels)}: {shown}{more} (first at {where} "
            f"{first_bad_row}); add them to label_set, map them with label_synonyms, or fix the data",
            file,
        )
    return out, missing


def _group(rows: _Rows, texts: list[str], labels: list, file: str):
    """item_id -> (text, labels, annotators), in first-appearance order; counts merged rows and repeat annotations."""
    items: dict[str, tuple[str, list[str], list[str]]] = {}
    first_row: dict[str, int] = {}
    last_row: dict[str, int] = {}
    dup_rows = 0
    seen_pairs: set = set()
    repeats = 0
    for item_id, text, ann, label, row in zip(rows.item_ids, texts, rows.annotators, labels, rows.rows):
        entry = items.get(item_id)
        if entry is None:
            entry = items[item_id] = (text, [], [])
            first_row[item_id] = last_row[item_id] = row
        else:
            if entry[0] != text:
                raise DataError(
                    "data.columns.item_id",
                    f"item id {item_id!r} has different texts in rows {first_row[item_id]} and {row}; an item id must "
                    "name one text",
                    file,
                )
            if rows.one_row_per_item and row != last_row[item_id]:
                dup_rows += 1
            last_row[item_id] = row
        if label is None:
            continue
        if ann:
            if (item_id, ann) in seen_pairs:
                repeats += 1
            seen_pairs.add((item_id, ann))
        entry[1].append(label)
        entry[2].append(ann)
    return items, dup_rows, repeats


def _majority(labels: list[str], label_set: LabelSet, majority=None) -> tuple[str, int]:
    """Most frequent label; a tie goes to the tied label earliest in label_set order. Returns (label, 1 if tied).

    `majority` is `thinktrace.agreement.majority` (the same rule, shared with the human ceiling) when available.
    """
    counts = Counter(labels)
    top = max(counts.values())
    tied = [lab for lab in label_set.labels if counts.get(lab) == top]
    gold = majority(labels, label_set) if majority is not None else tied[0]
    return gold, int(len(tied) > 1)


def _agreement_majority():
    try:
        from thinktrace.agreement import majority
    except ImportError:
        return None
    return majority


def _hash(seed: int, item_id: str) -> str:
    return hashlib.sha1(f"{seed}:{item_id}".encode("utf-8")).hexdigest()


def _split_counts(n: int, split: SplitConfig, file: str) -> list[int]:
    """Largest-remainder rounding of n * fractions (ties to the earlier split) so the counts sum to n."""
    fractions = [split.train, split.dev, split.test]
    exact = [f * n for f in fractions]
    counts = [math.floor(x + 1e-9) for x in exact]
    rest = n - sum(counts)
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[:max(rest, 0)]:
        counts[i] += 1
    described = f"train {split.train}, dev {split.dev}, test {split.test} of {n} item(s)"
    for name, frac, count in zip(SPLITS, fractions, counts):
        if frac > 0 and count == 0:
            raise DataError(
                "data.split",
                f"{described} gives no {name} items; raise split.{name}, set it to 0, or use more items",
                file,
            )
    if counts[2] == 0:
        raise DataError("data.split", f"{described} leaves the test split empty; evaluation needs test items", file)
    return counts
