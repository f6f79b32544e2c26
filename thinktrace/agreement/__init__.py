"""Agreement between LLM raters and humans: Krippendorff's α, classification and scale metrics, bootstrap CIs.

Public API:
    Estimate            point value + 95 % percentile-bootstrap interval + n (`.as_dict()` is JSON-safe)
    alpha               Krippendorff's α of a coders x items matrix (nan when undefined)
    rater_vs_human      one rater vs the aggregated human label (α, accuracy/macro-F1 or MAE/Spearman/accuracy)
    paired_difference   rater b minus rater a on the same items, paired bootstrap
    human_ceiling       human inter-annotator α and leave-one-annotator-out α (the ceiling for a rater)
    inter_rater_alpha   α among several LLM raters
    paired_inter_rater_difference  α among one group of LLM raters minus another's, same items, paired bootstrap
    majority            most frequent label, ties -> earliest in the label set

α reads: 1 perfect agreement, 0 agreement at chance level, < 0 systematic disagreement.
"""

from thinktrace.agreement._alpha import alpha
from thinktrace.agreement._ceiling import human_ceiling, majority
from thinktrace.agreement._estimate import Estimate
from thinktrace.agreement._inter_rater import inter_rater_alpha, paired_inter_rater_difference
from thinktrace.agreement._paired import paired_difference
from thinktrace.agreement._rater import rater_vs_human

__all__ = [
    "Estimate",
    "alpha",
    "human_ceiling",
    "inter_rater_alpha",
    "majority",
    "paired_difference",
    "paired_inter_rater_difference",
    "rater_vs_human",
]
