"""Stage `finetune` (use 1): LoRA SFT of the fine-tuning base on the traces, the label-only ablation and the
shuffled-trace control (each rationale on another item of its label; checkpointed); with self-traces also on the
teacher's and the student's own traces of the examples both explained; on a reviewed resume (`compile --reviewed`)
also on the reviewed traces (`reviewed-trace-sft`, paired against trace-sft)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from thinktrace.run.stages.base import PlanContext, Stage, StageResult
from thinktrace.run.stages.self_traces import COMMON_KINDS, common_jobs, rows_trained_on
from thinktrace.variants import Variant, adapter_name, reviewed

if TYPE_CHECKING:  # pragma: no cover
    from thinktrace.run.context import RunContext

#: the shuffled-trace control: trace-sft's rows, each rationale moved to another item of the same label
SHUFFLED = "shuffled-trace-sft"
#: a reviewed resume's adapter: trace-sft's recipe on the reviewed traces (reviewed/sft.jsonl)
REVIEWED_SFT = reviewed("trace-sft")


def adapter_kinds(spec, reviewed: bool = False) -> list[str]:
    """The adapters a run trains, in order (plan and run); `reviewed`: a reviewed resume's too."""
    kinds = ["trace-sft"] + (["label-sft"] if spec.finetune.ablation_label_only else [])
    kinds += [SHUFFLED] if spec.finetune.ablation_shuffled else []
    kinds += list(COMMON_KINDS) if spec.sampling.self_traces else []
    return kinds + ([REVIEWED_SFT] if reviewed else [])


