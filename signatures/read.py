"""ReadTrace: the trace-quality reader's signature. A reader sees the item and one thinking trace (never the
trace's own label) and answers with the label alone; `ReadTrace.delete("trace")` is the same question without the
trace. Whether the reader returns the human label more often with the trace than without is whether the trace
carries its label (thinktrace.trace_quality).

Edit freely: field names `item`, `trace` and `label` are what thinktrace reads; descriptions and the docstring
are prompt text (the annotation guideline and the allowed labels follow the docstring at run time).
"""

import dspy


class ReadTrace(dspy.Signature):
    """Read the reasoning about the item and give the label it arrives at."""

    item: str = dspy.InputField(desc="the text that was rated")
    trace: str = dspy.InputField(desc="reasoning about the item, written by an annotator")
    label: str = dspy.OutputField(desc="exactly one label from the label set")
