"""The label-leak detector (thinktrace.leak): on a fixture of real traces with their expected masks written out, and
on hand-made edge cases (signs, number words, emoticons, nominal label names, synonyms)."""

import pytest
from support import DATA, read_jsonl

from thinktrace.labels import LabelSet
from thinktrace.leak import PLACEHOLDER, find_leaks, mask, states_label

FIXTURE = DATA / "leak_traces.jsonl"
VADER = LabelSet.of(range(-4, 5), level="ordinal")
SENTIMENT = LabelSet.of(["negative", "neutral", "positive"], synonyms={"meh": "neutral"})
ABUSE = LabelSet.of(["not abusive", "abusive", "very abusive"], level="ordinal")


def _rows() -> list[dict]:
    return read_jsonl(FIXTURE)


@pytest.mark.parametrize("row", _rows(), ids=lambda r: f"{r['item']}-{r['strategy']}-{r['accepted']}")
def test_real_traces_are_masked_as_written_out_and_leave_no_leak(row):
    label_set = LabelSet.of(row["label_set"], level=row["level"])
    masked = mask(row["text"], label_set)
    assert masked == row["masked"]
    assert find_leaks(masked, label_set) == []  # residual leaks after masking: none
    assert mask(masked, label_set) == masked
    assert states_label(row["text"], label_set, row["label"]) is row["states_label"]
    assert not states_label(masked, label_set)


def test_the_fixture_holds_accepted_and_rejected_traces_that_do_and_do_not_state_their_label():
    rows = _rows()
    kinds = {(r["accepted"], r["states_label"]) for r in rows}
    assert kinds == {(True, True), (True, False), (False, True), (False, False)} and 20 <= len(rows) <= 30
    assert all(r["accepted"] == (r["label"] == r["human"]) for r in rows if r["strategy"] == "blind")


def test_a_statement_is_masked_as_a_whole_sentence_and_other_numerals_alone():
    text = "It hurts. Therefore, I label this as -2, a moderate negative. The size is 2 here."
    leaks = find_leaks(text, VADER)
    assert [(x.kind, x.token, x.label) for x in leaks] == [
        ("statement", "Therefore, I label this as -2, a moderate negative", "-2"), ("numeral", "-2", "-2"),
        ("numeral", "2", "2")]
    assert text[leaks[0].start:leaks[0].end] == leaks[0].token
    assert mask(text, VADER) == "It hurts. [label]. The size is [label] here."
    assert states_label(text, VADER, "-2") and states_label(text, VADER, "2") and not states_label(text, VADER, "3")


@pytest.mark.parametrize("text, labels", [
    ("it is +2", ["2"]), ("it is \u22122", ["-2"]), ("it is \u20133", ["-3"]), ("(-1)", ["-1"]),
    ('"-4"', ["-4"]), ("2.0 fits", ["2"]), ("2/4 fits", ["2", "4"]), ("a 2-3 word", ["2", "3"]),
    ("score:-2 it is", ["-2"]), ("minus two", ["-2"]), ("Negative Three overall", ["-3"]), ("plus 1", ["1"]),
    ("minus 2", ["-2"]),
    # not numerals: part of a word, an emoticon, a non-label value, a pronoun
    ("a 2nd try", []), ("on 4chan", []), ("the item |-0 and :-0", []), ("<3 means love", []),
    ("1.5 or 10 or 100", []), ("minus five", []), ("it has two meanings", []), ("a negative one", []),
    ("one of the words", []), ("It is one of the best rated words.", []),
])
def test_numerals_and_number_words_on_a_numeric_scale(text, labels):
    assert [x.label for x in find_leaks(text, VADER) if x.kind != "statement"] == labels
    assert find_leaks(mask(text, VADER), VADER) == []


def test_a_bare_number_word_counts_only_inside_a_statement():
    assert find_leaks("It has two sides.", VADER) == []
    text = "It has two sides. I would rate it two."
    assert [(x.kind, x.token) for x in find_leaks(text, VADER)] == [("statement", "I would rate it two"),
                                                                   ("number_word", "two")]
    assert mask(text, VADER) == "It has two sides. [label]."


def test_nominal_label_names_and_synonyms_are_leaks_as_whole_words():
    text = "This reads Positive overall; meh at worst. Positivity is not a label word. I label it neutral."
    got = [(x.kind, x.token, x.label) for x in find_leaks(text, SENTIMENT)]
    assert got == [("label", "Positive", "positive"), ("synonym", "meh", "neutral"),
                   ("statement", "I label it neutral", "neutral"), ("label", "neutral", "neutral")]
    assert mask(text, SENTIMENT) == "This reads [label] overall; [label] at worst. Positivity is not a label word. [label]."
    assert find_leaks("the 2 cats and minus two dogs", SENTIMENT) == []  # numbers are no leak on a nominal set


def test_multi_word_labels_match_whole_phrases_only():
    text = "Very_Abusive language, not Abusive at all, and abusiveness."
    got = [(x.token, x.label) for x in find_leaks(text, ABUSE)]
    assert got == [("Very_Abusive", "very abusive"), ("not Abusive", "not abusive")]
    assert mask(text, ABUSE, placeholder="___") == "___ language, ___ at all, and abusiveness."


def test_no_token_runs_over_a_line_break():
    """A sign word or a label name broken over two lines is two sentences: the parts are judged alone, and nothing
    that is a leak on its own is lost."""
    assert [(x.token, x.label) for x in find_leaks("it is minus\n2", VADER)] == [("2", "2")]
    assert [x.token for x in find_leaks("so: very\nabusive", ABUSE)] == ["abusive"]
    assert mask("it is minus\n2", VADER) == "it is minus\n[label]"


def test_the_placeholder_is_no_rating_word_and_masking_settles_in_one_pass():
    text = "Two readings exist: -2 fits."
    masked = mask(text, VADER)
    assert masked == f"Two readings exist: {PLACEHOLDER} fits." and find_leaks(masked, VADER) == []
    assert mask("", VADER) == "" and find_leaks("", VADER) == [] and not states_label("", VADER)