class FinetuneStage(Stage):
    name = "finetune"
    artifacts = ("sft_label_only.jsonl", "sft_shuffled.jsonl", "finetune/")
    #: paired differences besides `− base` (Δ = the kind − each listed kind): traces vs labels only on the same
    #: items; traces vs the same rows with each rationale on another item of its label (shuffled); the teacher's
    #: vs the student's own traces on the items both explained (same rows count)
    against = {"trace-sft": ("label-sft", SHUFFLED), COMMON_KINDS[0]: (COMMON_KINDS[1],), REVIEWED_SFT: ("trace-sft",)}

    def enabled(self, spec) -> bool:
        return spec.finetune.enabled

    def plan(self, ctx: PlanContext) -> dict:
        from thinktrace.finetune import plan_steps

        spec = ctx.spec
        n_rows = len(ctx.examples) * spec.sampling.keep
        kinds = adapter_kinds(spec, ctx.reviewed)
        base = ctx.roles.base_name()
        if ctx.roles.base_rater() is None:  # no rater on the base: the run adds it as a baseline
            ctx.variants.append(base)
        ctx.variants += [adapter_name(base, kind) for kind in kinds]
        return {"base": spec.finetune.base, "adapters": kinds, "steps_max": plan_steps(spec.finetune, n_rows),
                "launcher": spec.finetune.launcher.kind, "processes": spec.finetune.launcher.num_processes,
                "lm_calls_max": 0}

    def run(self, ctx: RunContext) -> StageResult:
        """Train the trace-SFT rater, the label-only ablation and the shuffled-trace control on the same train rows
        (and, with `sampling.self_traces`, the teacher's and the student's own traces on the items both explained);
        the summary: their training results (each with the rows it trained on); the variants that evaluate them
        (paired differences to the base and `against`). Each adapter is a job in the run folder (`python -m
        thinktrace.finetune RUN_DIR --adapter NAME`), trained in a child process or through `finetune.launcher`;
        the base is evaluated in the dtype it was trained in."""
        from thinktrace.finetune import train_adapter_subprocess
        from thinktrace.finetune.launch import launch, write_job
        from thinktrace.rundir import write_jsonl
        from thinktrace.traces import shuffled_rationales, sft_rows

        traces = ctx.rundir.log("traces.jsonl").read()
        cfg = ctx.spec.finetune
        if not traces:  # nothing to train on: a finished run that says so, not a crash
            why = ("no accepted trace: nothing to fine-tune on, so no fine-tuned variant was evaluated (sample more: "
                   "sampling.k, sampling.strategy, a stronger generator)")
            return StageResult({"skipped": why, "warnings": [f"finetune skipped: {why}"]})
        signature = ctx.rater_signature()
        rows = {"trace-sft": sft_rows(traces, signature, ctx.prompt_format)}  # = sft.jsonl (the traces stage wrote it)
        files = {"trace-sft": "sft.jsonl", "label-sft": "sft_label_only.jsonl", SHUFFLED: "sft_shuffled.jsonl"}
        trained_on = {"trace-sft": rows_trained_on(rows["trace-sft"], "the teacher's accepted traces",
                                                   "every example the teacher explained")}
        if cfg.ablation_label_only:
            rows["label-sft"] = sft_rows(traces, signature, ctx.prompt_format, with_rationale=False)
            write_jsonl(ctx.rundir.file(files["label-sft"]), rows["label-sft"])
            trained_on["label-sft"] = rows_trained_on(rows["label-sft"], "the labels of the teacher's accepted "
                                                      "traces", "the examples of trace-sft")
        if cfg.ablation_shuffled:  # the same rows, each rationale on another item of its label (seeded)
            shuffled = shuffled_rationales(traces, ctx.spec.seed)
            rows[SHUFFLED] = [{**row, "rationale_item_id": t["rationale_item_id"]}
                              for row, t in zip(sft_rows(shuffled, signature, ctx.prompt_format), shuffled)]
            write_jsonl(ctx.rundir.file(files[SHUFFLED]), rows[SHUFFLED])
            moved = sum(t["rationale_moved"] for t in shuffled)
            trained_on[SHUFFLED] = rows_trained_on(
                rows[SHUFFLED], "the teacher's accepted traces, each rationale moved to another item of its label",
                "the rows of trace-sft", rationales_moved=moved, rationales_kept=len(shuffled) - moved)
        if ctx.spec.sampling.self_traces:  # written by the self_traces stage; without common rows none is trained
            for kind, (file, kind_rows, info) in common_jobs(ctx).items():
                rows[kind], files[kind], trained_on[kind] = kind_rows, file, info
        if ctx.reviewed:  # the reviewed traces (the traces stage wrote them, and reviewed/sft.jsonl)
            from thinktrace.run.stages.traces import TracesStage

            kept, _ = ctx.reviewed_traces()
            if kept:
                rows[REVIEWED_SFT] = sft_rows(kept, signature, ctx.prompt_format)
                files[REVIEWED_SFT] = TracesStage.REVIEWED_SFT
                trained_on[REVIEWED_SFT] = rows_trained_on(rows[REVIEWED_SFT], "the reviewed traces (rejected "
                                                           "dropped, confirmed edits in place)", "the reviewed examples")
        base_rater = ctx.roles.base_rater()
        added: list[Variant] = []
        if base_rater is not None:
            base = ctx.variant(base_rater.name)
        else:  # no configured rater on the base: it is evaluated as a baseline of its own
            model = ctx.roles.base_model()
            base = Variant(name=model.name, model=model, guideline=ctx.guideline, kind="baseline", rater=model.name)
            added.append(base)
        results: dict = {}
        on_base: bool | str = True
        for kind, kind_rows in rows.items():
            write_job(ctx.rundir.path, kind, cfg, files[kind], ctx.spec.seed)
            if cfg.launcher.kind == "inline":
                results[kind] = train_adapter_subprocess(cfg, kind_rows, ctx.rundir.file(f"finetune/{kind}"),
                                                         seed=ctx.spec.seed, name=kind)
            else:
                results[kind] = launch(cfg, ctx.rundir.path, kind)
            results[kind] = {**results[kind], "trained_on": trained_on[kind]}
            dtype = results[kind].get("base_dtype", "float32")
            on_base = True if dtype == "float32" else dtype  # the base weights' dtype during training
            # prompted in the format it was trained on: the experiment's
            model = base.model.model_copy(update={"name": adapter_name(base.name, kind),
                                                  "adapter": results[kind]["adapter_dir"], "cache": False,
                                                  "prompt_format": None, "training_base": on_base})
            if kind == "label-sft":
                model = model.model_copy(update={"max_tokens": 16})
            against = [adapter_name(base.name, other) for other in self.against.get(kind, ()) if other in rows]
            added.append(Variant(name=model.name, model=model, guideline=ctx.guideline, kind=kind, rater=base.name,
                                 label_only=kind == "label-sft", compare_to=[base.name, *against]))
        # the base rater (and its prompt and demos variants) run on the very weights the adapters were trained on
        on_weights = lambda v: v.model.training_base and not v.model.adapter  # noqa: E731
        replaced = {v.name: replace(v, model=v.model.model_copy(update={"training_base": on_base}))
                    for v in ctx.variants if on_weights(v)}
        added = [replace(v, model=v.model.model_copy(update={"training_base": on_base})) if on_weights(v) else v
                 for v in added]
        return StageResult(results, added, replaced)
