"""TraceReader: the trace-quality reader (thinktrace.trace_quality). `reader(item, trace)` gives the label the
trace leads to; `reader(item)` the label for the item alone (the same question, the trace field deleted). Both
answer with the label only.

Output: a Prediction with `label` (a canonical label, or None when the answer could not be parsed: counted, never
guessed), `raw_label` (as the LM wrote it), `raw` (the whole completion when the adapter could not parse it) and
`label_source` ("output", or None). On local models (llama.cpp) the label field is constrained to the label set by
a grammar, as the Rater's is (`Rater.label_constraint`); remote LMs answer freely and are parsed leniently.
"""

from __future__ import annotations

import dspy
from dspy.utils.exceptions import AdapterParseError

from thinktrace.labels import LabelSet
from thinktrace.lm.constrain import constrained_config
from thinktrace.loader import load_relative

ReadTrace = load_relative(__file__, "../signatures/read.py", "ReadTrace")
guideline_instructions = load_relative(__file__, "rater.py", "guideline_instructions")
label_line = load_relative(__file__, "rater.py", "label_line")


class TraceReader(dspy.Module):
    def __init__(self, guideline: str, label_set: LabelSet):
        super().__init__()
        self.label_set = label_set
        task = (ReadTrace.__doc__ or "").strip()
        instructions = f"{task}\n\n{guideline_instructions(guideline, label_set)}" if task else \
            guideline_instructions(guideline, label_set)
        self.with_trace = dspy.Predict(ReadTrace.with_instructions(instructions))
        self.item_only = dspy.Predict(ReadTrace.delete("trace").with_instructions(
            guideline_instructions(guideline, label_set)))

    def forward(self, item: str, trace: str | None = None) -> dspy.Prediction:
        predictor = self.item_only if trace is None else self.with_trace
        inputs = {"item": item} if trace is None else {"item": item, "trace": trace}
        raw = None
        try:
            raw_label = predictor(**inputs, config=self.label_constraint(predictor)).get("label")
        except AdapterParseError as err:  # a broken format: trust only a line that states the label
            raw = err.lm_response or ""
            partial = err.parsed_result if isinstance(err.parsed_result, dict) else {}
            raw_label = partial.get("label") or label_line(raw)
        label = self.label_set.parse(raw_label)
        return dspy.Prediction(label=label, raw_label=raw_label, raw=raw,
                               label_source="output" if label is not None else None)

    def label_constraint(self, predictor) -> dict:
        """Per-call config that limits the label field to the label set on LMs that take a grammar."""
        return constrained_config(dspy.settings.lm, dspy.settings.adapter, predictor.signature,
                                  {"label": list(self.label_set.labels)})
