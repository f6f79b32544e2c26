"""Guideline synthesis signatures (used by programs/guideline.py:GuidelineWriter).

Map: `SummarizeTraces` turns one batch of accepted thinking traces of one label into decision rules.
Reduce: `CombineRules` merges several rule lists of the same label into one (in rounds, when there are many).
Refine: `ReviseRules` rewrites one label's rules from the dev examples of that label the raters got wrong.
The guideline itself is assembled in code (programs/guideline.py): the original text, then the rules per label,
then human-labelled examples; the writer LM writes rules only.

Edit freely: docstrings and field descriptions are prompt text; the field names are what the writer reads.
"""

import dspy


class SummarizeTraces(dspy.Signature):
    """Human annotators gave every item below the same label. Each item comes with the reasoning (thinking trace)
    that leads from the annotation guideline to that label. Write the decision rules that tell when an item gets
    this label: concrete, checkable conditions that the reasoning actually used, including how borderline cases
    were decided. Ground every rule in the traces; do not repeat the guideline or describe single items."""

    guideline: str = dspy.InputField(desc="the original annotation guideline")
    label: str = dspy.InputField(desc="the label every item below received from the humans")
    traces: str = dspy.InputField(desc="numbered items, each with the reasoning that arrives at the label")
    decision_rules: str = dspy.OutputField(
        desc="rules that tell when an item gets this label, grounded in the traces, one per line")


class CombineRules(dspy.Signature):
    """Several lists of decision rules were written for the same label from different annotated items. Combine
    them into one list: keep every distinct rule, merge duplicates and near-duplicates, keep the wording concrete."""

    guideline: str = dspy.InputField(desc="the original annotation guideline")
    label: str = dspy.InputField(desc="the label the rules are for")
    rule_sets: str = dspy.InputField(desc="numbered lists of decision rules for this label")
    decision_rules: str = dspy.OutputField(desc="one combined list of decision rules for this label, one per line")


class ReviseRules(dspy.Signature):
    """Raters who followed the annotation guideline and the decision rules below gave the examples below labels
    that differ from the human annotators' label. Rewrite the decision rules for this label so a careful rater
    would give the human label: keep the rules that hold, sharpen or add rules for the confusions shown, and state
    them generally (do not mention the examples)."""

    guideline: str = dspy.InputField(desc="the original annotation guideline")
    label: str = dspy.InputField(desc="the human label of every example below")
    rules: str = dspy.InputField(desc="the current decision rules for this label")
    errors: str = dspy.InputField(desc="numbered examples: the item, the human label, and what the raters said")
    decision_rules: str = dspy.OutputField(desc="the revised decision rules for this label, one per line")
