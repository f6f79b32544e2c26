"""Stage `finetune` (use 1): LoRA SFT of the fine-tuning base on the traces (one adapter per `finetune.format`:
rationale then label, multitask, label then rationale), the label-only ablation on the same items, label-only on
every train example (`ablation_label_all`) and the shuffled-trace control (each rationale on another item of its
label; checkpointed); with self-traces also on the teacher's and the student's own traces of the examples both
explained; on a reviewed resume (`compile --reviewed`) also on the reviewed traces (`reviewed-trace-sft`, paired
against trace-sft)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from thinktrace.run.stages.base import PlanContext, Stage, StageResult
from thinktrace.run.stages.self_traces import COMMON_KINDS, common_jobs, rows_trained_on
from thinktrace.finetune.formats import EVAL_ORDER, FORMAT_KINDS, LABEL_ONLY_AT_EVAL, SHUFFLED_KINDS, format_of
from thinktrace.variants import Variant, adapter_name, reviewed

if TYPE_CHECKING:  # pragma: no cover
    from thinktrace.run.context import RunContext

#: the shuffled-trace control: trace-sft's rows, each rationale moved to another item of the same label (the other
#: formats' controls: SHUFFLED_KINDS)
SHUFFLED = SHUFFLED_KINDS["rationale_then_label"]
#: a reviewed resume's adapter: trace-sft's recipe on the reviewed traces (reviewed/sft.jsonl)
REVIEWED_SFT = reviewed("trace-sft")
#: label-only rows on every train example (the practical baseline: a user has labels for every item)
LABEL_ALL = "label-sft-all"
#: adapters evaluated by their label alone (label-only prompt, a short answer)
LABEL_ONLY_KINDS = ("label-sft", LABEL_ALL, *(table[f] for f in sorted(LABEL_ONLY_AT_EVAL)
                                               for table in (FORMAT_KINDS, SHUFFLED_KINDS)))


def adapter_kinds(spec, with_reviewed: bool = False) -> list[str]:
    """The adapters a run trains, in order (plan and run): one per trace format, then the ablations;
    `with_reviewed`: a reviewed resume's too."""
    cfg = spec.finetune
    kinds = [FORMAT_KINDS[f] for f in cfg.format]
    kinds += ["label-sft"] if cfg.ablation_label_only else []
    kinds += [LABEL_ALL] if cfg.ablation_label_all else []
    kinds += [SHUFFLED_KINDS[f] for f in cfg.shuffled_formats()]
    kinds += list(COMMON_KINDS) if spec.sampling.self_traces else []
    return kinds + ([REVIEWED_SFT] if with_reviewed else [])


def _against() -> dict[str, tuple[str, ...]]:
    """Paired differences besides `− base`: each trace format against label-only on the same items and on all
    items; the other formats also against trace-sft; each format against its shuffled control; label-sft-all
    against label-sft; the teacher's vs the student's own traces."""
    out: dict[str, tuple[str, ...]] = {"trace-sft": ("label-sft", LABEL_ALL, SHUFFLED)}
    for fmt, kind in FORMAT_KINDS.items():
        out.setdefault(kind, ("label-sft", LABEL_ALL, "trace-sft", SHUFFLED_KINDS[fmt]))
    return {**out, LABEL_ALL: ("label-sft",), COMMON_KINDS[0]: (COMMON_KINDS[1],), REVIEWED_SFT: ("trace-sft",)}


