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
    assert SCALE.nearest(1.4) == "-3" and SCALE.nearest(1.5, "lower") == "-3"  # value space: ranks


def test_midpoint_ties_are_symmetric_and_flagged():
    """A mean/median halfway between two labels rounds half to even in rank space: as many ties go up as down (the
    old rule sent every one to the lower label)."""
    ranks = [k + 0.5 for k in range(8)]  # every midpoint of the -4..4 scale, in rank space
    picked = [SCALE.round(x) for x in ranks]
    assert all(tied for _, tied in picked) and SCALE.round(3.0) == ("-1", False)
    assert [SCALE.index(lab) for lab, _ in picked] == [0, 2, 2, 4, 4, 6, 6, 8]  # the even rank of each pair
    up = sum(SCALE.index(lab) > x for (lab, _), x in zip(picked, ranks))
    assert up == len(ranks) - up == 4
    mirrored = [SCALE.nearest(8 - x) for x in ranks]  # reflecting the scale reflects the choice
    assert [SCALE.index(lab) for lab in mirrored] == [8 - SCALE.index(lab) for lab, _ in picked]
    assert SCALE.nearest(3.5, "lower") == "-1" and SCALE.nearest(3.5, "upper") == "0"
    odd = LabelSet.of([5, 1, 2, 4], "interval")  # interval: midpoints of the values, ranks in value order
    assert odd.round(3.0) == ("4", True) and odd.round(1.5) == ("1", True) and odd.nearest(4.5, "lower") == "4"
    with pytest.raises(ValueError, match="tie_break must be one of"):
        SCALE.nearest(1.5, "down")


@pytest.mark.parametrize("values, level", [(["a"], "nominal"), (["a", "a"], "nominal"), (["a", "b"], "interval")])
def test_invalid_label_sets(values, level):
    with pytest.raises(ValueError):
        LabelSet.of(values, level)
