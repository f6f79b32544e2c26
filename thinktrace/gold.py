"""The gold rule: how an item's human labels become one gold label, ties included (`data.aggregate`,
`data.tie_break`).

One function builds every target a rater or a human is scored against: the corpus's gold labels
(`thinktrace.data.load_corpus`) and the leave-one-annotator-out targets of the human ceiling
(`thinktrace.agreement.human_ceiling`), so humans and LLM raters are scored against targets built the same way.

Ties, by kind:
  midpoint  a mean or median that lies exactly halfway between two neighbouring labels (e.g. a median of 2.5 on a
            1..5 scale). `half_even`: the label of even rank (rank = position on the scale counted from 0;
            label_set order, or the order of the values on an interval scale), i.e. round half to even in rank space:
            along the scale the ties alternate up and down, so neither end is favoured (mirror-symmetric when the
            scale has an odd number of labels), but odd ranks never win a tie; `lower` / `upper`: the label of lower / higher value.
  majority  two or more labels share the highest count. `half_even`, ordinal and interval: the median of the tied
            labels' values, mapped to the nearest label with the midpoint rule (a tie between the two ends of a
            scale goes to its middle); nominal (no order): the tied label whose hash with the item id is smallest,
            a deterministic choice that favours no label. `lower` / `upper`: the tied label earliest / latest in
            `label_set`.
`lower` is the rule of thinktrace before `data.tie_break` existed (kept for run folders made then); it and `upper`
lean toward one end of the scale.
"""

from __future__ import annotations

import hashlib
import statistics
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

from thinktrace.labels import TIE_BREAKS, LabelSet

TieBreak = Literal["half_even", "lower", "upper"]
DEFAULT_TIE_BREAK = "half_even"
LEGACY_TIE_BREAK = "lower"  #: the rule before `data.tie_break` existed (midpoints down, majority to the earliest)
TieKind = Literal["majority", "midpoint"]
TIE_KINDS: tuple[str, ...] = ("majority", "midpoint")


@dataclass(frozen=True)
class Gold:
    """An aggregated label: the label, the mean/median it came from (None for a majority) and the tie it broke."""

    label: str
    score: Optional[float] = None
    tie: Optional[TieKind] = None


def check_tie_break(tie_break: str) -> str:
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {list(TIE_BREAKS)}, got {tie_break!r}")
    return tie_break


def needs_key(label_set: LabelSet, aggregate: str, tie_break: str) -> bool:
    """True when a tie can depend on the item id (nominal majority ties under `half_even`)."""
    return aggregate == "majority" and label_set.level == "nominal" and tie_break == "half_even"


def gold_label(labels: Sequence[str], label_set: LabelSet, aggregate: str = "majority",
               tie_break: str = DEFAULT_TIE_BREAK, key: str = "") -> Gold:
    """The gold label of one item's (canonical) human labels; `key` is the item id (nominal majority ties)."""
    counts = [0] * len(label_set)
    for label in labels:
        counts[label_set.index(label)] += 1
    return gold_from_counts(counts, label_set, aggregate, tie_break, key)


def gold_from_counts(counts: Sequence[int], label_set: LabelSet, aggregate: str = "majority",
                     tie_break: str = DEFAULT_TIE_BREAK, key: str = "") -> Gold:
    """The gold label of an item given how many times each label of `label_set` (in its order) was given.

    aggregate: majority (most frequent label) or mean / median of the label values (`LabelSet.value`: ranks on an
    ordinal scale, the numbers on an interval scale) mapped to the nearest label. Ties: see the module docstring.
    Raises ValueError on no labels or an unknown aggregate / tie_break.
    """
    check_tie_break(tie_break)
    counts = [int(c) for c in counts]
    if len(counts) != len(label_set) or any(c < 0 for c in counts):
        raise ValueError(f"counts must be {len(label_set)} non-negative numbers, got {counts}")
    if sum(counts) == 0:
        raise ValueError("gold label of no labels: need at least one label")
    if aggregate == "majority":
        return _majority(counts, label_set, tie_break, key)
    if aggregate not in ("mean", "median"):
        raise ValueError(f"aggregate must be majority, mean or median, got {aggregate!r}")
    values = [label_set.value(label) for label, c in zip(label_set.labels, counts) for _ in range(c)]
    score = statistics.fmean(values) if aggregate == "mean" else float(statistics.median(values))
    label, tied = label_set.round(score, tie_break)
    return Gold(label, score, "midpoint" if tied else None)


def _majority(counts: list[int], label_set: LabelSet, tie_break: str, key: str) -> Gold:
    top = max(counts)
    tied = [label for label, c in zip(label_set.labels, counts) if c == top]
    if len(tied) == 1:
        return Gold(tied[0])
    if tie_break == "lower":
        return Gold(tied[0], tie="majority")
    if tie_break == "upper":
        return Gold(tied[-1], tie="majority")
    if label_set.level == "nominal":
        return Gold(min(tied, key=lambda label: _hash(key, label)), tie="majority")
    middle = float(statistics.median(label_set.value(label) for label in tied))
    return Gold(label_set.round(middle, tie_break)[0], tie="majority")


def _hash(key: str, label: str) -> str:
    return hashlib.sha1(f"{key}\x1f{label}".encode("utf-8")).hexdigest()

