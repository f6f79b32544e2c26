"""Stage `evaluate`: every variant on the evaluation splits (predictions.jsonl is the journal); its summary is the
settled prediction records, which the run's metrics are computed from."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from thinktrace.errors import RunIncomplete
from thinktrace.evaluate import rate_items
from thinktrace.journal import latest_settled, prediction_key
from thinktrace.run.stages.base import PlanContext, Stage, StageResult

if TYPE_CHECKING:  # pragma: no cover
    from thinktrace.run.context import RunContext


class EvaluateStage(Stage):
    name = "evaluate"
    artifacts = ("predictions.jsonl",)

    def plan(self, ctx: PlanContext) -> dict:
        """Every variant the run evaluates (the fine-tuning base among them when no rater runs on it)."""
        spec = ctx.spec
        n = sum(min(ctx.sizes[s], spec.evaluate.max_items or ctx.sizes[s]) for s in spec.evaluate.splits)
        variants = [r.name for r in spec.models.raters] + ctx.variants
        return {"variants": variants, "splits": spec.evaluate.splits, "lm_calls_max": n * len(variants)}

    def run(self, ctx: RunContext) -> StageResult:
        """Rate every variant on every evaluation split; finished (split, variant, item) records are reused."""
        variants = ctx.variants
        log = ctx.rundir.log("predictions.jsonl")
        records = log.read()
        for v in variants:  # every LM first: a local server then loads the base and all its adapters at once
            ctx.lm(v.model)
        done = set(latest_settled(records, prediction_key))  # a retryable failure is rated again
        # variants on the same weights one after another: a model is loaded once per split, not once per switch
        weights = lambda v: (v.model.provider, v.model.model, v.model.training_base or bool(v.model.adapter))  # noqa: E731
        order: dict = {}
        for v in variants:
            order.setdefault(weights(v), len(order))
        grouped = sorted(variants, key=lambda v: order[weights(v)])
        for split in ctx.spec.evaluate.splits:
            items = ctx.eval_items(split)
            for v in grouped:
                ids = {i for (s, r, i) in done if s == split and r == v.name}
                if all(it.item_id in ids for it in items):
                    continue
                records += rate_items(ctx.program_for(v), ctx.lm(v.model), items, log, split=split, rater=v.name,
                                      threads=v.model.num_threads, done=ids, adapter=ctx.prompt_format_for(v.model),
                                      executor=ctx.executor)
        settled = latest_settled(records, prediction_key)
        left = Counter(v.name for split in ctx.spec.evaluate.splits for v in variants
                       for it in ctx.eval_items(split) if (split, v.name, it.item_id) not in settled)
        if left:
            raise RunIncomplete("evaluate", "predictions failed retryably after their retries: " + ", ".join(
                f"{name} {n}" for name, n in left.items()))
        return StageResult(list(settled.values()))
