"""The stages of a compile run, one module each, registered in run order in `thinktrace.registry.stages` (a user
adds one with `stages.register(name, stage, after=...)`; see docs/extending.md):

1. traces: rejection sampling of thinking traces on the train split.
   self_traces (`sampling.self_traces`): the student's own traces, sampled like the teacher's.
   trace_quality: does each accepted trace carry its label?
2. finetune (use 1): LoRA SFT of the base model on the traces, and its controls.
3. prompts: every rater under each `evaluate.prompts` variant on dev; the best original prompt per rater.
4. guidelines (use 2): candidates synthesized from the traces, scored on dev; the refined-guideline variants.
5. evaluate: every variant on the evaluation splits.

Each stage is an object with `enabled(spec)`, `plan(ctx)` and `run(ctx) -> StageResult` (thinktrace.run.stages.base).
"""

from __future__ import annotations

from thinktrace.registry import stages as registry
from thinktrace.run.stages.base import PlanContext, Stage, StageResult
from thinktrace.run.stages.evaluate import EvaluateStage
from thinktrace.run.stages.finetune import FinetuneStage
from thinktrace.run.stages.guidelines import GuidelinesStage
from thinktrace.run.stages.prompts import PromptsStage
from thinktrace.run.stages.self_traces import SelfTracesStage
from thinktrace.run.stages.trace_quality import TraceQualityStage
from thinktrace.run.stages.traces import TracesStage

BUILTIN = (TracesStage(), SelfTracesStage(), TraceQualityStage(), FinetuneStage(), PromptsStage(), GuidelinesStage(),
           EvaluateStage())
for _stage in BUILTIN:
    if _stage.name not in registry:
        registry.register(_stage.name, _stage)


def stages() -> list[Stage]:
    """The registered stages, in the order they run (and are planned); a stage registered as a class is made with
    no arguments."""
    return [stage() if isinstance(stage, type) else stage for _, stage in registry.items()]


def plan_stages(spec, corpus, reviewed: bool = False) -> dict:
    """{stage name: plan} of the enabled stages, in order (no model is loaded); `reviewed`: a reviewed resume."""
    ctx = PlanContext(spec, corpus, {name: len(corpus.split(name)) for name in ("train", "dev", "test")},
                      reviewed=reviewed)
    for stage in stages():
        if stage.enabled(spec):
            ctx.stages[stage.name] = {**stage.plan(ctx), "writes": list(stage.artifacts)}
    return ctx.stages


__all__ = ["BUILTIN", "PlanContext", "Stage", "StageResult", "plan_stages", "stages"]
