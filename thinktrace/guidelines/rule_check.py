"""Does a written rule generalise? The faults of one decision rule, and how alike two label sections are.

A rule is faulty (`RuleChecker.fault`) when it

- ``quotes_item``: holds a train (or dev) item verbatim: a short item (at most `SHORT_ITEM_WORDS` words, e.g. a
  VADER word or emoticon) as a whole token sequence, a longer one by any run of `QUOTE_WORDS` consecutive words.
  Items that are a stopword or shorter than 3 characters (and not an emoticon) are not looked for: a rule cannot
  avoid "not" or "a". A rule that quotes an item describes that item, not a class of items.
- ``states_label``: states a label the way a trace does: a sentence with a label token and a rating word
  (thinktrace.leak's ``statement`` leak: "rate it as -2", "I label this positive"). The section heading names the
  label; a rule states the condition.
- ``restates_original``: says what the original guideline already says: the line is part of the original text, or
  at least `RESTATE_SHARE` of its content words (at least 4) are the content words of one sentence of the original.

`section_overlap` reports the Jaccard similarity of the content words of neighbouring label sections (label
order): sections that share most of their words do not tell the labels apart.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

from thinktrace.labels import LabelSet
from thinktrace.leak import find_leaks

FAULTS = ("quotes_item", "states_label", "restates_original")

#: what the writer is told when it is asked to rewrite a faulty rule (one retry)
FAULT_TEXT = {
    "quotes_item": "it quotes an annotated item word for word; state the condition for a whole class of items "
                   "instead, without quoting any item",
    "states_label": "it states a label number or name the way a rating does; the section heading already names "
                    "the label, so state only the condition an item must meet",
    "restates_original": "it repeats the original guideline; state what the guideline does not already say",
}

SHORT_ITEM_WORDS = 5
QUOTE_WORDS = 6
RESTATE_SHARE = 0.8

STOPWORDS = frozenset("""a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each either else few for from further had has
have having he her here hers him his how i if in into is it its itself just may me might more most must my no nor
not of off on once only or other our out over own same she should so some such than that the their them then there
these they this those through to too under until up very was we were what when where which while who whom why will
with would you your yours item items text label labels rule rules""".split())

_TOKEN = re.compile(r"[^\W\d_][\w'-]*", re.UNICODE)
_WORDS = re.compile(r"\w+(?:'\w+)?|[^\w\s]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def content_words(text: str) -> set[str]:
    """Lower-cased words with a letter, not stopwords."""
    return {w for w in (m.group(0).lower().strip("'-") for m in _TOKEN.finditer(text or "")) if w and w not in STOPWORDS}


def jaccard(a: str, b: str) -> float | None:
    """Jaccard similarity of the content words of two texts (None when both have none)."""
    wa, wb = content_words(a), content_words(b)
    if not wa and not wb:
        return None
    return len(wa & wb) / len(wa | wb)


def neighbour_pairs(labels: Sequence[str], present: Iterable[str]) -> list[tuple[str, str]]:
    """Consecutive labels (in `labels` order, others after in order of appearance) that are both `present`."""
    present = list(present)
    order = [lb for lb in labels if lb in present] + [lb for lb in present if lb not in labels]
    return list(zip(order, order[1:]))


def section_overlap(rules: Mapping[str, str], labels: Sequence[str]) -> list[dict]:
    """[{"a", "b", "jaccard"}] for each pair of neighbouring labels that both have rules."""
    return [{"a": a, "b": b, "jaccard": _round(jaccard(rules[a], rules[b]))}
            for a, b in neighbour_pairs(labels, [lb for lb, t in rules.items() if t and t.strip()])]


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _norm_words(text: str) -> list[str]:
    return [w.lower() for w in _WORDS.findall(text or "")]


class RuleChecker:
    """`fault(line)` -> the first fault of `FAULTS` the rule line has, or None.

    label_set: the labels a rule must not state (None: not checked); original: the original guideline; items:
    the texts of the annotated items a rule must not quote."""

    def __init__(self, label_set: LabelSet | None, original: str, items: Iterable[str] = ()):
        self.label_set = label_set
        self.original = " ".join((original or "").split()).lower()
        self.sentences = [content_words(s) for s in _SENTENCE.split(original or "")]
        self.short: set[tuple[str, ...]] = set()
        self.grams: set[tuple[str, ...]] = set()
        for text in items:
            words = _norm_words(str(text))
            if not words:
                continue
            if len(words) <= SHORT_ITEM_WORDS:
                joined = " ".join(words)
                emoticon = not any(ch.isalnum() for ch in joined)
                if emoticon or (len(joined) >= 3 and not all(w in STOPWORDS for w in words)):
                    self.short.add(tuple(words))
            else:
                self.grams.update(tuple(words[i:i + QUOTE_WORDS]) for i in range(len(words) - QUOTE_WORDS + 1))
        self._max_short = max((len(s) for s in self.short), default=0)

    def quotes_item(self, line: str) -> bool:
        words = _norm_words(line)
        for n in range(1, self._max_short + 1):
            if any(tuple(words[i:i + n]) in self.short for i in range(len(words) - n + 1)):
                return True
        return any(tuple(words[i:i + QUOTE_WORDS]) in self.grams for i in range(len(words) - QUOTE_WORDS + 1))

    def states_label(self, line: str) -> bool:
        return self.label_set is not None and any(k.kind == "statement" for k in find_leaks(line, self.label_set))

    def restates_original(self, line: str) -> bool:
        body = " ".join(line.strip().lstrip("-*•0123456789.) ").split()).lower()
        if len(body) >= 20 and body in self.original:
            return True
        words = content_words(line)
        if len(words) < 4:
            return False
        return any(len(words & s) / len(words) >= RESTATE_SHARE for s in self.sentences if s)

    def fault(self, line: str) -> str | None:
        if self.quotes_item(line):
            return "quotes_item"
        if self.states_label(line):
            return "states_label"
        if self.restates_original(line):
            return "restates_original"
        return None
