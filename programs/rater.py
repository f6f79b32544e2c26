"""Rater: the guideline + one Judge prediction, with lenient label parsing.

`Rater(guideline, label_set)` is what every configured LM runs on each item. Output: a Prediction with
`rationale`, `label` (a canonical label, or None when the output could not be parsed - counted, never guessed),
`raw_label` (the label field as the LM wrote it) and `raw` (the LM's whole completion when the adapter could not
parse it).
"""

from __future__ import annotations

import dspy
from dspy.utils.exceptions import AdapterParseError

from thinktrace.labels import LabelSet
from thinktrace.programs import load_relative

Judge = load_relative(__file__, "../signatures/judge.py", "Judge")


def guideline_instructions(guideline: str, label_set: LabelSet) -> str:
    """The signature instructions: the guideline, then the allowed labels."""
    return f"{guideline.strip()}\n\nThe label must be {label_set.describe()}."


class Rater(dspy.Module):
    def __init__(self, guideline: str, label_set: LabelSet):
        super().__init__()
        self.label_set = label_set
        self.judge = dspy.Predict(Judge.with_instructions(guideline_instructions(guideline, label_set)))

    def forward(self, item: str) -> dspy.Prediction:
        try:
            out = self.judge(item=item)
        except AdapterParseError as err:
            # Small models often break the field format; look for a label in the raw completion instead.
            raw = err.lm_response or ""
            return dspy.Prediction(rationale=raw, label=self.label_set.parse(_after_label_marker(raw)),
                                   raw_label=None, raw=raw)
        raw_label = out.get("label")
        return dspy.Prediction(rationale=out.get("rationale") or "", label=self.label_set.parse(raw_label),
                               raw_label=raw_label, raw=None)


def _after_label_marker(raw: str) -> str:
    """The text after the last 'label' marker when there is one (so a rationale mentioning labels is skipped)."""
    lowered = raw.lower()
    cut = lowered.rfind("label")
    return raw[cut + len("label"):] if cut >= 0 else raw
