"""Judge: the rater's signature. Its instructions carry the annotation guideline (codebook); the rater reads one
item and writes a short rationale (its thinking trace) before the label.

Edit freely: field names `item`, `rationale` and `label` are what thinktrace reads; descriptions and the
docstring are prompt text. The guideline replaces the docstring at run time (``Judge.with_instructions``), so the
guideline is part of the compiled program's JSON and instruction optimizers can rewrite it.
"""

import dspy


class Judge(dspy.Signature):
    """Rate the item according to the annotation guideline."""

    item: str = dspy.InputField(desc="the text to rate")
    rationale: str = dspy.OutputField(desc="brief reasoning that applies the guideline to this item")
    label: str = dspy.OutputField(desc="exactly one label from the label set")
