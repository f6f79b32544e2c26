"""The label-leak detector: where does a text (a trace, a guideline example, a page) state a label of a label set?

A trace that writes its own label ("…so I label this as -2", "…make it a -3 rating") lets a reader copy the
number instead of following the reasoning. `find_leaks` finds these tokens, `mask` replaces them with a
placeholder, `states_label` says whether a text names a given label. One detector for every caller (the
trace-quality check, the guideline writer, the review page), so they all mask the same way.

What counts as a leak (`Leak.kind`):

- ``numeral``: on a numeric label set, a signed or unsigned integer or decimal whose value is a label: ``2``,
  ``+2``, ``-2``, ``−2`` (U+2212) and ``–2`` (en dash) all count; ``2.0`` is label 2. The number must stand alone:
  it starts after a space, the start of the text, an opening bracket or quote or ``/``, ``word:`` / ``word=``
  (``score:-2``) or a range's dash after a digit, and no letter, digit or ``.digit`` follows. So ``2nd``, ``4chan``, ``COVID-19``'s ``19`` (not a
  label anyway), ``<3`` and an emoticon's ``|-0`` or ``:-0`` are not numerals. A fraction or range counts per
  number: ``2/4`` is two numerals (2 and 4), ``2-3`` too (2 and 3; the hyphen after a digit is no sign).
- ``number_word``: ``minus two`` / ``negative two`` / ``plus two`` / ``positive two`` (a sign word and a number
  word, zero to twenty, or a sign word and a numeral: ``minus 2``) whose signed value is a label; a bare number
  word (``two``) only inside a statement sentence (below), since "one of", "two meanings" are ordinary prose.
  ``one`` after an article or before ``of`` (``a negative one``, ``one of``) is a pronoun, never a number.
- ``label``: a label name that is not a number, as a whole word, case-insensitive, its words separated by any run
  of spaces, tabs, ``_`` or ``-`` (``very abusive``, ``Very_Abusive``): on a nominal set ``positive`` in the
  reasoning is a leak. No token runs over a line break (so none straddles two sentences).
- ``synonym``: a key of the label set's `synonyms` (``data.label_synonyms``), matched the same way.
- ``statement``: a sentence (split at ``.``/``!``/``?`` followed by a space, and at line breaks) that holds one
  of the tokens above and a rating word: rate, rated, rating, label, labelled, labeled, scale, score, scored,
  classified, classify, classification, category, categorized, assign, assigned, grade, graded. Its span is the
  whole sentence (without its final punctuation); `mask` replaces the whole sentence, because what is left of "I
  label this as [label], a moderately negative sentiment" restates the label in the codebook's words.

What it does not catch: the label's meaning in other words ("strongly negative" on a -4..4 scale, unless declared
as a synonym), inflections of a label name (``positively`` for ``positive``), a label by its 1-based position on
a non-numeric set (``option 2``), numbers spelled past twenty, a sign written apart from its number ("a size of 1
on the negative side": ``1`` is masked, but as label 1, not -1), and a label restated in another language. A
mention of the scale's ends ("from -4 to +4") is a leak of -4 and 4: masked, and `states_label` is true for
those two labels. The placeholder itself (``[label]``) never counts as a rating word, so a masked text has no
leaks left (`find_leaks(mask(text)) == []`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from thinktrace.labels import LabelSet

Kind = Literal["label", "synonym", "numeral", "number_word", "statement"]
PLACEHOLDER = "[label]"

_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
          "seventeen eighteen nineteen twenty").split()
NUMBER_WORDS = {w: i for i, w in enumerate(_WORDS)}
_SIGN_WORDS = {"minus": -1, "negative": -1, "plus": 1, "positive": 1}
_MINUS = "-\u2212\u2013"
#: where a numeral may start: after a space, the text's start, an opening bracket or quote, "/", "word:" "word=", or
#: a range's dash after a digit ("2-3": the 3, unsigned)
_BEFORE = r"(?:(?<=^)|(?<=[\s(\[{\"'\u201c\u2018/])|(?<=[A-Za-z][:=])|(?<=\d[-\u2013]))"
_NUMERAL = re.compile(_BEFORE + r"([+\-\u2212\u2013]?\d+(?:\.\d+)?)(?![\w]|\.\d)")
_ALPHA = "|".join(sorted(_WORDS, key=len, reverse=True))
_SIGNED = re.compile(rf"(?<![\w-])(minus|negative|plus|positive)[ \t]+(?:({_ALPHA})|(\d+(?:\.\d+)?))(?![\w]|\.\d)",
                     re.IGNORECASE)
_BARE = re.compile(rf"(?<![\w-])({_ALPHA})(?![\w-])", re.IGNORECASE)
_PRONOUN_BEFORE = re.compile(r"(?:\b(?:a|an|the|this|that|each|any|no|every|another)\s+(?:\w+\s+)?)$", re.IGNORECASE)
_CUE = re.compile(r"(?<!\[)\b(rate|rated|rates|rating|ratings|label|labels|labelled|labeled|labelling|labeling|"
                  r"scale|scales|score|scored|scores|scoring|classified|classify|classification|category|"
                  r"categories|categorized|categorised|assign|assigned|assigns|grade|graded)\b(?!\])", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)]*\s+|\n+")


@dataclass(frozen=True)
class Leak:
    """One place where a text states a label: `text[start:end] == token`; `label` the canonical label it names
    (a statement: the label its tokens name when they agree, else None)."""

    start: int
    end: int
    token: str
    label: str | None
    kind: Kind


def _value(text: str) -> float:
    for minus in _MINUS[1:]:
        text = text.replace(minus, "-")
    return float(text)


def _label_of(value: float, label_set: LabelSet) -> str | None:
    return label_set.canonical(int(value) if float(value).is_integer() else value) if label_set.numeric else None


def _name_pattern(name: str) -> re.Pattern | None:
    words = [w for w in re.split(r"[\s_\-]+", name.strip()) if w]
    if not words:
        return None
    return re.compile(r"(?<![\w])" + r"[ \t_\-]+".join(re.escape(w) for w in words) + r"(?![\w])", re.IGNORECASE)


def _is_pronoun(text: str, start: int, end: int) -> bool:
    """`one` used as a pronoun or in "one of": never a number."""
    if text[start:end].lower() != "one":
        return False
    return bool(_PRONOUN_BEFORE.search(text[:start])) or text[end:end + 4].lower() == " of "


def _sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence, without surrounding whitespace."""
    spans, pos = [], 0
    for m in list(_SENTENCE_END.finditer(text)) + [None]:
        end = m.start() if m else len(text)
        chunk = text[pos:end]
        if chunk.strip():
            lead = len(chunk) - len(chunk.lstrip())
            spans.append((pos + lead, pos + len(chunk.rstrip())))
        pos = m.end() if m else len(text)
    return spans


