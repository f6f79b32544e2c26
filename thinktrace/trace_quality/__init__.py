"""Trace quality: does each accepted trace carry its label?

A reader model (default: the student, the untuned fine-tuning base) is shown an item and one of its traces, never
the trace's label, and asked for the label alone (`thinktrace.programs.reader.TraceReader`, label constrained to
the label set on local models). Per accepted trace the reader answers three times at most: with the trace, on the
item alone, and with a rejected trace of the same example where one exists. The report gives the rate of
returning the human label in each condition, overall and per human label, with 95 % bootstrap CIs and paired
differences on the same traces; a corpus whose traces do not move the reader toward the human label (RULE in
`stats`) gets a warning.

Modules: `config` (the spec section), `units` (the calls, from traces.jsonl and attempts.jsonl), `stats` (the
numbers), `run` (the journalled stage work; imports DSPy).
"""

from thinktrace.trace_quality.config import TraceQualityConfig
from thinktrace.trace_quality.stats import RULE, quality_metrics
from thinktrace.trace_quality.units import CONDITIONS, build_units

__all__ = ["CONDITIONS", "RULE", "TraceQualityConfig", "build_units", "quality_metrics"]
