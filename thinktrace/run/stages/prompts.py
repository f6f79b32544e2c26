"""Stage `prompts`: every rater under each `evaluate.prompts` variant on dev; the best original prompt per rater
(chosen on dev only; the guidelines stage starts from it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from thinktrace.errors import RunIncomplete
from thinktrace.evaluate import rate_items
from thinktrace.journal import latest_settled, prediction_key
from thinktrace.run.stages.base import PlanContext, Stage, StageResult

if TYPE_CHECKING:  # pragma: no cover
    from thinktrace.run.context import RunContext


class PromptsStage(Stage):
    name = "prompts"
    artifacts = ("prompts_dev.jsonl",)

    def enabled(self, spec) -> bool:
        return bool(spec.evaluate.prompts)

    def plan(self, ctx: PlanContext) -> dict:
        spec = ctx.spec
        extra = [name for r in spec.models.raters for name, _, _ in spec.prompt_variants(r)]
        ctx.variants += extra
        return {"variants": extra, "lm_calls_max": ctx.sizes["dev"] * (len(extra) + len(spec.models.raters))}

    def run(self, ctx: RunContext) -> StageResult:
        """Every rater with each of its prompt variants on the dev split (original guideline), journalled in
        prompts_dev.jsonl; per rater, the variant with the highest dev α is its best original prompt (ties keep
        its own prompt). Test numbers never enter the choice."""
        from thinktrace.agreement import rater_vs_human

        variants = [v for v in ctx.variants if v.kind in ("baseline", "prompt")]
        dev = ctx.corpus.split("dev")
        if not dev:
            return StageResult({"note": "no dev split: every rater keeps its own prompt", "best": {}})
        log = ctx.rundir.log("prompts_dev.jsonl")
        records = log.read()
        done = latest_settled(records, prediction_key)
        for v in variants:
            ids = {i for (_, r, i) in done if r == v.name}
            if all(it.item_id in ids for it in dev):
                continue
            records += rate_items(ctx.program_for(v), ctx.lm(v.model), dev, log, split="dev", rater=v.name,
                                  threads=v.model.num_threads, done=ids, adapter=ctx.prompt_format_for(v.model),
                                  desc=f"prompt {v.name} [dev]", executor=ctx.executor)
        done = latest_settled(records, prediction_key)
        left = sum(1 for v in variants for it in dev if ("dev", v.name, it.item_id) not in done)
        if left:
            raise RunIncomplete("prompts", f"{left} dev ratings failed retryably after their retries")
        human = [it.label for it in dev]
        out: dict = {"n_dev": len(dev), "raters": {}, "best": {}}
        best_prompt = {}
        for base in (v for v in variants if v.kind == "baseline"):
            rows = {}
            for v in (x for x in variants if x.rater == base.name):
                est = rater_vs_human(human, [done[("dev", v.name, it.item_id)].get("label") for it in dev],
                                     ctx.corpus.label_set, n_boot=min(ctx.spec.evaluate.bootstrap, 200),
                                     seed=ctx.spec.seed)["alpha"]
                rows[v.name] = {"alpha": est, "format": v.model.prompt_format or ctx.spec.programs.adapter,
                                "order": v.order}
            value = lambda name: rows[name]["alpha"].get("value")  # noqa: E731
            best = base.name
            for name in rows:  # strictly better than the best so far (the rater's own prompt comes first)
                if value(name) is not None and (value(best) is None or value(name) > value(best)):
                    best = name
            out["raters"][base.name] = rows
            out["best"][base.name] = best
            best_prompt[base.name] = next(v for v in variants if v.name == best)
        return StageResult(out, best_prompt=best_prompt)
