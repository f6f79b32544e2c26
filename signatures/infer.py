"""InferRationale: given the item AND the human label, write the reasoning that leads from the guideline to that
label (STaR-style rationalization). Used by the hinted trace-inference strategy; a blind Judge must then reproduce
the label from the rationale alone before the trace is accepted."""

import dspy


class InferRationale(dspy.Signature):
    """Explain, following the annotation guideline, why a careful annotator gave this item this label."""

    item: str = dspy.InputField(desc="the text that was rated")
    label: str = dspy.InputField(desc="the label the human annotator gave")
    rationale: str = dspy.OutputField(desc="brief reasoning, in the annotator's voice, that arrives at the label")


class CheckRationale(dspy.Signature):
    """Read the reasoning about the item and give the label it supports, following the annotation guideline."""

    item: str = dspy.InputField(desc="the text that was rated")
    rationale: str = dspy.InputField(desc="reasoning about the item")
    label: str = dspy.OutputField(desc="exactly one label from the label set")
