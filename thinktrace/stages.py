"""The stages of a compile run, in order, each an object with `enabled(spec)`, `plan(ctx)` (what `--dry-run`
prints: items, LM calls at most, the variants it adds; no model loaded) and `run(p)` (the work, with the Pipeline
as the run context; resumable from the run folder). Plan and run come from the same objects, so the plan names
what the run does.

1. traces: rejection sampling of thinking traces on the train split (attempts.jsonl is the journal; traces.jsonl,
   sft.jsonl and the compiled program program.json are rebuilt from it).
   trace_quality: does each accepted trace carry its label? A reader (the untuned student) labels each item with
   the trace (its label statements masked, and raw), without it and with a rejected trace (trace_quality.jsonl is
   the journal).
   self_traces (`sampling.self_traces`): the student's own traces, sampled like the teacher's on the examples the
   teacher explained (self/attempts.jsonl is the journal; thinktrace.self_traces).
2. finetune (use 1): LoRA SFT of the base model on the traces, the label-only ablation and the shuffled-trace
   control (each rationale on another item of its label; checkpointed); with self-traces also on the teacher's and
   the student's own traces of the examples both explained.
3. prompts: every rater under each `evaluate.prompts` variant on dev; the best original prompt per rater.
4. guidelines (use 2): candidates synthesized from the traces, scored on dev across all raters (each candidate's
   ratings journalled); guideline.md and one compiled program per rater.
5. evaluate: every variant on the evaluation splits (predictions.jsonl is the journal).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING

from thinktrace.errors import RunIncomplete, SpecError
from thinktrace.evaluate import rate_items
from thinktrace.journal import latest_settled, prediction_key
from thinktrace.loader import load_object
from thinktrace.self_traces import COMMON_KINDS, SelfTracesStage, common_jobs, rows_trained_on
from thinktrace.stage_base import PlanContext, Stage
from thinktrace.variants import Variant, demos_name

if TYPE_CHECKING:  # pragma: no cover
    from thinktrace.pipeline import Pipeline

__all__ = ["STAGES", "PlanContext", "Stage", "plan_stages"]

#: the shuffled-trace control: trace-sft's rows, each rationale moved to another item of the same label
SHUFFLED = "shuffled-trace-sft"


class TracesStage(Stage):
    name = "traces"
    artifacts = ("attempts.jsonl", "traces.jsonl", "sft.jsonl", "program.json")

    def enabled(self, spec) -> bool:
        return spec.sampling.enabled

    def plan(self, ctx: PlanContext) -> dict:
        from thinktrace.traces import trainset

        spec = ctx.spec
        ctx.examples = trainset(ctx.corpus, per_annotator=spec.sampling.per_annotator, max_items=spec.sampling.max_items)
        if spec.sampling.max_demos:
            ctx.variants += [demos_name(r.name) for r in spec.models.raters]
        return {"generator": spec.generator.name, "strategy": spec.sampling.strategy, "examples": len(ctx.examples),
                "k": spec.sampling.k, "lm_calls_max": len(ctx.examples) * spec.sampling.calls_per_example()}

    def run(self, p: Pipeline) -> dict:
        from thinktrace.records import Trace
        from thinktrace.teleprompt import RejectionSampling, accepted_traces, judge_predictor, select_demos
        from thinktrace.rundir import write_jsonl
        from thinktrace.traces import acceptance_stats, sft_rows, trainset

        cfg = p.spec.sampling
        if cfg.per_annotator and not p.corpus.per_annotator:
            raise SpecError("sampling.per_annotator", "the data has no per-annotator labels")
        examples = trainset(p.corpus, per_annotator=cfg.per_annotator, max_items=cfg.max_items)
        gen_cfg = p.spec.generator
        infer_cls = load_object(p.spec.programs.infer, [p.loaded.base_dir], "programs.infer")
        teacher = infer_cls(guideline=p.loaded.guideline, label_set=p.corpus.label_set)
        student = p.rater_program(p.loaded.guideline)
        log = p.rundir.log("attempts.jsonl")
        tele = RejectionSampling(p.corpus.label_set, generator=p.lm(gen_cfg), k=cfg.k, keep=cfg.keep,
                                 temperature=cfg.temperature, strategy=cfg.strategy, tolerance=cfg.tolerance,
                                 seed=p.spec.seed, num_threads=cfg.num_threads or gen_cfg.num_threads,
                                 attempts_log=log, max_demos=cfg.max_demos, adapter=p.adapter,
                                 accept_cut=cfg.accept_cut)
        compiled = tele.compile(student, trainset=examples, teacher=teacher, journal=log.read())
        if tele.pending:
            first = next(iter(tele.pending.values()))
            raise RunIncomplete("traces", f"{len(tele.pending)} of {len(examples)} examples stopped on a call that "
                                f"failed retryably after its retries ({first})")
        traces = accepted_traces(tele.attempts, examples)
        write_jsonl(p.rundir.file("traces.jsonl"), traces, model=Trace)
        write_jsonl(p.rundir.file("sft.jsonl"), sft_rows(traces, judge_predictor(student).signature, p.adapter))
        compiled.save(str(p.rundir.file("program.json")))
        stats = {**acceptance_stats(tele.attempts, examples), "accept_cut": cfg.accept_cut}
        if cfg.max_demos:  # the compiled program's demos, used: every rater is also evaluated with them
            demos = select_demos(traces, p.corpus.label_set, cfg.max_demos)
            stats["demos"] = len(demos)
            if demos:  # without an accepted trace a demos variant would be the zero-shot rater again
                p.variants += [replace(base, name=demos_name(base.name), kind="trace-demos", demos=demos,
                                       compare_to=[base.name]) for base in p.baseline_variants()]
        return stats


class TraceQualityStage(Stage):
    name = "trace_quality"
    artifacts = ("trace_quality.jsonl",)

    def enabled(self, spec) -> bool:
        return spec.sampling.enabled and spec.trace_quality.active(spec)

    def plan(self, ctx: PlanContext) -> dict:
        """At most: per accepted trace one call with it masked and one raw, one with a rejected trace masked and one
        raw; per item one without (a masked trace the mask leaves unchanged is not read again)."""
        from thinktrace.trace_quality.run import reader_name

        n = len(ctx.examples) * ctx.spec.sampling.keep
        n = min(n, ctx.spec.trace_quality.max_traces or n)
        return {"reader": reader_name(ctx.spec), "traces_max": n, "lm_calls_max": 5 * n}

    def run(self, p: Pipeline) -> dict:
        from thinktrace.trace_quality.run import run_trace_quality

        return run_trace_quality(p)


class FinetuneStage(Stage):
    name = "finetune"
    artifacts = ("sft_label_only.jsonl", "sft_shuffled.jsonl", "finetune/")
    #: paired differences besides `− base` (Δ = the kind − each listed kind): traces vs labels only on the same
    #: items; traces vs the same rows with each rationale on another item of its label (shuffled); the teacher's
    #: vs the student's own traces on the items both explained (same rows count)
    against = {"trace-sft": ("label-sft", SHUFFLED), COMMON_KINDS[0]: (COMMON_KINDS[1],)}

    def enabled(self, spec) -> bool:
        return spec.finetune.enabled

    def plan(self, ctx: PlanContext) -> dict:
        from thinktrace.finetune import plan_steps
        from thinktrace.lm.embedded import canonical_name

        spec = ctx.spec
        n_rows = len(ctx.examples) * spec.sampling.keep
        kinds = ["trace-sft"] + (["label-sft"] if spec.finetune.ablation_label_only else [])
        kinds += [SHUFFLED] if spec.finetune.ablation_shuffled else []
        kinds += list(COMMON_KINDS) if spec.sampling.self_traces else []
        # named after the configured local rater on the base model, as the run names them
        key = canonical_name(spec.finetune.base) or spec.finetune.base
        base = next((r.name for r in spec.models.raters if r.is_local and not r.adapter
                     and (canonical_name(r.model) or r.model) == key), None)
        ctx.variants += [] if base else [spec.finetune.base]  # no rater on the base: the run adds it as a baseline
        ctx.variants += [f"{base or spec.finetune.base}+{kind}" for kind in kinds]
        return {"base": spec.finetune.base, "adapters": kinds, "steps_max": plan_steps(spec.finetune, n_rows),
                "launcher": spec.finetune.launcher.kind, "processes": spec.finetune.launcher.num_processes,
                "lm_calls_max": 0}

    def run(self, p: Pipeline) -> dict:
        """Use 1: train the trace-SFT rater, the label-only ablation and the shuffled-trace control on the same
        train rows (and, with `sampling.self_traces`, the teacher's and the student's own traces on the items both
        explained); return their training results (each with the rows it trained on) and the variants that
        evaluate them (paired differences to base and `against`). Each adapter is a job in the run folder
        (`python -m thinktrace.finetune RUN_DIR --adapter NAME`), trained in a child process or through
        `finetune.launcher`; the base is evaluated in the dtype it was trained in."""
        traces = p.rundir.log("traces.jsonl").read()
        from thinktrace.finetune import train_adapter_subprocess
        from thinktrace.finetune.launch import launch, write_job
        from thinktrace.rundir import write_jsonl
        from thinktrace.teleprompt import judge_predictor
        from thinktrace.traces import sft_rows, shuffled_rationales

        cfg = p.spec.finetune
        if not traces:  # nothing to train on: a finished run that says so, not a crash
            why = ("no accepted trace: nothing to fine-tune on, so no fine-tuned variant was evaluated (sample more: "
                   "sampling.k, sampling.strategy, a stronger generator)")
            return {"skipped": why, "warnings": [f"finetune skipped: {why}"]}
        signature = judge_predictor(p.rater_program(p.loaded.guideline)).signature
        rows = {"trace-sft": sft_rows(traces, signature, p.adapter)}  # = sft.jsonl (the traces stage wrote it)
        files = {"trace-sft": "sft.jsonl", "label-sft": "sft_label_only.jsonl", SHUFFLED: "sft_shuffled.jsonl"}
        trained_on = {"trace-sft": rows_trained_on(rows["trace-sft"], "the teacher's accepted traces",
                                                   "every example the teacher explained")}
        if cfg.ablation_label_only:
            rows["label-sft"] = sft_rows(traces, signature, p.adapter, with_rationale=False)
            write_jsonl(p.rundir.file(files["label-sft"]), rows["label-sft"])
            trained_on["label-sft"] = rows_trained_on(rows["label-sft"], "the labels of the teacher's accepted "
                                                      "traces", "the examples of trace-sft")
        if cfg.ablation_shuffled:  # the same rows, each rationale on another item of its label (seeded)
            shuffled = shuffled_rationales(traces, p.spec.seed)
            rows[SHUFFLED] = [{**row, "rationale_item_id": t["rationale_item_id"]}
                              for row, t in zip(sft_rows(shuffled, signature, p.adapter), shuffled)]
            write_jsonl(p.rundir.file(files[SHUFFLED]), rows[SHUFFLED])
            moved = sum(t["rationale_moved"] for t in shuffled)
            trained_on[SHUFFLED] = rows_trained_on(
                rows[SHUFFLED], "the teacher's accepted traces, each rationale moved to another item of its label",
                "the rows of trace-sft", rationales_moved=moved, rationales_kept=len(shuffled) - moved)
        if p.spec.sampling.self_traces:  # written by the self_traces stage; without common rows none is trained
            for kind, (file, kind_rows, info) in common_jobs(p).items():
                rows[kind], files[kind], trained_on[kind] = kind_rows, file, info
        base = p.base_variant(cfg.base)
        results, variants = {}, []
        for kind, kind_rows in rows.items():
            write_job(p.rundir.path, kind, cfg, files[kind], p.spec.seed)
            if cfg.launcher.kind == "inline":
                results[kind] = train_adapter_subprocess(cfg, kind_rows, p.rundir.file(f"finetune/{kind}"),
                                                         seed=p.spec.seed, name=kind)
            else:
                results[kind] = launch(cfg, p.rundir.path, kind)
            results[kind] = {**results[kind], "trained_on": trained_on[kind]}
            dtype = results[kind].get("base_dtype", "float32")
            on_base = True if dtype == "float32" else dtype  # the base weights' dtype during training
            for v in p.variants:  # the base rater (and its prompt variants) run on those very weights
                if v.model.training_base and not v.model.adapter:
                    v.model = v.model.model_copy(update={"training_base": on_base})
            # prompted in the format it was trained on: the experiment's
            model = base.model.model_copy(update={"name": f"{base.name}+{kind}", "adapter": results[kind]["adapter_dir"],
                                                  "cache": False, "prompt_format": None, "training_base": on_base})
            if kind == "label-sft":
                model = model.model_copy(update={"max_tokens": 16})
            variants.append(Variant(name=model.name, model=model, guideline=p.loaded.guideline, kind=kind,
                                    rater=base.name, label_only=kind == "label-sft", compare_to=[base.name]))
        for v in variants:
            v.compare_to += [f"{base.name}+{other}" for other in self.against.get(v.kind, ()) if other in rows]
        p.variants += variants
        return results



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

    def run(self, p: Pipeline) -> dict:
        """Every rater with each of its prompt variants on the dev split (original guideline), journalled in
        prompts_dev.jsonl; per rater, the variant with the highest dev α is its best original prompt (ties keep
        its own prompt). Test numbers never enter the choice."""
        from thinktrace.agreement import rater_vs_human

        variants = [v for v in p.variants if v.kind in ("baseline", "prompt")]
        dev = p.corpus.split("dev")
        if not dev:
            return {"note": "no dev split: every rater keeps its own prompt", "best": {}}
        log = p.rundir.log("prompts_dev.jsonl")
        records = log.read()
        done = latest_settled(records, prediction_key)
        for v in variants:
            ids = {i for (_, r, i) in done if r == v.name}
            if all(it.item_id in ids for it in dev):
                continue
            records += rate_items(p.program_for(v), p.lm(v.model), dev, log, split="dev", rater=v.name,
                                  threads=v.model.num_threads, done=ids, adapter=p.adapter_for(v.model),
                                  desc=f"prompt {v.name} [dev]")
        done = latest_settled(records, prediction_key)
        left = sum(1 for v in variants for it in dev if ("dev", v.name, it.item_id) not in done)
        if left:
            raise RunIncomplete("prompts", f"{left} dev ratings failed retryably after their retries")
        human = [it.label for it in dev]
        out: dict = {"n_dev": len(dev), "raters": {}, "best": {}}
        for base in (v for v in variants if v.kind == "baseline"):
            rows = {}
            for v in (x for x in variants if x.rater == base.name):
                est = rater_vs_human(human, [done[("dev", v.name, it.item_id)].get("label") for it in dev],
                                     p.corpus.label_set, n_boot=min(p.spec.evaluate.bootstrap, 200),
                                     seed=p.spec.seed)["alpha"]
                rows[v.name] = {"alpha": est, "format": v.model.prompt_format or p.spec.programs.adapter,
                                "order": v.order}
            value = lambda name: rows[name]["alpha"].get("value")  # noqa: E731
            best = base.name
            for name in rows:  # strictly better than the best so far (the rater's own prompt comes first)
                if value(name) is not None and (value(best) is None or value(name) > value(best)):
                    best = name
            out["raters"][base.name] = rows
            out["best"][base.name] = best
            p.best_prompt[base.name] = next(v for v in variants if v.name == best)
        return out



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
        calls = plan_calls(g, {k: v * spec.sampling.keep for k, v in per_label.items()}, len(spec.models.raters),
                           ctx.sizes["dev"], ctx.sizes["train"], n_labels=len(ctx.corpus.label_set.labels))
        parts = ["refined"] + (["rules", "examples"] if g.ablation and g.optimizer == "traces"
                               and g.examples_per_label else [])
        ctx.variants += [f"{r.name}+{part}" for part in parts for r in spec.models.raters]
        return {"optimizer": g.optimizer, "rounds": g.rounds, "candidates": g.candidates,
                "writer_calls": calls["writer_calls"], "lm_calls_max": calls["writer_calls"] + calls["rater_calls"]}

    def run(self, p: Pipeline) -> dict:
        """Use 2: synthesize and refine the guideline from the traces (candidates scored on dev by mean α across
        all raters); write guideline.md and one compiled program per rater; return the refined-guideline variants."""
        traces = p.rundir.log("traces.jsonl").read() if p.spec.sampling.enabled else []
        from thinktrace.guidelines import priority_from_traces, refine_guideline, write_rater_programs

        cfg = p.spec.guidelines
        # each configured rater with its best original prompt (chosen on dev; its own prompt without variants)
        baselines = [p.best_prompt.get(v.name, v) for v in p.variants if v.kind == "baseline"]
        writer_cfg, writer_field = p.writer_config()
        raters = {v.name: p.lm(v.model) for v in baselines}
        factories = {v.name: (lambda g, v=v: p.program_for(v, g)) for v in baselines}
        result = refine_guideline(
            cfg, original=p.loaded.guideline, traces=traces,
            writer_lm=p.lm(writer_cfg, writer_field, role="writer"), raters=raters,
            rater_factory=factories, dev_items=p.corpus.split("dev"), label_set=p.corpus.label_set,
            adapter={v.name: p.adapter_for(v.model) for v in baselines}, writer_adapter=p.adapter,
            seed=p.spec.seed, n_boot=min(p.spec.evaluate.bootstrap, 200),
            log_dir=p.rundir.file("guidelines"), priority=priority_from_traces(traces),
            train_items=p.corpus.split("train"), threads={v.name: v.model.num_threads for v in baselines},
            writer_program=load_object(p.spec.programs.writer, [p.loaded.base_dir], "programs.writer"))
        write_rater_programs(result["refined"], raters, factories, p.rundir.path, original=p.loaded.guideline)
        if not result.get("refined_changed"):
            return result  # the writer left the guideline unchanged: nothing new to evaluate
        # evaluated on test whether or not it won on dev: the report shows the dev verdict beside the test numbers;
        # paired against the best original prompt (and the rater's own prompt when that is another one)
        variants = []
        parts = [("refined", "refined-guideline", result["refined"])]
        parts += [(part, f"guideline-{part}", text) for part, text in (result.get("ablation_texts") or {}).items()]
        for part, kind, text in parts:
            for v in baselines:
                against = [v.name] + ([v.rater] if v.rater != v.name else [])
                variants.append(Variant(name=f"{v.rater}+{part}", model=v.model, guideline=text, kind=kind,
                                        rater=v.name, order=v.order, compare_to=against))
        p.variants += variants
        return result



class EvaluateStage(Stage):
    name = "evaluate"
    artifacts = ("predictions.jsonl",)

    def plan(self, ctx: PlanContext) -> dict:
        """Every variant the run evaluates (the fine-tuning base among them when no rater runs on it)."""
        spec = ctx.spec
        n = sum(min(ctx.sizes[s], spec.evaluate.max_items or ctx.sizes[s]) for s in spec.evaluate.splits)
        variants = [r.name for r in spec.models.raters] + ctx.variants
        return {"variants": variants, "splits": spec.evaluate.splits, "lm_calls_max": n * len(variants)}

    def run(self, p: Pipeline) -> list[dict]:
        """Rate every variant on every evaluation split; finished (split, variant, item) records are reused."""
        variants = p.variants
        log = p.rundir.log("predictions.jsonl")
        records = log.read()
        for v in variants:  # every LM first: a local server then loads the base and all its adapters at once
            p.lm(v.model)
        done = set(latest_settled(records, prediction_key))  # a retryable failure is rated again
        # variants on the same weights one after another: a model is loaded once per split, not once per switch
        weights = lambda v: (v.model.provider, v.model.model, v.model.training_base or bool(v.model.adapter))  # noqa: E731
        order: dict = {}
        for v in variants:
            order.setdefault(weights(v), len(order))
        grouped = sorted(variants, key=lambda v: order[weights(v)])
        for split in p.spec.evaluate.splits:
            items = p.eval_items(split)
            for v in grouped:
                ids = {i for (s, r, i) in done if s == split and r == v.name}
                if all(it.item_id in ids for it in items):
                    continue
                program = p.program_for(v)
                records += rate_items(program, p.lm(v.model), items, log, split=split, rater=v.name,
                                      threads=v.model.num_threads, done=ids, adapter=p.adapter_for(v.model))
        settled = latest_settled(records, prediction_key)
        left = Counter(v.name for split in p.spec.evaluate.splits for v in variants
                       for it in p.eval_items(split) if (split, v.name, it.item_id) not in settled)
        if left:
            raise RunIncomplete("evaluate", "predictions failed retryably after their retries: " + ", ".join(
                f"{name} {n}" for name, n in left.items()))
        return list(settled.values())



#: the stages in the order they run (and are planned)
STAGES: list[Stage] = [TracesStage(), SelfTracesStage(), TraceQualityStage(), FinetuneStage(), PromptsStage(),
                       GuidelinesStage(), EvaluateStage()]


def plan_stages(spec, corpus) -> dict:
    """{stage name: plan} of the enabled stages, in order (no model is loaded)."""
    ctx = PlanContext(spec, corpus, {name: len(corpus.split(name)) for name in ("train", "dev", "test")})
    for stage in STAGES:
        if stage.enabled(spec):
            ctx.stages[stage.name] = {**stage.plan(ctx), "writes": list(stage.artifacts)}
    return ctx.stages
