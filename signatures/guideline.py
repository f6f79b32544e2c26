"""Guideline synthesis signatures (used by programs/guideline.py:GuidelineWriter).

Map: `SummarizeTraces` turns one batch of accepted thinking traces of one label into decision rules.
Reduce: `CombineRules` merges several rule lists of the same label into one (in rounds, when there are many).
Merge: `MergeGuideline` writes the new guideline: the original's scope and label definitions plus the rules.
Refine: `ReviseGuideline` rewrites a guideline from the dev examples the raters got wrong.

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


class MergeGuideline(dspy.Signature):
    """Rewrite the annotation guideline so annotators apply it more consistently. Keep its scope, task wording and
    the definition of every label; add the decision rules (when an item gets each label, how borderline cases are
    decided) where they belong. Write the complete guideline, not a summary or a list of changes."""

    guideline: str = dspy.InputField(desc="the original annotation guideline")
    rules: str = dspy.InputField(desc="decision rules per label, learned from the human annotators' reasoning")
    new_guideline: str = dspy.OutputField(
        desc="the complete new guideline: the original scope and label definitions plus the decision rules")


class ReviseGuideline(dspy.Signature):
    """Raters who followed this annotation guideline gave the examples below labels that differ from the human
    annotators' labels. Revise the guideline so a careful rater would give the human label: keep its scope and the
    definition of every label, sharpen or add decision rules for the confusions shown, and state them generally
    (do not mention the examples). Write the complete revised guideline."""

    guideline: str = dspy.InputField(desc="the current annotation guideline")
    errors: str = dspy.InputField(desc="numbered examples: the item, the human label, and what the raters said")
    revised_guideline: str = dspy.OutputField(desc="the complete revised guideline")
