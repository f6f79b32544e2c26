"""Guideline synthesis signatures (used by programs/guideline.py:GuidelineWriter).

Map: `SummarizeTraces` turns one batch of accepted thinking traces of one label, side by side with traces of the
neighbouring labels (the contrasts), into decision rules that separate the label from its neighbours.
Reduce: `CombineRules` merges several rule lists of the same label into one (in rounds, when there are many).
Refine: `ReviseRules` rewrites one label's rules from the dev examples of that label the raters got wrong.
Check: `RewriteRule` rewrites one rule that quotes an item, states a label or repeats the guideline (one retry);
`SeparateRules` rewrites a label's rules that say nearly the same as its neighbour's.
The guideline itself is assembled in code (programs/guideline.py): the original text, then the rules per label,
then human-labelled examples; the writer LM writes rules only.

Edit freely: docstrings and field descriptions are prompt text; the field names are what the writer reads.
"""

import dspy


class SummarizeTraces(dspy.Signature):
    """Human annotators gave every item in `traces` the same label. Each item comes with the reasoning (thinking
    trace) that leads from the annotation guideline to that label. `contrasts` shows items of the neighbouring
    labels with their reasoning. Write the decision rules that separate this label from its neighbours: concrete,
    checkable conditions that hold for items of this label and not for the neighbours' items, including how
    borderline cases were decided. State each rule for a whole class of items: do not quote any item, do not
    write label numbers or names (the heading names the label), do not repeat the guideline."""

    guideline: str = dspy.InputField(desc="the original annotation guideline")
    label: str = dspy.InputField(desc="the label every item below received from the humans")
    traces: str = dspy.InputField(desc="numbered items, each with the reasoning that arrives at the label")
    contrasts: str = dspy.InputField(desc="items of the neighbouring labels, with their label and reasoning "
                                     "(none: no neighbour has traces)")
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


class RewriteRule(dspy.Signature):
    """A decision rule for one label of an annotation guideline has a problem, stated below. Rewrite it so the
    problem is gone and the rule still tells when an item gets this label: a general, checkable condition, one
    line. Do not quote items, do not write label numbers or names, do not repeat the guideline."""

    guideline: str = dspy.InputField(desc="the original annotation guideline")
    label: str = dspy.InputField(desc="the label the rule is for")
    rule: str = dspy.InputField(desc="the rule to rewrite")
    problem: str = dspy.InputField(desc="what is wrong with the rule")
    decision_rules: str = dspy.OutputField(desc="the rewritten rule, one line")


class SeparateRules(dspy.Signature):
    """The decision rules of two neighbouring labels of an annotation guideline say nearly the same thing, so a
    rater cannot tell the labels apart with them. Rewrite the rules of `label` so they state what separates its
    items from the items of `neighbour_label`: the conditions that differ, not the ones both share."""

    guideline: str = dspy.InputField(desc="the original annotation guideline")
    label: str = dspy.InputField(desc="the label whose rules are rewritten")
    rules: str = dspy.InputField(desc="the current decision rules of this label")
    neighbour_label: str = dspy.InputField(desc="the neighbouring label")
    neighbour_rules: str = dspy.InputField(desc="the decision rules of the neighbouring label")
    decision_rules: str = dspy.OutputField(desc="the rewritten decision rules of this label, one per line")
