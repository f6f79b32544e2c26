"""Stage `traces`: rejection sampling of thinking traces on the train split (attempts.jsonl is the journal;
traces.jsonl, sft.jsonl and the compiled program program.json are rebuilt from it). With `sampling.max_demos`,
every rater is also evaluated with the compiled program's demos (kind `trace-demos`). A reviewed resume
(`compile --reviewed`) also writes the reviewed set (reviewed/traces.jsonl, reviewed/sft.jsonl: rejected traces
dropped, confirmed edits in place) and evaluates demos chosen from it (kind `reviewed-trace-demos`, paired against
the raw traces' demos)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from thinktrace.errors import RunIncomplete, SpecError
from thinktrace.run.stages.base import PlanContext, Stage, StageResult
from thinktrace.variants import demos_name, reviewed, reviewed_demos_name

if TYPE_CHECKING:  # pragma: no cover
    from thinktrace.run.context import RunContext


def rejection_sampling(ctx: RunContext, generator, log, *, threads: int, max_demos: int):
    """The teleprompter of the run's sampling settings (`sampling.*`, the run's seed and prompt format) with
    `generator`, journalling every attempt in `log`: the teacher's and the student's own traces are sampled alike."""
    from thinktrace.teleprompt import RejectionSampling

    cfg = ctx.spec.sampling
    return RejectionSampling(ctx.corpus.label_set, generator=generator, k=cfg.k, keep=cfg.keep,
                             temperature=cfg.temperature, strategy=cfg.strategy, tolerance=cfg.tolerance,
                             seed=ctx.spec.seed, num_threads=threads, attempts_log=log, max_demos=max_demos,
                             adapter=ctx.prompt_format, accept_cut=cfg.accept_cut)


def train_examples(ctx: RunContext):
    """The train split's examples the traces are sampled on (`sampling.per_annotator`, `sampling.max_items`)."""
    from thinktrace.traces import trainset

    cfg = ctx.spec.sampling
    return trainset(ctx.corpus, per_annotator=cfg.per_annotator, max_items=cfg.max_items,
                    max_per_label=cfg.max_per_label)


def raise_pending(stage: str, tele, n_examples: int) -> None:
    """Stop the stage (resumable) when examples stopped on a call that failed retryably after its retries."""
    if tele.pending:
        first = next(iter(tele.pending.values()))
        raise RunIncomplete(stage, f"{len(tele.pending)} of {n_examples} examples stopped on a call that failed "
                            f"retryably after its retries ({first})")


