"""The rater panel that dspy.GEPA / dspy.MIPROv2 optimize: every rater on each item; metric = share of raters
that give the human label."""

from __future__ import annotations

from collections import Counter
from typing import Mapping

import dspy


from thinktrace.guidelines.rater_programs import adapter_of
from thinktrace.records import ITEM, LABEL, RATIONALE


# -- the rater panel optimized by gepa / mipro ----------------------------------------------------------------
class _Shared:
    """LMs and the adapter, shared (not copied) by deep copies of the panel: LMs hold engines and locks."""

    def __init__(self, raters: Mapping[str, dspy.LM], adapter):
        self.raters = dict(raters)
        self.adapters = {name: adapter_of(adapter, name) for name in self.raters}

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self


class RaterPanel(dspy.Module):
    """The rater program run by every rater on each item: what gepa / mipro optimize, so the instructions they
    find are judged by all raters at once. Prediction: `label` (the most frequent parsed label) and `said`
    ({rater: {label, rationale}})."""

    def __init__(self, rater: dspy.Module, raters: Mapping[str, dspy.LM], adapter=None):
        super().__init__()
        self.rater = rater
        self.shared = _Shared(raters, adapter)

    def forward(self, item: str) -> dspy.Prediction:
        said = {}
        for name, lm in self.shared.raters.items():
            with dspy.context(lm=lm, adapter=self.shared.adapters[name]):
                pred = self.rater(**{ITEM: item})
            said[name] = {"label": pred.get(LABEL), "rationale": pred.get(RATIONALE)}
        top = Counter(v["label"] for v in said.values() if v["label"]).most_common(1)
        return dspy.Prediction(label=top[0][0] if top else None, said=said)


def panel_score(gold, pred) -> float:
    said = (pred.get("said") if pred is not None else None) or {}
    return sum(v["label"] == gold.label for v in said.values()) / len(said) if said else 0.0


def panel_metric(gold, pred, trace=None) -> float:
    """MIPROv2 / Evaluate metric: the fraction of raters that gave the human label."""
    return panel_score(gold, pred)


def panel_feedback_metric(gold, pred, trace=None, pred_name=None, pred_trace=None) -> dspy.Prediction:
    """GEPA metric: the same score, with feedback naming the human label and what each rater said."""
    score = panel_score(gold, pred)
    said = (pred.get("said") if pred is not None else None) or {}
    parts = [f"The human label is {gold.label}."]
    for name, v in said.items():
        verdict = "right" if v["label"] == gold.label else "wrong"
        parts.append(f"Rater {name} said {v['label'] or 'an unparseable label'} ({verdict})"
                     + (f", reasoning: {' '.join(str(v['rationale']).split())[:300]}" if v.get("rationale") else ""))
    return dspy.Prediction(score=score, feedback=" ".join(parts))
