"""Agreement between LLM raters and humans: Krippendorff's α, classification and scale metrics, bootstrap CIs.

Public API:
    Estimate            point value + 95 % percentile-bootstrap interval + n, resamples drawn (n_boot) and defined
                        (n_valid); the CI is undefined below 95 % defined (`.as_dict()` is JSON-safe)
    alpha               Krippendorff's α of a coders x items matrix (nan when undefined)
    rater_vs_human      one rater vs the aggregated human label (α, accuracy/macro-F1 or MAE/Spearman/accuracy,
                        Kendall's τ-b and ICC(3,1); the last two None (n/a) on nominal labels)
    paired_difference   rater b minus rater a on the same items, paired bootstrap (one- and two-sided p)
    paired_mean_difference  mean over raters of α under program b minus under program a, paired bootstrap
    holm                Holm–Bonferroni adjusted p-values of one family of comparisons
    human_ceiling       human inter-annotator α and leave-one-annotator-out α (the ceiling for a rater; its targets
                        are built by the gold rule, `thinktrace.gold`, with the same aggregate and `tie_break`)
    inter_rater_alpha   α among several LLM raters
    paired_inter_rater_difference  α among one group of LLM raters minus another's, same items, paired bootstrap
    inter_rater_icc     ICC(3,1) (two-way mixed, consistency, single rater) among several LLM raters
    paired_inter_rater_icc_difference  ICC(3,1) among one group minus another's, same items, paired bootstrap
    kendall_tau_b, icc3_1, icc_moment_rows  the statistics themselves, on (weighted) tables
    majority            most frequent label, ties broken by `tie_break` as the gold labels are (`thinktrace.gold`)

α reads: 1 perfect agreement, 0 agreement at chance level, < 0 systematic disagreement.
"""

from thinktrace.agreement._alpha import alpha
from thinktrace.agreement._ceiling import human_ceiling, majority
from thinktrace.agreement._estimate import Estimate
from thinktrace.agreement._icc import icc3_1, icc_moment_rows
from thinktrace.agreement._inter_rater import inter_rater_alpha, paired_inter_rater_difference
from thinktrace.agreement._inter_rater_icc import inter_rater_icc, paired_inter_rater_icc_difference
from thinktrace.agreement._kendall import kendall_tau_b
from thinktrace.agreement._paired import holm, paired_difference, paired_mean_difference
from thinktrace.agreement._rater import rater_vs_human

__all__ = [
    "Estimate",
    "alpha",
    "holm",
    "human_ceiling",
    "icc3_1",
    "icc_moment_rows",
    "inter_rater_alpha",
    "inter_rater_icc",
    "kendall_tau_b",
    "majority",
    "paired_difference",
    "paired_mean_difference",
    "paired_inter_rater_difference",
    "paired_inter_rater_icc_difference",
    "rater_vs_human",
]
