"""A compile run: the run context the stages share (spec, corpus, run folder, LMs built once, variants), the run
loop over `thinktrace.stages.STAGES` (each stage timed, models released and memory trimmed after it), the metrics,
how the calls went (per-stage journal summaries, status, the report of an incomplete run) and the resume check."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

from thinktrace.adapters import make_adapter
from thinktrace.data import Corpus
from thinktrace.errors import EndpointDown, RunIncomplete, SpecError
from thinktrace.gold import LEGACY_TIE_BREAK
from thinktrace.journal import attempt_key, prediction_key
from thinktrace.lm.config import ModelConfig
from thinktrace.metrics import split_metrics
from thinktrace.loader import load_object
from thinktrace.records import MetricsDocument
from thinktrace.report import write_reports
from thinktrace.rundir import RunDir, json_safe
from thinktrace.spec import LoadedSpec
from thinktrace.variants import Variant


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (0 where the platform does not say)."""
    try:
        import resource
    except ImportError:
        return 0.0
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 1024 / 1024


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc keeps them after a stage freed its memory; the
    fine-tuning child that runs next would otherwise add its memory on top). A no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


RESUMABLE_CHANGES = ("calls", "budget", "execution", "description", "output_dir")  #: spec fields a resume may change
#: and, in every model entry, thinktrace.lm.config.RESUMABLE_MODEL_FIELDS (api_base: the fleet; max_concurrency)


def upgraded(resolved: dict) -> dict:
    """A run folder's spec.resolved.yaml as this version resolves it: fields added since it was written take their
    defaults (an older run folder still resumes) or, where the default changed results, the old value it was made
    under (`LEGACY_VALUES`); fields it has are kept as written. Returned unchanged when it
    no longer validates (a removed or renamed field: the comparison then names it)."""
    from pydantic import ValidationError

    from thinktrace.spec import Spec

    resolved = with_legacy_values(resolved)
    try:
        return {**Spec.model_validate(resolved).model_dump(mode="json"), "codebook": resolved.get("codebook"),
                "codebook_file": resolved.get("codebook_file")}
    except (ValidationError, TypeError):
        return resolved


#: spec fields added with a default that changes results: a run folder whose spec.resolved.yaml lacks one was made
#: under the value here (the old behaviour), which its resume keeps, so its results never change silently
LEGACY_VALUES: dict[tuple[str, str], object] = {
    ("data", "tie_break"): LEGACY_TIE_BREAK,  # ties before data.tie_break: midpoints down, majority to the earliest
    ("sampling", "accept_cut"): True,  # before sampling.accept_cut a cut answer whose label matched was a trace
}


def with_legacy_values(resolved: dict) -> dict:
    """A stored spec.resolved.yaml with each `LEGACY_VALUES` field it lacks set to the value it was made under."""
    if not isinstance(resolved, dict):
        return resolved
    out = dict(resolved)
    for (section, field), value in LEGACY_VALUES.items():
        if isinstance(out.get(section), dict) and field not in out[section]:
            out[section] = {**out[section], field: value}
    return out


