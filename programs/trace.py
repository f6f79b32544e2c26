"""The trace inference program used by the rejection-sampling teleprompter (thinktrace.teleprompt).

- `blind(item)`: the Rater samples (rationale, label) seeing guideline + item only (the paper's method).
- `hint(item, label)`: InferRationale writes a rationale given the human label (STaR-style rationalization).
- `check(item, rationale)`: a blind judge reads the item and that rationale, not the label, and gives a label;
  a hinted trace is accepted only when this label equals the human label.
All three carry the guideline in their instructions. Each says whether the answer that wrote the rationale was
cut: `finish_reason` ("length" = cut by max_tokens; None when the LM does not say) and `cut` (see
`Rater`); a cut rationale is not accepted as a trace unless `sampling.accept_cut`.
"""

from __future__ import annotations

import dspy
from dspy.utils.exceptions import AdapterParseError

from thinktrace.labels import LabelSet
from thinktrace.lm.guard import forget_finish, last_finish
from thinktrace.loader import load_relative
from thinktrace.records import answer_cut

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
        """A rationale for the given label; `rationale` is None when the output had no rationale field;
        `finish_reason` / `cut`: whether max_tokens cut it."""
        forget_finish()
        try:
            rationale, raw = self.hint(item=item, label=label).rationale, None
        except AdapterParseError as err:
            rationale, raw = None, err.lm_response
        finish = last_finish()
        return dspy.Prediction(rationale=rationale, raw=raw, finish_reason=finish, cut=answer_cut(finish, None))

    def verify(self, item: str, rationale: str) -> dspy.Prediction:
        """The label a blind judge derives from item + rationale (None when unparseable; `label_source` "output"
        when parsed, never "choice": the check writes the label alone)."""
        try:
            raw = self.check(item=item, rationale=rationale, config=self.blind.label_constraint(self.check)).label
        except AdapterParseError as err:
            return dspy.Prediction(label=None, raw_label=None, raw=err.lm_response, label_source=None)
        label = self.label_set.parse(raw)
        return dspy.Prediction(label=label, raw_label=raw, raw=None,
                               label_source="output" if label is not None else None)

    def forward(self, item: str, label: str | None = None) -> dspy.Prediction:
        if label is None:
            return self.blind(item=item)
        return self.rationalize(item, label)
