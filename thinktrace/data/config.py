"""The `data` section of the spec: where the corpus is, its format and columns, the label set, aggregation and
splits (validated, documented: the YAML schema)."""

from __future__ import annotations

import codecs
from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from thinktrace.config import Section
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
    group: Optional[str] = Field(
        None,
        description="Column naming the group each item belongs to (e.g. the article several summaries were "
        "written for, the thread of several replies). Every item of a group goes to the same split, so no split "
        "is scored on items whose siblings another split trained on; `limit` then keeps whole groups. Null: each "
        "item is its own group.",
    )
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


class LeadConfig(Section):
    """Show each item as its head and the lead of its body: e.g. a summary with the first ~120 words of the article
    it summarizes, when the whole article is too long for a rater's context."""

    marker: str = Field(
        ..., min_length=1,
        description="The text that starts the body (e.g. `Source article:`): everything up to and including its "
        "first occurrence is kept as is, the body after it is cut to `words`. An item without it is an error.",
    )
    words: int = Field(
        120, ge=1,
        description="Words of the body kept (whitespace-separated, the first ones; line breaks become spaces); a cut "
        "body ends in ` …`.",
    )
    group_by_body: bool = Field(
        False,
        description="Items with the same full body form one group, kept in one split as `columns.group` does (e.g. "
        "the several summaries of one article). Not together with `columns.group`.",
    )


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
    lead: Optional[LeadConfig] = Field(
        None,
        description="Shorten long items to their head and the lead of their body (see its fields); the item id, "
        "when derived from the text, is taken from the full text. Null: items are shown whole.",
    )
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
        description="How an item's human labels become its gold label. majority: the most frequent label; mean / "
        "median (ordinal or interval only): mean or median of the label values (ranks on an ordinal scale, the "
        "numbers on an interval scale), mapped to the nearest label; each: every human label is its own training "
        "example (for per-annotator trace inference) while the gold label for evaluation is the majority. Ties "
        "follow `tie_break`; the human ceiling builds its leave-one-out targets with the same rule.",
    )
    tie_break: Literal["half_even", "lower", "upper"] = Field(
        "half_even",
        description="How a tie becomes a gold label (counted per kind in the corpus stats and the report's Data "
        "section). half_even (symmetric): a mean or median exactly halfway between two labels goes to the label of "
        "even rank (position on the scale counted from 0; round half to even: along the scale the ties alternate up and down, so neither end is favoured); a "
        "majority tie goes, on an ordinal or interval scale, to the median of the tied labels (rounded the same "
        "way), and on a nominal scale to the tied label picked by a hash of the item id (deterministic, favours no "
        "label). lower: midpoints to the lower value, majority ties to the tied label earliest in `label_set` (the "
        "rule before this field existed, pinned for run folders made then; it leans toward one end of the scale). "
        "upper: the mirror of lower (higher value, latest in `label_set`).",
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
    def _one_grouping(self) -> "DataConfig":
        if self.lead is not None and self.lead.group_by_body and self.columns.group is not None:
            raise ValueError("lead.group_by_body and columns.group both name the groups; use one of them")
        return self

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
