"""Programs that infer thinking traces behind human labels (used by the rejection-sampling teleprompter).

BlindTrace: the Judge samples (rationale, label) seeing guideline + item only (the paper's method).
HintedTrace: InferRationale writes a rationale given the human label; a blind Judge, given the item and that
rationale but not the label, must reproduce the label for the trace to be accepted.
"""

from __future__ import annotations

import dspy

from thinktrace.labels import LabelSet
from thinktrace.programs import load_relative

InferRationale = load_relative(__file__, "../signatures/infer.py", "InferRationale")
Rater = load_relative(__file__, "rater.py", "Rater")
guideline_instructions = load_relative(__file__, "rater.py", "guideline_instructions")


class TraceInferrer(dspy.Module):
    """Holds both trace generators; the teleprompter decides which to call and whether to accept."""

    def __init__(self, guideline: str, label_set: LabelSet):
        super().__init__()
        self.label_set = label_set
        self.blind = Rater(guideline, label_set)
        self.hint = dspy.Predict(InferRationale.with_instructions(guideline_instructions(guideline, label_set)))

    def forward(self, item: str, label: str | None = None) -> dspy.Prediction:
        if label is None:
            return self.blind(item=item)
        return dspy.Prediction(rationale=self.hint(item=item, label=label).rationale, label=label)
