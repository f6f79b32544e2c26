"""The trace inference program used by the rejection-sampling teleprompter (thinktrace.teleprompt).

- `blind(item)`: the Rater samples (rationale, label) seeing guideline + item only (the paper's method).
- `hint(item, label)`: InferRationale writes a rationale given the human label (STaR-style rationalization).
- `check(item, rationale)`: a blind judge reads the item and that rationale, not the label, and gives a label;
  a hinted trace is accepted only when this label equals the human label.
All three carry the guideline in their instructions.
"""

from __future__ import annotations

import dspy
from dspy.utils.exceptions import AdapterParseError

from thinktrace.labels import LabelSet
from thinktrace.loader import load_relative

InferRationale = load_relative(__file__, "../signatures/infer.py", "InferRationale")
CheckRationale = load_relative(__file__, "../signatures/infer.py", "CheckRationale")
Rater = load_relative(__file__, "rater.py", "Rater")
guideline_instructions = load_relative(__file__, "rater.py", "guideline_instructions")


class TraceInferrer(dspy.Module):
    def __init__(self, guideline: str, label_set: LabelSet):
        super().__init__()
        self.label_set = label_set
        instructions = guideline_instructions(guideline, label_set)
        self.blind = Rater(guideline, label_set)
        self.hint = dspy.Predict(InferRationale.with_instructions(instructions))
        self.check = dspy.Predict(CheckRationale.with_instructions(instructions))

    def rationalize(self, item: str, label: str) -> dspy.Prediction:
        """A rationale for the given label; `rationale` is None when the output had no rationale field."""
        try:
            return dspy.Prediction(rationale=self.hint(item=item, label=label).rationale)
        except AdapterParseError as err:
            return dspy.Prediction(rationale=None, raw=err.lm_response)

    def verify(self, item: str, rationale: str) -> dspy.Prediction:
        """The label a blind judge derives from item + rationale (None when unparseable)."""
        try:
            raw = self.check(item=item, rationale=rationale, config=self.blind.label_constraint(self.check)).label
        except AdapterParseError as err:
            return dspy.Prediction(label=None, raw_label=None, raw=err.lm_response)
        return dspy.Prediction(label=self.label_set.parse(raw), raw_label=raw, raw=None)

    def forward(self, item: str, label: str | None = None) -> dspy.Prediction:
        if label is None:
            return self.blind(item=item)
        return self.rationalize(item, label)
