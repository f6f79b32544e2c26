import pytest

from thinktrace.labels import LabelSet, canonical_str

SENTIMENT = LabelSet.of(["negative", "neutral", "positive"])
SCALE = LabelSet.of([-4, -3, -2, -1, 0, 1, 2, 3, 4], "ordinal")


@pytest.mark.parametrize("raw, expected", [(1.0, "1"), (-3, "-3"), (" pos ", "pos"), ("2.0", "2"), ("2.5", "2.5"),
                                           ("\u22122", "-2")])
def test_canonical_str(raw, expected):
    assert canonical_str(raw) == expected


@pytest.mark.parametrize("text, expected", [
    ("positive", "positive"), ("Positive.", "positive"), ("**NEUTRAL**", "neutral"), ('"negative"', "negative"),
    ("The sentiment is negative", "negative"), ("2", "neutral"), ("3", "positive"),
    ("it is negative, not positive", None), ("", None), (None, None), ("happy", None), ("7", None),
])
def test_parse_nominal(text, expected):
    assert SENTIMENT.parse(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("-2", "-2"), ("Rating: 3.", "3"), ("+4", "4"), ("\u22121", "-1"), ("2 or 3", None), ("5", None),
    ("strongly negative", None), ("3.0", "3"),
])
def test_parse_numeric_scale(text, expected):
    assert SCALE.parse(text) == expected


def test_synonyms_and_structure():
    ls = LabelSet.of(["No", "Unsure", "Yes"], synonyms={"unsafe": "Yes", "safe": "No"})
    assert ls.parse("Unsafe") == "Yes" and ls.parse("yes") == "Yes" and ls.parse("safe.") == "No"
    assert SCALE.value("-4") == 0.0 and SCALE.index("4") == 8
    assert LabelSet.of([1, 2.5, 4], "interval").value("2.5") == 2.5
    assert SCALE.canonical(-2.0) == "-2" and SCALE.canonical("9") is None
    assert SCALE.nearest(1.4) == "-3" and SCALE.nearest(1.5) == "-3"  # value space: ranks; ties go lower


@pytest.mark.parametrize("values, level", [(["a"], "nominal"), (["a", "a"], "nominal"), (["a", "b"], "interval")])
def test_invalid_label_sets(values, level):
    with pytest.raises(ValueError):
        LabelSet.of(values, level)