class FinetuneStage(Stage):
    name = "finetune"
    artifacts = ("sft_label_only.jsonl", "sft_shuffled.jsonl", "sft_label_all.jsonl", "sft_multitask.jsonl",
                 "sft_rationale_then_label.jsonl", "sft_label_then_rationale.jsonl", "sft_shuffled_multitask.jsonl",
                 "sft_shuffled_label_then_rationale.jsonl", "finetune/")
    #: paired differences besides `− base` (Δ = the kind − each listed kind): each trace format vs labels only on
    #: the same items and on all train items; formats vs each other; traces vs the same rows with each rationale on
    #: another item of its label (shuffled); the teacher's vs the student's own traces on the items both explained;
    #: the reviewed traces vs the raw ones
    against = _against()

    def enabled(self, spec) -> bool:
        return spec.finetune.enabled

    def plan(self, ctx: PlanContext) -> dict:
        from thinktrace.finetune import plan_steps

        spec = ctx.spec
        n_rows = len(ctx.examples) * spec.sampling.keep
        n_all = len(ctx.examples)
        if spec.finetune.max_per_label:  # at most the cap per label, for traces and for every train example
            from collections import Counter

            cap = spec.finetune.max_per_label
            n_rows = min(n_rows, cap * len(ctx.corpus.label_set.labels))
            n_all = sum(min(cap, n) for n in Counter(str(ex.label) for ex in ctx.examples).values())
        kinds = adapter_kinds(spec, ctx.reviewed)
        base = ctx.roles.base_name()
        if ctx.roles.base_rater() is None:  # no rater on the base: the run adds it as a baseline
            ctx.variants.append(base)
        ctx.variants += [adapter_name(base, kind) for kind in kinds]
        steps = plan_steps(spec.finetune, n_rows)  # every trace format trains as many steps
        if LABEL_ALL in kinds:
            steps = max(steps, plan_steps(spec.finetune, n_all))
        return {"base": spec.finetune.base, "adapters": kinds, "formats": list(spec.finetune.format),
                "steps_max": steps,
                "launcher": spec.finetune.launcher.kind, "processes": spec.finetune.launcher.num_processes,
                "lm_calls_max": 0}

    def run(self, ctx: RunContext) -> StageResult:
        """Train one trace-SFT rater per `finetune.format`, the label-only ablation and the shuffled-trace control on
        the same train rows, label-only on every train example (`ablation_label_all`) and, with
        `sampling.self_traces`, the teacher's and the student's own traces on the items both explained;
        the summary: their training results (each with the rows it trained on); the variants that evaluate them
        (paired differences to the base and `against`). Each adapter is a job in the run folder (`python -m
        thinktrace.finetune RUN_DIR --adapter NAME`), trained in a child process or through `finetune.launcher`;
        the base is evaluated in the dtype it was trained in."""
        from thinktrace.finetune import train_adapter_subprocess
        from thinktrace.finetune.launch import launch, write_job
        from thinktrace.rundir import write_jsonl
        from thinktrace.traces import cap_per_label, shuffled_rationales, sft_rows

        traces = ctx.rundir.log("traces.jsonl").read()
        cfg = ctx.spec.finetune
        if not traces:  # nothing to train on: a finished run that says so, not a crash
            why = ("no accepted trace: nothing to fine-tune on, so no fine-tuned variant was evaluated (sample more: "
                   "sampling.k, sampling.strategy, a stronger generator)")
            return StageResult({"skipped": why, "warnings": [f"finetune skipped: {why}"]})
        from thinktrace.finetune.formats import format_config, format_rows, rows_per_label
        from thinktrace.run.stages.traces import train_examples

        signature = ctx.rater_signature()
        rows: dict[str, list[dict]] = {}
        files = {"trace-sft": "sft.jsonl", "label-sft": "sft_label_only.jsonl", SHUFFLED: "sft_shuffled.jsonl",
                 LABEL_ALL: "sft_label_all.jsonl"}
        configs: dict = {}
        trained_on: dict = {}
        capped = cap_per_label(traces, cfg.max_per_label)  # every adapter trains on the same examples per label
        trained_on_cap = {"max_per_label": cfg.max_per_label} if cfg.max_per_label else {}
        cut_by_cap, traces = len(capped) < len(traces), capped
        for fmt in cfg.format:
            kind = FORMAT_KINDS[fmt]
            rows[kind] = format_rows(fmt, traces, ctx.rater_signature, ctx.prompt_format)
            configs[kind] = format_config(cfg, fmt, len(traces))
            if kind != "trace-sft" or cut_by_cap:  # sft.jsonl (every trace, rationale then label): the traces
                files[kind] = f"sft_{fmt}.jsonl"      # stage's; capped rows go to a file of their own
                write_jsonl(ctx.rundir.file(files[kind]), rows[kind])
            how = {"rationale_then_label": "the rationale, then the label",
                   "label_then_rationale": "the label, then the rationale",
                   "multitask": "two rows per trace: the label task and the rationale task"}[fmt]
            trained_on[kind] = rows_trained_on(rows[kind], f"the teacher's accepted traces ({how})",
                                               "every example the teacher explained", format=fmt)
        if cfg.ablation_label_only:
            rows["label-sft"] = sft_rows(traces, signature, ctx.prompt_format, with_rationale=False)
            write_jsonl(ctx.rundir.file(files["label-sft"]), rows["label-sft"])
            trained_on["label-sft"] = rows_trained_on(rows["label-sft"], "the labels of the teacher's accepted "
                                                      "traces", "the examples of trace-sft")
        if cfg.ablation_label_all:  # the human label of every train example, explained or not
            every = cap_per_label([{**ex.toDict(), "label": str(ex.label)} for ex in train_examples(ctx)],
                                  cfg.max_per_label)
            rows[LABEL_ALL] = sft_rows(every, signature, ctx.prompt_format, with_rationale=False)
            write_jsonl(ctx.rundir.file(files[LABEL_ALL]), rows[LABEL_ALL])
            trained_on[LABEL_ALL] = rows_trained_on(rows[LABEL_ALL], "the human labels of every train example",
                                                    "every train example (explained by the teacher or not)")
        shuffled = shuffled_rationales(traces, ctx.spec.seed) if cfg.shuffled_formats() else []
        moved = sum(t["rationale_moved"] for t in shuffled)
        for fmt in cfg.shuffled_formats():  # a format's rows, each rationale moved to another item of its label
            kind = SHUFFLED_KINDS[fmt]
            fmt_rows = format_rows(fmt, shuffled, ctx.rater_signature, ctx.prompt_format)
            per_trace = len(fmt_rows) // max(len(shuffled), 1)  # multitask: two rows per trace
            rows[kind] = [{**row, "rationale_item_id": shuffled[i // per_trace]["rationale_item_id"]}
                          for i, row in enumerate(fmt_rows)]
            configs[kind] = format_config(cfg, fmt, len(traces))
            files[kind] = "sft_shuffled.jsonl" if kind == SHUFFLED else f"sft_shuffled_{fmt}.jsonl"
            write_jsonl(ctx.rundir.file(files[kind]), rows[kind])
            trained_on[kind] = rows_trained_on(
                rows[kind], "the teacher's accepted traces, each rationale moved to another item of its label",
                f"the rows of {FORMAT_KINDS[fmt]}", format=fmt, rationales_moved=moved,
                rationales_kept=len(shuffled) - moved)
        if ctx.spec.sampling.self_traces:  # written by the self_traces stage; without common rows none is trained
            for kind, (file, kind_rows, info) in common_jobs(ctx).items():
                rows[kind], files[kind], trained_on[kind] = kind_rows, file, info
        if ctx.reviewed:  # the reviewed traces (the traces stage wrote them, and reviewed/sft.jsonl)
            from thinktrace.run.stages.traces import TracesStage

            kept, _ = ctx.reviewed_traces()
            capped_kept = cap_per_label(kept, cfg.max_per_label)
            if capped_kept:
                rows[REVIEWED_SFT] = sft_rows(capped_kept, signature, ctx.prompt_format)
                files[REVIEWED_SFT] = TracesStage.REVIEWED_SFT
                if len(capped_kept) < len(kept):  # the traces stage's file holds every reviewed trace
                    files[REVIEWED_SFT] = "reviewed/sft_capped.jsonl"
                    write_jsonl(ctx.rundir.file(files[REVIEWED_SFT]), rows[REVIEWED_SFT])
                trained_on[REVIEWED_SFT] = rows_trained_on(rows[REVIEWED_SFT], "the reviewed traces (rejected "
                                                           "dropped, confirmed edits in place)", "the reviewed examples")
        for kind, kind_rows in rows.items():  # what each adapter's examples are, per label
            trained_on[kind] = {**trained_on[kind], "rows_per_label": rows_per_label(kind_rows), **trained_on_cap}
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
            kind_cfg = configs.get(kind, cfg)
            write_job(ctx.rundir.path, kind, kind_cfg, files[kind], ctx.spec.seed)
            if cfg.launcher.kind == "inline":
                results[kind] = train_adapter_subprocess(kind_cfg, kind_rows, ctx.rundir.file(f"finetune/{kind}"),
                                                         seed=ctx.spec.seed, name=kind)
            else:
                results[kind] = launch(kind_cfg, ctx.rundir.path, kind)
            results[kind] = {**results[kind], "trained_on": trained_on[kind]}
            dtype = results[kind].get("base_dtype", "float32")
            on_base = True if dtype == "float32" else dtype  # the base weights' dtype during training
            # prompted in the format it was trained on: the experiment's
            model = base.model.model_copy(update={"name": adapter_name(base.name, kind),
                                                  "adapter": results[kind]["adapter_dir"], "cache": False,
                                                  "prompt_format": None, "training_base": on_base})
            label_only = kind in LABEL_ONLY_KINDS
            if label_only:
                model = model.model_copy(update={"max_tokens": 16})
            order = EVAL_ORDER.get(format_of(kind) or "", "rationale_first")
            against = [adapter_name(base.name, other) for other in self.against.get(kind, ()) if other in rows]
            added.append(Variant(name=model.name, model=model, guideline=ctx.guideline, kind=kind, rater=base.name,
                                 label_only=label_only, order=order, compare_to=[base.name, *against]))
        # the base rater (and its prompt and demos variants) run on the very weights the adapters were trained on
        on_weights = lambda v: v.model.training_base and not v.model.adapter  # noqa: E731
        replaced = {v.name: replace(v, model=v.model.model_copy(update={"training_base": on_base}))
                    for v in ctx.variants if on_weights(v)}
        added = [replace(v, model=v.model.model_copy(update={"training_base": on_base})) if on_weights(v) else v
                 for v in added]
        return StageResult(results, added, replaced)
