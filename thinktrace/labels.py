"""The label set of a rating task: canonical labels, their order and values, and lenient parsing of LM output.

Canonical labels are strings: ``str()`` of each `label_set` entry of the spec, with integral floats written as
integers (``1.0`` -> ``"1"``). Order is the order of `label_set` (it is the scale for ordinal data). Parsing is
lenient (case, punctuation, quotes, a number on a numeric scale, a 1-based index where labels are not numbers)
and never guesses: output that matches no label, or matches two different labels, parses to ``None``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Literal

Level = Literal["nominal", "ordinal", "interval"]
TIE_BREAKS: tuple[str, ...] = ("half_even", "lower", "upper")  #: rules for a mean/median halfway between two labels

_NUM = re.compile(r"[-+\u2212]?\d+(?:\.\d+)?")
_PUNCT = re.compile(r"[\s\"'`*_.,;:!?()\[\]{}<>]+")


def canonical_str(value: object) -> str:
    """The canonical string of a raw label value: integral numbers lose their '.0', strings are stripped."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    text = str(value).strip()
    try:
        number = float(text.replace("\u2212", "-"))
    except ValueError:
        return text
    if math.isfinite(number) and number.is_integer() and re.fullmatch(r"[-+\u2212]?\d+(\.0+)?", text):
        return str(int(number))
    return text


def _norm(text: str) -> str:
    return _PUNCT.sub(" ", text.lower()).strip()


def _as_number(text: str) -> float | None:
    try:
        return float(text.replace("\u2212", "-"))
    except ValueError:
        return None


@dataclass(frozen=True)
class LabelSet:
    """An ordered set of allowed labels with its level of measurement.

    nominal: labels are unordered categories; ordinal: ranks follow `labels` order; interval: labels are numbers
    and distances between them are meaningful.
    """

    labels: tuple[str, ...]
    level: Level = "nominal"
    synonyms: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, values: Iterable[object], level: Level = "nominal", synonyms: dict | None = None) -> "LabelSet":
        labels = tuple(canonical_str(v) for v in values)
        syn = {_norm(str(k)): canonical_str(v) for k, v in (synonyms or {}).items()}
        return cls(labels=labels, level=level, synonyms=syn)

    def __post_init__(self) -> None:
        if len(self.labels) < 2:
            raise ValueError("label_set needs at least two labels")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"label_set has duplicates: {list(self.labels)}")
        if self.level == "interval" and not self.numeric:
            raise ValueError("interval level needs numeric labels")
        bad = sorted(v for v in self.synonyms.values() if v not in self.labels)
        if bad:
            raise ValueError(f"synonyms map to labels outside label_set: {bad}")

    # -- structure -------------------------------------------------------------------------------------------
    @property
    def numeric(self) -> bool:
        """True when every label is a number (then an LM's number output is matched by value)."""
        return all(_as_number(label) is not None for label in self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        return iter(self.labels)

    def index(self, label: str) -> int:
        """Rank of `label` on the scale (0-based position in `label_set`)."""
        return self.labels.index(label)

    def value(self, label: str) -> float:
        """The number used for agreement: the label itself on an interval scale, its rank otherwise."""
        if self.level == "interval":
            return float(label.replace("\u2212", "-"))
        return float(self.index(label))

    def canonical(self, raw: object) -> str | None:
        """The canonical label for a value read from data, or None when it is not in the label set."""
        text = canonical_str(raw)
        if text in self.labels:
            return text
        number = _as_number(text)
        if number is not None and self.numeric:
            for label in self.labels:
                if _as_number(label) == number:
                    return label
        return None

    def nearest(self, number: float, tie_break: str = "half_even") -> str:
        """The label whose value is nearest to `number`, for mean/median scores; a midpoint between two labels is
        broken by `tie_break` (see `round`)."""
        return self.round(number, tie_break)[0]

    def round(self, number: float, tie_break: str = "half_even") -> tuple[str, bool]:
        """(the label nearest to `number`, whether `number` was a tie: exactly halfway between two labels).

        A tie goes, with `tie_break` half_even, to the label of even rank (its position on the scale counted from
        0: `label_set` order, or the order of the values on an interval scale), i.e. round half to even in rank
        space (as many ties go up as down); lower / upper: to the label of lower / higher value. `lower` is the
        rule before `data.tie_break` existed; it (like `upper`) leans toward one end of the scale.
        """
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break must be one of {list(TIE_BREAKS)}, got {tie_break!r}")
        ranked = sorted(self.labels, key=self.value)
        distance = [abs(self.value(lab) - number) for lab in ranked]
        best = min(distance)
        near = [i for i, d in enumerate(distance) if d - best <= 1e-9 * max(1.0, abs(number))]
        tied = len(near) > 1
        if tie_break == "lower":  # exactly the rule before tie_break existed: nearest, then lower value
            return min(self.labels, key=lambda lab: (abs(self.value(lab) - number), self.value(lab))), tied
        if not tied:
            return ranked[near[0]], False
        low, high = near[0], near[-1]
        if tie_break == "upper":
            return ranked[high], True
        return ranked[low if low % 2 == 0 else high], True

    # -- lenient parsing of LM output -------------------------------------------------------------------------
    def parse(self, output: object) -> str | None:
        """Map an LM's label output to a canonical label, leniently; None when it is missing or ambiguous.

        Tried in order: exact; case/punctuation-insensitive match of the whole text (labels and synonyms); the
        single number in the text on a numeric scale; a 1-based index for non-numeric labels when the text is just
        a number; otherwise exactly one distinct label mentioned as a whole word in the text.
        """
        if output is None:
            return None
        text = str(output).strip()
        if not text:
            return None
        if text in self.labels:
            return text
        normed = _norm(text)
        by_norm = {_norm(label): label for label in self.labels}
        if normed in by_norm:
            return by_norm[normed]
        if normed in self.synonyms:
            return self.synonyms[normed]
        numbers = _NUM.findall(text)
        if self.numeric:
            values = {n for n in (_as_number(x) for x in numbers) if n is not None}
            hits = {lab for lab in self.labels if _as_number(lab) in values}
            if len(hits) == 1 and len(values) == 1:
                return hits.pop()
            if len(values) > 1:
                return None
        elif len(numbers) == 1 and re.fullmatch(r"\d+", normed or ""):
            k = int(numbers[0])
            if 1 <= k <= len(self.labels):
                return self.labels[k - 1]
        mentioned = set()
        padded = f" {normed} "
        for key, label in list(by_norm.items()) + list(self.synonyms.items()):
            if key and f" {key} " in padded:
                mentioned.add(label)
        if len(mentioned) == 1:
            return mentioned.pop()
        return None

    def describe(self) -> str:
        """A short description for prompts, e.g. `one of: negative, neutral, positive`."""
        joined = ", ".join(self.labels)
        if self.level == "nominal":
            return f"one of: {joined}"
        return f"one of: {joined} (an {self.level} scale, in this order)"

