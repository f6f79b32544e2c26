"""Rater: the guideline + one Judge prediction, with lenient label parsing.

`Rater(guideline, label_set, order="rationale_first")` is what every configured LM runs on each item; with
`order="label_first"` the answer states the label before its rationale (a prompt variant, `evaluate.prompts`). Output: a Prediction with
`rationale` (None when the output had none), `label` (a canonical label, or None when the output could not be
parsed - counted, never guessed), `raw_label` (the label as the LM wrote it), `raw` (the LM's whole completion
when the adapter could not parse it), `label_source`: "output" (parsed from the answer), "choice" (the answer
was cut before its label, e.g. by max_tokens, and a local model completed it under a grammar that allows only
the label set) or None, `finish_reason` (of the answer's own call, before any completion under the grammar:
"stop", "length" = cut by max_tokens, or None when the LM does not say) and `cut` (`answer_cut`: the answer was
cut by max_tokens or stopped before its label, so its rationale may be unfinished; rejection sampling does not
accept such an answer as a trace unless `sampling.accept_cut`).

On local models (llama.cpp) the answer is constrained by a grammar (thinktrace.lm.constrain): the label field can
only hold a label of the label set, so every uncut answer parses. Remote LMs answer freely and are parsed leniently.
"""

from __future__ import annotations

import re

import dspy
from dspy.utils.exceptions import AdapterParseError

from thinktrace.prompt_formats import choose_field
from thinktrace.labels import LabelSet
from thinktrace.lm.constrain import constrained_config
from thinktrace.lm.guard import forget_finish, last_finish
from thinktrace.loader import load_relative
from thinktrace.records import answer_cut

Judge = load_relative(__file__, "../signatures/judge.py", "Judge")

# A line that states the label: `Label: x`, `**label** - x`, `"label": "x"`, `[[ ## label ## ]] x`.
_LABEL_LINE = re.compile(r"""^[\s#*>"'\[_-]*label[\s#*"'\]_]*[:=-]?\s*(?P<value>.*?)[\s",]*$""", re.I | re.M)


def guideline_instructions(guideline: str, label_set: LabelSet) -> str:
    """The signature instructions: the guideline, then the allowed labels."""
    return f"{guideline.strip()}\n\nThe label must be {label_set.describe()}."


def label_line(raw: str) -> str | None:
    """The value of the last line that states a label, or None. Nothing else in a broken completion is trusted
    (a number in a code block is not a rating)."""
    values = [m.group("value") for m in _LABEL_LINE.finditer(raw or "") if m.group("value")]
    return values[-1] if values else None


ORDERS = ("rationale_first", "label_first")


def judge_signature(order: str = "rationale_first"):
    """The Judge signature with its outputs in `order` (label_first: the label, then the rationale)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if order == "rationale_first":
        return Judge
    field = Judge.output_fields["rationale"]
    return Judge.delete("rationale").append("rationale", field, type_=str)


class Rater(dspy.Module):
    def __init__(self, guideline: str, label_set: LabelSet, order: str = "rationale_first"):
        super().__init__()
        self.label_set = label_set
        self.order = order
        self.judge = dspy.Predict(judge_signature(order).with_instructions(
            guideline_instructions(guideline, label_set)))

    def forward(self, item: str) -> dspy.Prediction:
        forget_finish()  # the finish reason read below is this answer's (a GuardedLM sets it; None otherwise)
        try:
            out = self.judge(item=item, config=self.label_constraint(self.judge))
            rationale, raw_label, raw = out.get("rationale") or None, out.get("label"), None
            finish = last_finish()
        except AdapterParseError as err:
            finish = last_finish()
            # Small models often break the format; keep what was parsed and look for a stated label line.
            raw = err.lm_response or ""
            partial = err.parsed_result if isinstance(err.parsed_result, dict) else {}
            rationale = partial.get("rationale") or None
            raw_label = partial.get("label") or label_line(raw)
            if rationale is None and "rationale" in self.judge.signature.output_fields and raw_label is None:
                rationale = raw.strip() or None  # the whole answer was reasoning without any field marker
        label = self.label_set.parse(raw_label)
        source = "output" if label is not None else None
        if label is None and (rationale or "rationale" not in self.judge.signature.output_fields):
            label = self.choose(item, rationale)
            source = "choice" if label is not None else None
        return dspy.Prediction(rationale=rationale, label=label, raw_label=raw_label, raw=raw, label_source=source,
                               finish_reason=finish, cut=answer_cut(finish, source))

    def label_constraint(self, predictor) -> dict:
        """Per-call config that limits the label field to the label set on LMs that take a grammar."""
        return constrained_config(dspy.settings.lm, dspy.settings.adapter, predictor.signature,
                                  {"label": list(self.label_set.labels)})

    def choose(self, item: str, rationale: str | None) -> str | None:
        """The label a local model writes, constrained to the label set, after its own cut answer (None for LMs
        that take no grammar)."""
        outputs = {"rationale": rationale} if rationale else {}
        return choose_field(dspy.settings.lm, dspy.settings.adapter, self.judge, {"item": item}, outputs, "label",
                            list(self.label_set.labels))


class LabelOnlyRater(Rater):
    """The Rater without a rationale: the label-only fine-tuning ablation answers with the label alone, so it is
    prompted (and trained) with the Judge signature minus its `rationale` field."""

    def __init__(self, guideline: str, label_set: LabelSet, order: str = "rationale_first"):
        super().__init__(guideline, label_set)
        self.judge = dspy.Predict(Judge.delete("rationale").with_instructions(
            guideline_instructions(guideline, label_set)))