def pin_legacy_values(loaded: LoadedSpec, run_dir: str | Path | None) -> list[str]:
    """Before a resume loads the data: each `LEGACY_VALUES` field that the run folder was made with at its old value
    (its spec.resolved.yaml lacks the field: made before it existed; or holds that value) and that the spec leaves
    unset is set on `loaded.spec` to that value; one note per field pinned. A spec that sets the field to another
    value is left as it is (the resume check then refuses it: that would change the run's results)."""
    path = Path(run_dir) / "spec.resolved.yaml" if run_dir else None
    if path is None or not path.is_file():
        return []
    try:
        stored = with_legacy_values(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []  # the resume check names what it cannot read
    notes = []
    for (section, field), value in LEGACY_VALUES.items():
        node = stored.get(section) if isinstance(stored, dict) else None
        cfg = getattr(loaded.spec, section, None)
        if (isinstance(node, dict) and node.get(field) == value and cfg is not None
                and field not in cfg.model_fields_set and getattr(cfg, field) != value):
            setattr(cfg, field, value)
            notes.append(f"note: {run_dir} was made with {section}.{field}: {value} (the rule before that field "
                         "existed); it resumes with it so its results do not change (set the field to silence this)")
    return notes




class Pipeline:
    def __init__(self, loaded: LoadedSpec, corpus: Corpus, run_dir: str | None = None):
        self.loaded = loaded
        self.spec = loaded.spec
        self.corpus = corpus
        self.resolved = {**self.spec.model_dump(mode="json"), "codebook": loaded.guideline, "codebook_file": None}
        if run_dir:
            self.rundir = RunDir(Path(run_dir))
            self._check_same_spec()
        else:
            self.rundir = RunDir.create(self.spec.output_dir, self.spec.name)
        self._lms: dict = {}
        self.variants: list[Variant] = []
        self.best_prompt: dict[str, Variant] = {}  #: configured rater -> its best original prompt (chosen on dev)
        from thinktrace.lm.guard import reset_endpoints

        reset_endpoints()  # every run (and resume) starts with closed breakers
        from thinktrace.lm.budget import start_budget

        self.meter = start_budget(self.spec.budget, self.rundir.file("usage.json"))  # spent so far: this folder's
        self.adapter = make_adapter(self.spec.programs.adapter)
        self._adapters = {self.spec.programs.adapter: self.adapter}
        #: seconds per stage over every session of this run folder (a resume adds its own time to what the
        #: sessions before it spent, journalled in timing.json after each stage, so a kill loses at most one stage's)
        self.timing: dict[str, float] = self._timing_so_far()
        #: the command that continues this run (the compile command sets it; named in outage messages)
        self.resume_command = f"python -m thinktrace.compile {loaded.path} --resume {self.rundir.path}"
        self.peak_rss: dict[str, float] = {}  #: the process's peak resident memory (MiB) at the end of each stage

    def _timing_so_far(self) -> dict[str, float]:
        path = self.rundir.file("timing.json")
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        except (OSError, ValueError):
            return {}  # a torn file costs the earlier sessions' times, never the run
        return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}

    # -- setup -----------------------------------------------------------------------------------------------
    def _check_same_spec(self) -> None:
        path = self.rundir.file("spec.resolved.yaml")
        if path.exists():
            from thinktrace.lm.config import without_resumable_model_fields as comparable

            before = comparable(upgraded(yaml.safe_load(path.read_text(encoding="utf-8"))))
            now = comparable(self.resolved)
            # `calls` (retries, breaker, failure threshold), the budget, the description, where runs go and where
            # models are served may change between a run and its resume; they change no result
            changed = sorted(k for k in set(before) | set(now)
                             if k not in RESUMABLE_CHANGES and before.get(k) != now.get(k))
            if changed:
                raise SpecError(", ".join(changed), f"the run folder {self.rundir.path} was made with a different spec "
                                "(these sections differ); resume it with the same spec or start a new run")

    def _write_setup(self) -> None:
        self.rundir.ensure()
        self.rundir.write_text("spec.resolved.yaml", yaml.safe_dump(self.resolved, sort_keys=False, allow_unicode=True))
        self.rundir.write_json("data.json", {
            "stats": self.corpus.stats,
            "splits": {s: [it.item_id for it in self.corpus.split(s)] for s in ("train", "dev", "test")},
        })

    def lm(self, cfg, field: str = "models.raters", role: str = ""):
        """The LM of a model entry, built once per (role, name): the guideline writer (role `writer`) never
        shares the object of the rater or generator it may be named after."""
        from thinktrace.lm import build_lm

        key = f"{role}:{cfg.name}"
        if key not in self._lms:
            self._lms[key] = build_lm(cfg, field, calls=self.spec.calls)
        return self._lms[key]

    def writer_config(self) -> tuple[ModelConfig, str]:
        """The guideline writer's model entry and its spec field: its own entry, a named one, or the generator."""
        w = self.spec.guidelines.writer
        if isinstance(w, ModelConfig):
            return w, "guidelines.writer"
        if w:
            return self.spec.model_named(w), "guidelines.writer"
        return self.spec.generator, "models.generator"

    def adapter_for(self, model) -> "dspy.Adapter":
        """The prompt format a rater is run with: its own `prompt_format`, else the experiment's."""
        name = getattr(model, "prompt_format", None) or self.spec.programs.adapter
        if name not in self._adapters:
            self._adapters[name] = make_adapter(name)
        return self._adapters[name]

    def preflight(self) -> None:
        """Build every configured LM before any work (keys present, paths exist); weights load lazily."""
        for i, cfg in enumerate(self.spec.models.raters):
            self.lm(self.on_training_base(cfg), f"models.raters.{i}")
        if self.spec.models.generator is not None:
            self.lm(self.spec.models.generator, "models.generator")
        if self.spec.guidelines.enabled and isinstance(self.spec.guidelines.writer, ModelConfig):
            self.lm(self.spec.guidelines.writer, "guidelines.writer", role="writer")

    def rater_program(self, guideline: str, label_only: bool = False, order: str = "rationale_first"):
        ref = self.spec.programs.rater
        if label_only:  # the label-only ablation: same file, the class without a rationale
            ref = ref.rsplit(":", 1)[0] + ":LabelOnlyRater"
        cls = load_object(ref, [self.loaded.base_dir], "programs.rater")
        if order == "rationale_first":
            return cls(guideline=guideline, label_set=self.corpus.label_set)
        try:
            return cls(guideline=guideline, label_set=self.corpus.label_set, order=order)
        except TypeError as err:
            raise SpecError("evaluate.prompts", f"{ref} takes no `order` argument, so it cannot answer {order}: "
                            f"add `order` to the program or drop that prompt variant ({err})") from None

    def program_for(self, v: Variant, guideline: str | None = None):
        program = self.rater_program(v.guideline if guideline is None else guideline, label_only=v.label_only,
                                     order=v.order)
        if v.demos:
            from thinktrace.teleprompt import demo_examples, judge_predictor

            judge_predictor(program).demos = demo_examples(v.demos)
        return program

    def baseline_variants(self) -> list[Variant]:
        return [Variant(name=cfg.name, model=self.on_training_base(cfg), guideline=self.loaded.guideline,
                        kind="baseline", rater=cfg.name) for cfg in self.spec.models.raters]

    def prompt_variants(self) -> list[Variant]:
        """Every rater under each `evaluate.prompts` entry that differs from its own prompt (kind `prompt`)."""
        out = []
        for cfg, base in zip(self.spec.models.raters, self.baseline_variants()):
            for name, fmt, order in self.spec.prompt_variants(cfg):
                out.append(Variant(name=name, model=base.model.model_copy(update={"prompt_format": fmt}),
                                   guideline=base.guideline, kind="prompt", rater=base.name, order=order,
                                   compare_to=[base.name]))
        return out

    def on_training_base(self, cfg: ModelConfig) -> ModelConfig:
        """A local rater on the fine-tuning base model runs on the exact weights the adapters are trained on (not
        the shipped quantized file), so its paired difference with a fine-tuned rater measures the adapter alone."""
        from thinktrace.lm.embedded import canonical_name

        ft = self.spec.finetune
        same = cfg.is_local and (canonical_name(cfg.model) or cfg.model) == (canonical_name(ft.base) or ft.base)
        return cfg.model_copy(update={"training_base": True}) if ft.enabled and same else cfg

    def eval_items(self, split: str):
        items = self.corpus.split(split)
        return items[: self.spec.evaluate.max_items] if self.spec.evaluate.max_items else items

    # -- stages ----------------------------------------------------------------------------------------------
    def base_variant(self, base: str) -> Variant:
        """The configured local rater on the fine-tuning base model, or a new baseline variant for it."""
        from thinktrace.lm.embedded import canonical_name

        key = canonical_name(base) or base
        for v in self.variants:
            if v.model.is_local and not v.model.adapter and (canonical_name(v.model.model) or v.model.model) == key:
                return v
        template = next((r for r in self.spec.models.raters if r.is_local), None)
        model = ModelConfig(name=base, provider="local", model=base, training_base=True,
                            max_tokens=template.max_tokens if template else 256)
        variant = Variant(name=base, model=model, guideline=self.loaded.guideline, kind="baseline", rater=base)
        self.variants.append(variant)
        return variant

    def metrics(self, records: list[dict]) -> dict:
        ev = self.spec.evaluate
        pairs = [(a, v.name) for v in self.variants for a in v.compare_to]
        groups: dict[str, list[str]] = {}
        for v in self.variants:
            groups.setdefault(v.kind, []).append(v.name)
        splits = {s: split_metrics(self.corpus, s, self.eval_items(s), records, n_boot=ev.bootstrap,
                                   seed=self.spec.seed, aggregate=self.spec.data.aggregate, pairs=pairs,
                                   inter_rater_groups=groups, min_parse_rate=ev.min_parse_rate,
                                   collapse_share=ev.collapse_share, collapse_spread=ev.collapse_spread)
                  for s in ev.splits}
        stats = self.corpus.stats
        n_labels = [len(it.labels) for it in self.corpus.items]
        return {
            "spec": {"name": self.spec.name, "description": self.spec.description, "seed": self.spec.seed},
            "data": {"label_set": list(self.corpus.label_set.labels), "level": self.corpus.label_set.level,
                     "per_annotator": self.corpus.per_annotator, "stats": stats,
                     "labels_per_item": round(sum(n_labels) / len(n_labels), 2) if n_labels else 0},
            "variants": [{"name": v.name, "kind": v.kind, "rater": v.rater, "model": v.model.model,
                          "adapter": v.model.adapter, "label_only": v.label_only} for v in self.variants],
            "splits": splits,
            "timing": {k: round(v, 1) for k, v in self.timing.items()},  # seconds
            # llama.cpp runs in this process, so this is every model's memory too (peak so far, MiB)
            "peak_rss_mib": {k: round(v) for k, v in self.peak_rss.items()},
        }

    def run_stage(self, name: str, fn):
        from thinktrace.lm import release_engines

        from thinktrace.lm.guard import RETRYABLE, classify, one_line

        start = time.perf_counter()
        try:
            result = fn()
        except EndpointDown as err:
            raise RunIncomplete(name, str(err)) from err
        except RunIncomplete:
            raise
        except Exception as err:
            from dspy.utils.exceptions import LMError

            if isinstance(err, LMError) or classify(err) in RETRYABLE:  # e.g. the guideline writer's call
                raise RunIncomplete(name, f"an LM call failed after its retries: {one_line(err)}") from err
            raise
        finally:
            release_engines()  # local models hold memory only while a stage uses them
            trim_heap()
            self.timing[name] = self.timing.get(name, 0.0) + time.perf_counter() - start
            self.rundir.write_json("timing.json", {k: round(v, 3) for k, v in self.timing.items()})
        self.peak_rss[name] = peak_rss_mib()
        return result

    def run(self) -> dict:
        from thinktrace.execution import use_execution

        self._write_setup()
        try:
            with use_execution(self.spec.execution):  # threads here, or the run's Ray actors (stopped after)
                return self._run()
        except RunIncomplete as err:
            err.resume = err.resume or self.resume_command
            self.write_incomplete(err)
            raise
        finally:
            from thinktrace.lm.budget import start_budget

            start_budget(None, None)  # the run's budget ends with it (later LM use in this process is not charged)

    def _run(self) -> dict:
        from thinktrace.stages import STAGES

        self.variants = self.baseline_variants() + self.prompt_variants()
        outputs = {}
        for stage in STAGES:
            if stage.enabled(self.spec):
                outputs[stage.name] = self.run_stage(stage.name, lambda stage=stage: stage.run(self))
        records = outputs.pop("evaluate")
        self.result = self.run_stage("metrics", lambda: self.metrics(records))
        self.result.update(outputs)  # traces, finetune, prompts, guidelines: each stage's own summary
        stage_warnings = [w for out in outputs.values() if isinstance(out, dict) for w in out.get("warnings") or []]
        if stage_warnings:  # e.g. trace_quality's: the report shows them
            self.result.setdefault("warnings", []).extend(stage_warnings)
        self.result["calls"] = self.call_summary()
        self.result["status"] = self.status(self.result["calls"], self.result.get("splits"))
        # metrics.json is written once, after the reports were rendered from the same document
        self.result = MetricsDocument.document(json.loads(json.dumps(json_safe(self.result))))
        try:
            write_reports(self.rundir.path, metrics=self.result)
        except Exception as err:  # a report must never cost the run its results
            self.result.setdefault("warnings", []).append(f"report failed: {err.__class__.__name__}: {err}")
        self.rundir.write_json("metrics.json", self.result)
        return self.result

    # -- how the calls went --------------------------------------------------------------------------------
    def call_summary(self) -> dict:
        """Per stage, from the journals (so it covers every resume): units settled / left, final failures by
        type, retryable failures journalled, retries spent inside calls; and this process's endpoint counters."""
        from thinktrace.journal import summary
        from thinktrace.lm.guard import endpoint_stats
        from thinktrace.records import Prediction
        from thinktrace.rundir import JsonlLog

        stages = {}
        if self.rundir.file("attempts.jsonl").exists():
            stages["traces"] = summary(self.rundir.log("attempts.jsonl"), attempt_key)
        if self.rundir.file("self/attempts.jsonl").exists():  # the student's own traces (thinktrace.self_traces)
            stages["self_traces"] = summary(JsonlLog(self.rundir.file("self/attempts.jsonl")), attempt_key)
        ratings = sorted(self.rundir.file("guidelines").glob("ratings/*.jsonl"))
        if ratings:
            rows = [{**r, "_candidate": p.stem} for p in ratings for r in JsonlLog(p, model=Prediction)]
            stages["guidelines"] = summary(rows, lambda r: (r["_candidate"], r["rater"], r["item_id"]))
        if self.rundir.file("trace_quality.jsonl").exists():
            stages["trace_quality"] = summary(JsonlLog(self.rundir.file("trace_quality.jsonl")),
                                              lambda r: (r["condition"], r["unit"]))
        if self.rundir.file("prompts_dev.jsonl").exists():
            stages["prompts"] = summary(self.rundir.log("prompts_dev.jsonl"), prediction_key)
        if self.rundir.file("predictions.jsonl").exists():
            stages["evaluate"] = summary(self.rundir.log("predictions.jsonl"), prediction_key)
        from thinktrace.lm.fleet import fleet_stats

        return {"stages": stages, "endpoints": endpoint_stats(), "max_failed": self.spec.calls.max_failed,
                "fleets": fleet_stats(), "usage": self.meter.summary()}

    def status(self, calls: dict, splits: dict | None = None) -> dict:
        """complete; failures_over_threshold (a stage's final failures above `calls.max_failed`); or
        variants_failed (a variant's parse rate below `evaluate.min_parse_rate`, `failed_variants` lists them,
        also beside failures_over_threshold). Both finish the run with exit 4."""
        from thinktrace.metrics import failed_variants

        over = {name: round(st["final_failures"] / st["settled"], 4) for name, st in calls["stages"].items()
                if st["settled"] and st["final_failures"] / st["settled"] > self.spec.calls.max_failed}
        failed = failed_variants(splits or {})
        parts = []
        if over:
            parts.append(f"final failures above calls.max_failed ({self.spec.calls.max_failed:.0%}): " +
                         ", ".join(f"{k} {v:.1%}" for k, v in over.items()))
        if failed:
            parts.append(f"parse rate below evaluate.min_parse_rate ({self.spec.evaluate.min_parse_rate:.0%}): " +
                         ", ".join(f"{f['variant']} parsed {f['parsed']}/{f['n_answers']} answers"
                                   + (f" ({f['split']})" if len(splits or {}) > 1 else "") for f in failed))
        if not parts:
            return {"state": "complete"}
        status = {"state": "failures_over_threshold" if over else "variants_failed", "message": "; ".join(parts)}
        if over:
            status["stages"] = over
        if failed:
            status.update(failed_variants=failed, min_parse_rate=self.spec.evaluate.min_parse_rate)
        return status

    def write_incomplete(self, err: RunIncomplete) -> None:
        """metrics.json and report.md of a run that stopped with work left: no agreement numbers (they would be
        computed on the survivors of an outage), what stopped it, how far each stage got, how to resume."""
        calls = self.call_summary()
        result = {"spec": {"name": self.spec.name, "description": self.spec.description, "seed": self.spec.seed},
                  "status": {"state": "incomplete", "stage": err.stage, "reason": err.reason,
                             "message": str(err)},
                  "calls": calls, "timing": {k: round(v, 1) for k, v in self.timing.items()}}
        result = MetricsDocument.document(json.loads(json.dumps(json_safe(result))))
        self.rundir.write_json("metrics.json", result)
        write_reports(self.rundir.path, metrics=result, html=False)
        stale = self.rundir.file("report.html")
        if stale.exists():  # a page from before must not show numbers this run no longer stands behind
            stale.unlink()

    def summary(self) -> str:
        from thinktrace.report import fmt_est
        from thinktrace.report.flags import flag_text

        lines = []
        t = self.result.get("traces")
        if t:
            lines.append(f"traces: {t['accepted']} accepted of {t['attempts']} attempts; {t['explained']}/"
                         f"{t['examples']} examples explained")
        for split, m in self.result["splits"].items():
            for name, r in m["raters"].items():
                flags = flag_text(r)
                lines.append(f"{split} {name}: alpha {fmt_est(r['alpha'])}, parsed {r['n_items'] - r['n_unparsed']}"
                             f"/{r['n_items']}, LM errors {r.get('n_errors', 0)}" + (f"; {flags}" if flags else ""))
            ceiling = (m.get("human_ceiling") or {}).get("loo_alpha")
            if ceiling:
                lines.append(f"{split} human ceiling (LOO alpha): {fmt_est(ceiling)}")
        failed = (self.result.get("status") or {}).get("failed_variants") or []
        if failed:
            lines.append("FAILED variants (parse rate below evaluate.min_parse_rate "
                         f"{self.spec.evaluate.min_parse_rate:.0%}): " +
                         ", ".join(f"{f['split']} {f['variant']} ({f['parsed']}/{f['n_answers']} answers parsed)"
                                   for f in failed))
        lines.append(f"report: {self.rundir.file('report.md')} (and report.html)")
        return "\n".join(lines)
