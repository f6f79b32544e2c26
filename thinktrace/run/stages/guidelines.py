"""Stage `guidelines` (use 2): candidates synthesized from the traces, scored on dev across all raters (each
candidate's ratings journalled); guideline.md and one compiled program per rater; the refined-guideline variants.
A reviewed resume (`compile --reviewed`) also refines the guideline from the reviewed traces (journalled in
reviewed/guidelines/, written to reviewed/guideline.md): kind `reviewed-refined-guideline`, paired against the
guideline refined from the raw traces."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from thinktrace.run.stages.base import PlanContext, Stage, StageResult
from thinktrace.variants import Variant, demos_name, guideline_name, reviewed

if TYPE_CHECKING:  # pragma: no cover
    from thinktrace.run.context import RunContext


def guideline_parts(g) -> list[str]:
    """The synthesized guidelines a run evaluates: the refined one, and its ablations (plan and run)."""
    return ["refined"] + (["rules", "examples"] if g.ablation and g.optimizer == "traces" and g.examples_per_label
                          else [])


class GuidelinesStage(Stage):
    name = "guidelines"
    artifacts = ("guidelines/", "guideline.md", "guideline.original.md", "programs/")

    def enabled(self, spec) -> bool:
        return spec.guidelines.enabled

    def plan(self, ctx: PlanContext) -> dict:
        from thinktrace.guidelines import check_optimizer, plan_calls

        spec, g = ctx.spec, ctx.spec.guidelines
        check_optimizer(g)
        per_label = Counter(ex.label for ex in ctx.examples)
        demos = bool(spec.sampling.enabled and spec.sampling.max_demos)
        calls = plan_calls(g, {k: v * spec.sampling.keep for k, v in per_label.items()}, len(spec.models.raters),
                           ctx.sizes["dev"], ctx.sizes["train"], n_labels=len(ctx.corpus.label_set.labels),
                           with_demos=demos)
        # every baseline the run has by now: the configured raters, and the fine-tuning base when the finetune stage
        # added it as a baseline of its own (no rater on it)
        names = [r.name for r in spec.models.raters]
        if spec.finetune.enabled and ctx.roles.base_rater() is None:
            names.append(ctx.roles.base_name())
        ctx.variants += [guideline_name(name, part) for part in guideline_parts(g) for name in names]
        if demos:  # when the traces stage finds demos to show
            ctx.variants += [guideline_name(r.name, COMPILED) for r in spec.models.raters]
        if ctx.reviewed and spec.sampling.enabled:
            ctx.variants += [guideline_name(name, reviewed("refined")) for name in names]
            calls = {k: 2 * v for k, v in calls.items()}
        return {"optimizer": g.optimizer, "compete": list(g.compete), "rounds": g.rounds, "candidates": g.candidates,
                "writer_calls": calls["writer_calls"], "lm_calls_max": calls["writer_calls"] + calls["rater_calls"]}

    def run(self, ctx: RunContext) -> StageResult:
        """Synthesize and refine the guideline from the traces (candidates scored on dev by mean α across all
        raters); write guideline.md and one compiled program per rater; the summary: the refinement; the variants:
        each rater under each synthesized guideline, when the writer changed it."""
        from thinktrace.guidelines import write_rater_programs

        traces = ctx.rundir.log("traces.jsonl").read() if ctx.spec.sampling.enabled else []
        # each configured rater with its best original prompt (chosen on dev; its own prompt without variants)
        baselines = [ctx.best_prompt.get(v.name, v) for v in ctx.baselines()]
        raters = {v.name: ctx.lm(v.model) for v in baselines}
        factories = {v.name: (lambda g, v=v: ctx.program_for(v, g)) for v in baselines}
        result = self.refine(ctx, traces, baselines, "guidelines")
        # guideline.md: the refined guideline (what the report diffs and evaluates); programs/: what dev chose
        demos = self.demo_factory(ctx, baselines) if result.get("chosen_demos") else None
        write_rater_programs(result["refined"], raters, demos or factories, ctx.rundir.path, original=ctx.guideline,
                             program_guideline=result.get("chosen", result["refined"]))
        more = self.reviewed_refined(ctx, baselines, bool(result.get("refined_changed"))) \
            if ctx.reviewed and ctx.spec.sampling.enabled else None
        if more is not None:
            result["reviewed"], more = more
        if not result.get("refined_changed"):
            return StageResult(result, more or [])  # the writer left the guideline unchanged: nothing new
        # evaluated on test whether or not it won on dev: the report shows the dev verdict beside the test numbers;
        # paired against the best original prompt (and the rater's own prompt when that is another one)
        texts = {"refined": result["refined"], **(result.get("ablation_texts") or {})}
        kinds = {"refined": "refined-guideline"}
        variants = []
        for part, text in texts.items():
            for v in baselines:
                against = [v.name] + ([v.rater] if v.rater != v.name else [])
                variants.append(Variant(name=guideline_name(v.rater, part), model=v.model, guideline=text,
                                        kind=kinds.get(part, f"guideline-{part}"), rater=v.name, order=v.order,
                                        compare_to=against))
        variants += compiled_raters(ctx, baselines, result["refined"])
        return StageResult(result, variants + (more or []))

    def refine(self, ctx: RunContext, traces: list[dict], baselines: list[Variant], log_dir: str,
               demos: bool = True) -> dict:
        """`guidelines.refine_guideline` from `traces`, candidates journalled in `log_dir` of the run folder."""
        from thinktrace.guidelines import priority_from_traces, refine_guideline

        writer = ctx.roles.writer()
        return refine_guideline(
            ctx.spec.guidelines, original=ctx.guideline, traces=traces,
            writer_lm=ctx.lm(writer.model, writer.field, role="writer"),
            raters={v.name: ctx.lm(v.model) for v in baselines},
            rater_factory={v.name: (lambda g, v=v: ctx.program_for(v, g)) for v in baselines},
            dev_items=ctx.corpus.split("dev"), label_set=ctx.corpus.label_set,
            adapter={v.name: ctx.prompt_format_for(v.model) for v in baselines}, writer_adapter=ctx.prompt_format,
            seed=ctx.spec.seed, n_boot=min(ctx.spec.evaluate.bootstrap, 200),
            log_dir=ctx.rundir.file(log_dir), priority=priority_from_traces(traces),
            train_items=ctx.corpus.split("train"), threads={v.name: v.model.num_threads for v in baselines},
            writer_program=ctx.program_class("writer"),
            demo_factory=self.demo_factory(ctx, baselines) if demos else None)

    @staticmethod
    def demo_factory(ctx: RunContext, baselines: list[Variant]) -> dict | None:
        """The trace demos compete in the selection (demos only, and the compiled program) when every rater has
        them: {rater: program factory with its demos}; None otherwise."""
        demo_variants = {v.name: ctx.variant(demos_name(v.rater)) for v in baselines}
        if demo_variants and all(d is not None and d.demos for d in demo_variants.values()):
            return {name: (lambda g, d=d: ctx.program_for(d, g)) for name, d in demo_variants.items()}
        return None

    def reviewed_refined(self, ctx: RunContext, baselines: list[Variant], raw_changed: bool) -> tuple[dict, list]:
        """The guideline refined from the reviewed traces (reviewed/guideline.md): (its refinement summary, each
        rater under it, paired against the raw traces' refined guideline and the original prompt). No variant
        when the writer left the guideline unchanged."""
        kept, counts = ctx.reviewed_traces()
        ctx.rundir.file("reviewed").mkdir(exist_ok=True)
        result = self.refine(ctx, kept, baselines, "reviewed/guidelines", demos=False)  # raw demos: not this set
        ctx.rundir.write_text("reviewed/guideline.md", result["refined"].rstrip() + "\n")
        summary = {k: v for k, v in result.items() if k not in ("refined", "ablation_texts")}
        summary["review"] = counts
        if not result.get("refined_changed"):
            return summary, []
        out = []
        for v in baselines:
            against = ([guideline_name(v.rater, "refined")] if raw_changed else []) + [v.name]
            out.append(Variant(name=guideline_name(v.rater, reviewed("refined")), model=v.model,
                               guideline=result["refined"], kind=reviewed("refined-guideline"), rater=v.name,
                               order=v.order, compare_to=against))
        return summary, out


#: the part name of the compiled rater: the refined guideline with the trace demos (what program.json holds)
COMPILED = "compiled"


def compiled_raters(ctx: RunContext, baselines: list[Variant], refined: str) -> list[Variant]:
    """Each rater as the compiled program rates: the refined guideline *and* the accepted traces as demos. Paired
    against the original zero-shot rater, demos alone and the refined guideline alone (in that order), so the
    report can tell which half of the program carries a gain. None for a rater without a demos variant."""
    out = []
    for v in baselines:
        demos = ctx.variant(demos_name(v.rater))
        if demos is None or not demos.demos:
            continue
        against = [v.name] + ([v.rater] if v.rater != v.name else []) + [demos.name, guideline_name(v.rater, "refined")]
        out.append(Variant(name=guideline_name(v.rater, COMPILED), model=v.model, guideline=refined,
                           kind="compiled-rater", rater=v.name, order=v.order, demos=list(demos.demos),
                           compare_to=against))
    return out
