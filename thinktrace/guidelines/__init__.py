"""Use 2: synthesize and refine the annotation guideline, scored by agreement with humans across all raters.

`refine_guideline` runs R rounds x C candidates. The original guideline is candidate `0-0`; every candidate is
scored on the dev items by the MEAN Krippendorff α (rater vs human) over all configured raters, so the guideline
is not tuned to one model. The best candidate other than the original is the refined guideline (`refined`), which
the pipeline evaluates on test beside the original whether or not it won on dev, so the report always shows what
synthesis did; `best` is the dev winner among all candidates, the original included (ties go to the earlier
candidate, so a synthesis that does not beat the original on dev is never called the winner), and later rounds
revise it.

- optimizer `traces`: round 1 candidates are written from the accepted thinking traces by
  the writer program (`programs.writer`, default thinktrace.programs.guideline:GuidelineWriter: map-reduce per
  label, priority items first, rules assembled with the original in code); round r+1
  candidates revise the best guideline so far from the dev items its raters got wrong.
- optimizer `gepa` / `mipro`: each candidate is one run of DSPy's own instruction optimizer (dspy.GEPA with the
  writer as reflection LM; dspy.MIPROv2 instruction-only, the writer as prompt model) on the rater program over
  train/dev examples, starting from the best guideline so far; the optimized instructions are read back as the
  guideline and scored on dev exactly like trace candidates. The rater program they optimize runs every rater on
  each item (metric: the fraction of raters that give the human label).
- any other optimizer registered by name in `thinktrace.registry.guideline_optimizers` (see
  thinktrace.guidelines.strategies for what one is, and docs/extending.md).

Everything is written under `log_dir` as it happens, so a rerun resumes: `candidates/<round>-<index>.md` (the
text) with `<id>.json` (how it was made: parent, writer calls, fallbacks, rules), `ratings/<id>.jsonl` (one dev
prediction per rater and item) and `candidates.jsonl` (one row per scored candidate). Finished candidates are
neither regenerated nor rescored; a candidate killed while being scored keeps its text and its finished ratings.
"""


from thinktrace.guidelines.config import DEFAULT_WRITER, GuidelinesConfig, check_optimizer, optimizer_of, plan_calls
from thinktrace.guidelines.rater_programs import (adapter_of, factory_of, guideline_from_instructions,
                                                  write_rater_programs)
from thinktrace.guidelines.refine import refine_guideline
from thinktrace.guidelines.strategies import BUILTIN_OPTIMIZERS, priority_from_ratings, priority_from_traces
from thinktrace.guidelines.writer import rollout_seed, writer_copy, writer_limits

__all__ = ["BUILTIN_OPTIMIZERS", "DEFAULT_WRITER", "GuidelinesConfig", "adapter_of", "check_optimizer",
           "factory_of", "guideline_from_instructions", "optimizer_of", "plan_calls", "priority_from_ratings",
           "priority_from_traces",
           "refine_guideline", "rollout_seed", "write_rater_programs", "writer_copy", "writer_limits"]