def _tokens(text: str, label_set: LabelSet) -> list[Leak]:
    """Every token leak (all kinds but statement), bare number words included; overlaps not yet resolved."""
    found: list[Leak] = []

    def add(m: re.Match, group: int, label: str | None, kind: Kind) -> None:
        if label is not None:
            found.append(Leak(m.start(group), m.end(group), m.group(group), label, kind))

    if label_set.numeric:
        for m in _NUMERAL.finditer(text):
            add(m, 1, _label_of(_value(m.group(1)), label_set), "numeral")
        for m in _SIGNED.finditer(text):
            number = NUMBER_WORDS[m.group(2).lower()] if m.group(2) else _value(m.group(3))
            if m.group(2) and m.group(2).lower() == "one" and (
                    _PRONOUN_BEFORE.search(text[:m.start(1)]) or text[m.end():m.end() + 4].lower() == " of "):
                continue  # "a negative one", "positive one of"
            add(m, 0, _label_of(_SIGN_WORDS[m.group(1).lower()] * number, label_set), "number_word")
        for m in _BARE.finditer(text):
            if not _is_pronoun(text, m.start(1), m.end(1)):
                add(m, 1, _label_of(NUMBER_WORDS[m.group(1).lower()], label_set), "number_word")
    for label in label_set.labels:
        if label_set.numeric:
            break
        pattern = _name_pattern(label)
        for m in pattern.finditer(text) if pattern else ():
            add(m, 0, label, "label")
    for key, label in label_set.synonyms.items():
        pattern = _name_pattern(key)
        for m in pattern.finditer(text) if pattern else ():
            add(m, 0, label, "synonym")
    return found


def _resolve(leaks: list[Leak]) -> list[Leak]:
    """Overlapping leaks: the one starting first, then the longest, wins."""
    out: list[Leak] = []
    for leak in sorted(leaks, key=lambda x: (x.start, -(x.end - x.start))):
        if not out or leak.start >= out[-1].end:
            out.append(leak)
    return out


def find_leaks(text: str, label_set: LabelSet) -> list[Leak]:
    """Every leak of a label in `text`, in text order: the token leaks, and one `statement` leak per sentence that
    puts a rating word next to a token (listed before the tokens inside it). A bare number word counts only inside
    a statement."""
    tokens = _resolve(_tokens(text or "", label_set))
    bare = lambda t: t.kind == "number_word" and not _SIGNED.fullmatch(t.token)  # noqa: E731
    out: list[Leak] = []
    for start, end in _sentences(text or ""):
        inside = [t for t in tokens if start <= t.start and t.end <= end]
        if inside and _CUE.search(_without(text[start:end], inside, start)):
            labels = {t.label for t in inside}
            out.append(Leak(start, _strip_end(text, start, end), text[start:_strip_end(text, start, end)],
                            labels.pop() if len(labels) == 1 else None, "statement"))
            out += inside
        else:
            out += [t for t in inside if not bare(t)]
    return out


def _without(sentence: str, tokens: list[Leak], offset: int) -> str:
    """The sentence with its tokens blanked (so a label named "score" is no rating word next to itself)."""
    chars = list(sentence)
    for t in tokens:
        chars[t.start - offset:t.end - offset] = " " * (t.end - t.start)
    return "".join(chars)


def _strip_end(text: str, start: int, end: int) -> int:
    """A sentence's end without its final punctuation (and closing quotes or brackets)."""
    while end > start and text[end - 1] in ".!?\"'\u201d\u2019)":
        end -= 1
    return end


def mask(text: str, label_set: LabelSet, placeholder: str = PLACEHOLDER) -> str:
    """`text` with every leak replaced by `placeholder`: a statement sentence as a whole, other tokens alone."""
    spans: list[tuple[int, int]] = []
    for leak in find_leaks(text, label_set):
        if spans and leak.start < spans[-1][1]:
            continue  # a token inside a statement already masked
        spans.append((leak.start, leak.end))
    out = text or ""
    for start, end in reversed(spans):
        out = out[:start] + placeholder + out[end:]
    return out


def states_label(text: str, label_set: LabelSet, label: str | None = None) -> bool:
    """Whether `text` names `label` (any label when None) in a leak of any kind."""
    return any(leak.kind != "statement" and (label is None or leak.label == label)
               for leak in find_leaks(text, label_set))
