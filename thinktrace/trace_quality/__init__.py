"""Trace quality: does each accepted trace carry its label?

A reader model (default: the student, the untuned fine-tuning base) is shown an item and one of its traces, never
the trace's label, and asked for the label alone (`thinktrace.programs.reader.TraceReader`, label constrained to
the label set on local models). A trace may state its own label ("…so I label this as -2"), which the reader can
copy; the main condition therefore shows the trace with every such statement masked (`thinktrace.leak.mask`, the
same mask for accepted and rejected traces), and the raw trace is a second condition. Per accepted trace the reader
answers five times at most: with the masked trace, with the raw trace, on the item alone, and with a rejected
trace of the same example (masked, and raw) where one exists. The report gives the rate of returning the human
label in each condition, overall and per human label, with 95 % bootstrap CIs and paired differences on the same
traces, and how many traces state their label; a corpus whose masked traces do not move the reader toward the
human label (RULE in `stats`) gets a warning.

Modules: `config` (the spec section), `units` (the calls, from traces.jsonl and attempts.jsonl), `stats` (the
numbers); the stage itself is `thinktrace.run.stages.trace_quality`.
"""

from thinktrace.trace_quality.config import TraceQualityConfig
from thinktrace.trace_quality.stats import RULE, leak_stats, quality_metrics
from thinktrace.trace_quality.units import CONDITIONS, build_units

__all__ = ["CONDITIONS", "RULE", "TraceQualityConfig", "build_units", "leak_stats", "quality_metrics"]