class TracesStage(Stage):
    name = "traces"
    artifacts = ("attempts.jsonl", "traces.jsonl", "sft.jsonl", "program.json")
    #: what a reviewed resume adds (thinktrace.review): the reviewed traces and their SFT rows
    REVIEWED_TRACES, REVIEWED_SFT = "reviewed/traces.jsonl", "reviewed/sft.jsonl"

    def enabled(self, spec) -> bool:
        return spec.sampling.enabled

    def plan(self, ctx: PlanContext) -> dict:
        from thinktrace.traces import trainset

        spec = ctx.spec
        ctx.examples = trainset(ctx.corpus, per_annotator=spec.sampling.per_annotator, max_items=spec.sampling.max_items,
                                max_per_label=spec.sampling.max_per_label)
        if spec.sampling.max_demos:
            ctx.variants += [demos_name(r.name) for r in spec.models.raters]
            if ctx.reviewed:
                ctx.variants += [reviewed_demos_name(r.name) for r in spec.models.raters]
        return {"generator": spec.generator.name, "strategy": spec.sampling.strategy, "examples": len(ctx.examples),
                "k": spec.sampling.k, "lm_calls_max": len(ctx.examples) * spec.sampling.calls_per_example(),
                **({"attempts_from": spec.sampling.attempts_from} if spec.sampling.attempts_from else {})}

    def run(self, ctx: RunContext) -> StageResult:
        from thinktrace.records import Trace
        from thinktrace.rundir import write_jsonl
        from thinktrace.teleprompt import accepted_traces, select_demos
        from thinktrace.traces import acceptance_stats, sft_rows

        cfg = ctx.spec.sampling
        if cfg.per_annotator and not ctx.corpus.per_annotator:
            raise SpecError("sampling.per_annotator", "the data has no per-annotator labels")
        examples = train_examples(ctx)
        teacher_role = ctx.roles.teacher()
        teacher = ctx.program_class("infer")(guideline=ctx.guideline, label_set=ctx.corpus.label_set)
        student = ctx.rater_program()
        log = ctx.rundir.log("attempts.jsonl")
        reused = self.reuse(ctx, examples, log)
        tele = rejection_sampling(ctx, ctx.lm(teacher_role.model), log,
                                  threads=cfg.num_threads or teacher_role.model.num_threads, max_demos=cfg.max_demos)
        compiled = tele.compile(student, trainset=examples, teacher=teacher, journal=log.read())
        raise_pending("traces", tele, len(examples))
        traces = accepted_traces(tele.attempts, examples)
        write_jsonl(ctx.rundir.file("traces.jsonl"), traces, model=Trace)
        write_jsonl(ctx.rundir.file("sft.jsonl"), sft_rows(traces, ctx.rater_signature(), ctx.prompt_format))
        compiled.save(str(ctx.rundir.file("program.json")))
        stats = {**acceptance_stats(tele.attempts, examples), "accept_cut": cfg.accept_cut, **reused}
        variants = []
        if cfg.max_demos:  # the compiled program's demos, used: every rater is also evaluated with them
            demos = select_demos(traces, ctx.corpus.label_set, cfg.max_demos)
            stats["demos"] = len(demos)
            if demos:  # without an accepted trace a demos variant would be the zero-shot rater again
                variants = [replace(base, name=demos_name(base.name), kind="trace-demos", demos=demos,
                                    compare_to=[base.name]) for base in ctx.baselines()]
        if ctx.reviewed:
            stats["reviewed"], more = self.reviewed_set(ctx, traces, bool(variants))
            variants += more
        return StageResult(stats, variants)

    @staticmethod
    def reuse(ctx: RunContext, examples: list, log) -> dict:
        """`sampling.attempts_from`: append the other run's attempts for examples this run has none of yet to this
        run's journal (checked by thinktrace.reuse); the summary says where from, how many, and for how many
        examples (every attempt taken, on any resume)."""
        from thinktrace.reuse import load

        ref = ctx.spec.sampling.attempts_from
        if not ref:
            return {}
        own = log.read()
        for record in load(ref, ctx.loaded.base_dir, ctx.spec, ctx.guideline, examples, own):
            log.append({**record, "reused_from": ref})
        taken = [r for r in log.read() if r.get("reused_from")]
        return {"attempts_from": ref, "reused_attempts": len(taken),
                "reused_examples": len({r["key"] for r in taken})}

    def reviewed_set(self, ctx: RunContext, raw: list[dict], raw_demos: bool) -> tuple[dict, list]:
        """Write the reviewed traces and their SFT rows; (their counts, the reviewed-demos variants: each rater with
        demos chosen from the reviewed traces as from the raw ones, paired against the raw demos and zero-shot)."""
        from thinktrace.records import Trace
        from thinktrace.rundir import write_jsonl
        from thinktrace.teleprompt import select_demos
        from thinktrace.traces import sft_rows

        traces, counts = ctx.reviewed_traces()
        ctx.rundir.file("reviewed").mkdir(exist_ok=True)
        write_jsonl(ctx.rundir.file(self.REVIEWED_TRACES), traces, model=Trace)
        write_jsonl(ctx.rundir.file(self.REVIEWED_SFT), sft_rows(traces, ctx.rater_signature(), ctx.prompt_format))
        counts = {**counts, "raw_traces": len(raw), "reviewed_traces": len(traces)}
        demos = select_demos(traces, ctx.corpus.label_set, ctx.spec.sampling.max_demos)
        if not ctx.spec.sampling.max_demos or not demos:
            return counts, []
        counts["demos"], counts["demo_keys"] = len(demos), [d["key"] for d in demos]
        return counts, [replace(base, name=reviewed_demos_name(base.name), kind=reviewed("trace-demos"), demos=demos,
                                compare_to=[base.name] + ([demos_name(base.name)] if raw_demos else []))
                        for base in ctx.baselines()]
