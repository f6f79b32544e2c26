"""The corpus a `data` section loads: human labels per item, aggregated gold labels, splits.

`load_corpus(cfg, base_dir, seed)` reads the source (see `DataConfig.source`), turns every format into one human
label per row, checks every label against `label_set` (labels outside it are an error, never dropped), groups the
rows into items, drops items with fewer than `min_labels_per_item` labels (counted in `Corpus.stats`), orders the
items by a seeded hash of their id, keeps the first `limit`, and cuts train/dev/test by the split fractions. Each
item's gold label comes from `thinktrace.gold.gold_label` (`data.aggregate`, ties by `data.tie_break`), the function
that also builds the human ceiling's leave-one-out targets.

Splits are assigned per item, never per row: the items are ordered by ``sha1(f"{seed}:{item_id}")`` and the first
``round(train * N)`` go to train, the next ``round(dev * N)`` to dev and the rest to test (largest-remainder
rounding, so the counts sum to N). An item is in exactly one split; the assignment does not depend on the order
of rows in the file; adding or removing items moves at most the few items whose hash lies next to a cut point.

With a group column (`data.columns.group`: e.g. the article several summaries were written for), whole groups are
split instead: groups ordered by a seeded hash of their name, each in the split that holds its middle item, so no
split is scored on items whose siblings another split trained on (`_split_by_group`).
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from thinktrace.data import sources as _sources
from thinktrace.errors import DataError
from thinktrace.gold import TIE_KINDS, gold_label
from thinktrace.labels import LabelSet
from thinktrace.data.config import SPLITS, DataConfig, SplitConfig
from thinktrace.data.formats import _check_labels, _check_texts, _frame_rows, _Rows, _vader_rows
from thinktrace.data.lead import lead_texts


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
    group: str = ""  # `columns.group`: items of one group share a split ("" without a group column)


@dataclass
class Corpus:
    """The loaded human annotations.

    `items` are in the seeded hash order used for `limit` and splitting (independent of row order in the file).
    `per_annotator` is True when every label has an annotator id and some item has at least two labels.
    `stats` counts what was read, dropped (and why), ties broken (`ties`: per kind, majority and midpoint, under
    the rule `tie_break`; `ties_broken`: their total), items per split and label distributions.
    """

    items: list[Item]
    label_set: LabelSet
    per_annotator: bool
    stats: dict
    aggregate: str = "majority"
    tie_break: str = "half_even"  #: `data.tie_break`: how ties became gold labels (the human ceiling uses it too)

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
            Item(it.item_id, it.text, lab, [lab], [ann], it.split, None, it.group)
            for it in items
            for ann, lab in zip(it.annotators, it.labels)
        ]


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
    if cfg.lead is not None:
        texts, bodies = lead_texts(texts, rows.rows, cfg.lead, file)
        if cfg.lead.group_by_body:
            rows.groups = bodies
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
    groups = _item_groups(rows, file)
    if groups is None:
        order = sorted(kept, key=lambda item_id: _hash(seed, item_id))
        if cfg.limit is not None and len(order) > cfg.limit:
            dropped["over_limit"] = len(order) - cfg.limit
            order = order[: cfg.limit]
        counts = _split_counts(len(order), cfg.split, file)
        assigned = [name for name, n in zip(SPLITS, counts) for _ in range(n)]
    else:
        order, assigned = _split_by_group(kept, groups, cfg, seed, file)
        dropped["over_limit"] = len(kept) - len(order)
        counts = [assigned.count(name) for name in SPLITS]

    items: list[Item] = []
    ties = dict.fromkeys(TIE_KINDS, 0)
    rule = "majority" if cfg.aggregate == "each" else cfg.aggregate
    for item_id, split in zip(order, assigned):
        text, item_labels, item_annotators = kept[item_id]
        gold = gold_label(item_labels, label_set, rule, cfg.tie_break, key=item_id)
        if gold.tie:
            ties[gold.tie] += 1
        items.append(Item(item_id, text, gold.label, list(item_labels), list(item_annotators), split, gold.score,
                          groups[item_id] if groups is not None else ""))

    all_labels = [x for it in items for x in it.labels]
    label_counts = Counter(all_labels)
    per_item = [len(it.labels) for it in items]
    per_annotator = bool(items) and all(a for it in items for a in it.annotators) and max(per_item) >= 2
    stats.update(
        dropped=dropped,
        items=len(items),
        labels=len(all_labels),
        ties_broken=sum(ties.values()),
        ties=ties,
        tie_break=cfg.tie_break,
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
    if groups is not None:
        stats["groups_per_split"] = {name: len({it.group for it in items if it.split == name}) for name in SPLITS}
    stats["gold_distribution"] = {lab: stats["gold_distribution"][lab] for lab in label_set if lab in stats["gold_distribution"]}
    return Corpus(items=items, label_set=label_set, per_annotator=per_annotator, stats=stats, aggregate=cfg.aggregate,
                  tie_break=cfg.tie_break)


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


def _item_groups(rows: _Rows, file: str) -> dict[str, str] | None:
    """item_id -> its `columns.group` value; None without a group column. An item in two groups is an error."""
    if rows.groups is None:
        return None
    out: dict[str, str] = {}
    for item_id, group, row in zip(rows.item_ids, rows.groups, rows.rows):
        if out.setdefault(item_id, group) != group:
            raise DataError("data.columns.group", f"item id {item_id!r} is in group {out[item_id]!r} and, in row "
                            f"{row}, in group {group!r}; an item belongs to one group", file)
    return out


def _split_by_group(kept: dict, groups: dict[str, str], cfg: DataConfig, seed: int, file: str):
    """(item ids in order, their splits) with every group in one split.

    Groups are ordered by a seeded hash of their name (items within a group by their own hash); `limit` keeps whole
    groups, in that order, while they fit (at least one). Each group goes to the split whose share of the items
    holds the group's middle item, so the split sizes come as close to the fractions as whole groups allow. A split
    with a fraction above 0 that gets no group is an error (too few groups for the fractions)."""
    members: dict[str, list[str]] = {}
    for item_id in sorted(kept, key=lambda i: _hash(seed, i)):
        members.setdefault(groups[item_id], []).append(item_id)
    ordered = sorted(members, key=lambda g: _hash(seed, f"group:{g}"))
    if cfg.limit is not None:
        chosen, total = [], 0
        for g in ordered:
            if chosen and total + len(members[g]) > cfg.limit:
                break
            chosen.append(g)
            total += len(members[g])
        ordered = chosen
    n = sum(len(members[g]) for g in ordered)
    bounds = [cfg.split.train * n, (cfg.split.train + cfg.split.dev) * n]
    order, assigned, before = [], [], 0
    for g in ordered:
        middle = before + len(members[g]) / 2
        name = SPLITS[0] if middle < bounds[0] else SPLITS[1] if middle < bounds[1] else SPLITS[2]
        order += members[g]
        assigned += [name] * len(members[g])
        before += len(members[g])
    fractions = dict(zip(SPLITS, (cfg.split.train, cfg.split.dev, cfg.split.test)))
    empty = [name for name in SPLITS if fractions[name] > 0 and name not in assigned]
    if empty:
        raise DataError("data.split", f"{len(ordered)} group(s) of {n} item(s) cannot fill every split "
                        f"(no group in {', '.join(empty)}); use more groups (raise limit) or set that fraction to 0",
                        file)
    return order, assigned


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
