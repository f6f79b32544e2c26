"""A compile run: the loop over the registered stages (thinktrace.run.stages), each timed, its models released and
memory trimmed after it, its result folded into the run's variants; then the metrics, how the calls went
(thinktrace.run.calls), the reports and metrics.json; an incomplete run's report; the console summary."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import yaml

from thinktrace.errors import EndpointDown, RunIncomplete
from thinktrace.metrics import split_metrics
from thinktrace.records import MetricsDocument
from thinktrace.report import write_reports
from thinktrace.run.calls import call_summary, run_status
from thinktrace.run.context import RunContext, initial_variants
from thinktrace.run.footprint import StageFootprint, trim_heap
from thinktrace.run.resume import check_same_spec
from thinktrace.run.stages import stages
from thinktrace.run.stages.base import StageResult
from thinktrace.rundir import RunDir, json_safe

#: how often a running stage's time so far is journalled in timing.json: a session killed inside a stage (a
#: machine that goes away, SIGKILL) loses at most this much of the stage's time instead of all of it
TIMING_TICK_S = 30.0


class Pipeline:
    """One compile run of a loaded spec on its corpus, into a new run folder or (`run_dir`) an existing one."""

    def __init__(self, loaded, corpus, run_dir: str | Path | None = None, reviewed: bool = False,
                 reviewer: str | None = None):
        spec = loaded.spec
        self.resolved = {**spec.model_dump(mode="json"), "codebook": loaded.guideline, "codebook_file": None}
        if run_dir:
            rundir = RunDir(Path(run_dir))
            check_same_spec(rundir, self.resolved)
        else:
            rundir = RunDir.create(spec.output_dir, spec.name)
        self.ctx = RunContext(loaded, corpus, rundir)
        self.ctx.reviewed, self.ctx.reviewer = reviewed, reviewer  # `compile --reviewed` (thinktrace.review)
        from thinktrace.lm.guard import reset_endpoints

        reset_endpoints()  # every run (and resume) starts with closed breakers
        self.meter = None  #: the run's budget meter, started by `run()` (a failed preflight leaves none behind)
        #: seconds per stage over every session of this run folder (a resume adds its own time to what the
        #: sessions before it spent, journalled in timing.json while a stage runs, so a kill loses at most
        #: TIMING_TICK_S of it)
        self.timing: dict[str, float] = self._timing_so_far()
        #: the command that continues this run (the compile command sets it; named in outage messages)
        self.resume_command = f"python -m thinktrace.compile {loaded.path} --resume {rundir.path}"
        #: each stage's wall time, peak memory and local-model tokens over every session of this run folder
        #: (metrics.json `stages`; journalled in footprints.json after each stage, as timing.json)
        self.footprints: dict[str, StageFootprint] = {}
        self._earlier_footprints: dict = self._journal("footprints.json")
        self.result: dict = {}

    @property
    def spec(self):
        return self.ctx.spec

    @property
    def rundir(self) -> RunDir:
        return self.ctx.rundir

    def _journal(self, name: str) -> dict:
        path = self.rundir.file(name)
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        except (OSError, ValueError):
            return {}  # a torn file costs the earlier sessions' figures, never the run
        return data if isinstance(data, dict) else {}

    def _timing_so_far(self) -> dict[str, float]:
        data = self._journal("timing.json")
        return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}

    def _write_setup(self) -> None:
        corpus = self.ctx.corpus
        self.rundir.ensure()
        self.rundir.write_text("spec.resolved.yaml", yaml.safe_dump(self.resolved, sort_keys=False, allow_unicode=True))
        self.rundir.write_json("data.json", {
            "stats": corpus.stats,
            "splits": {s: [it.item_id for it in corpus.split(s)] for s in ("train", "dev", "test")},
        })

    def preflight(self) -> None:
        """Build every configured LM before any work (keys present, paths exist); weights load lazily."""
        self.ctx.preflight()

    # -- the loop ----------------------------------------------------------------------------------------------
    def run_stage(self, name: str, fn):
        from thinktrace.lm import release_engines
        from thinktrace.lm.guard import RETRYABLE, classify, one_line

        footprint = StageFootprint.start()
        start = time.perf_counter()
        stop = threading.Event()
        ticker = threading.Thread(target=self._journal_time_so_far, args=(name, start, stop), daemon=True,
                                  name=f"timing-{name}")
        ticker.start()
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
            stop.set()
            ticker.join()
            release_engines()  # local models hold memory only while a stage uses them
            trim_heap()
            seconds = time.perf_counter() - start
            self.timing[name] = self.timing.get(name, 0.0) + seconds
            self.rundir.write_json("timing.json", {k: round(v, 3) for k, v in self.timing.items()})
            self.footprints[name] = footprint.stop(seconds).merged(self._earlier_footprints.get(name))
            self.rundir.write_json("footprints.json", {**self._earlier_footprints,
                                                       **{k: f.record() for k, f in self.footprints.items()}})
        return result

    def _journal_time_so_far(self, name: str, start: float, stop: threading.Event) -> None:
        """While stage `name` runs, write timing.json every TIMING_TICK_S with the stage's time so far added."""
        while not stop.wait(TIMING_TICK_S):
            so_far = {**self.timing, name: self.timing.get(name, 0.0) + time.perf_counter() - start}
            try:
                self.rundir.write_json("timing.json", {k: round(v, 3) for k, v in so_far.items()})
            except OSError:
                pass  # a figure, never the run's work: the stage's end writes it again

    def apply(self, result: StageResult) -> None:
        """Fold a stage's result into the run: replaced variants swapped in place, new ones appended, the best
        original prompts recorded."""
        ctx = self.ctx
        ctx.variants = tuple(result.replaced.get(v.name, v) for v in ctx.variants) + tuple(result.variants)
        names = [v.name for v in ctx.variants]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"two variants share a name: {', '.join(dup)} (a stage added a variant twice)")
        if result.best_prompt:
            ctx.best_prompt = {**ctx.best_prompt, **result.best_prompt}

    def run(self) -> dict:
        from thinktrace.execution import use_execution

        from thinktrace.lm.budget import start_budget

        self._write_setup()
        self.meter = start_budget(self.spec.budget, self.rundir.file("usage.json"))  # spent so far: this folder's
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
        ctx = self.ctx
        ctx.variants = tuple(initial_variants(ctx))
        outputs: dict = {}
        for stage in stages():
            if stage.enabled(self.spec):
                result = self.run_stage(stage.name, lambda stage=stage: stage.run(ctx))
                if not isinstance(result, StageResult):
                    raise TypeError(f"stage {stage.name} returned {type(result).__name__}, not a StageResult")
                self.apply(result)
                outputs[stage.name] = result.summary
        records = outputs.pop("evaluate")
        self.result = self.run_stage("metrics", lambda: self.metrics(records))
        self.result.update({k: v for k, v in outputs.items() if v is not None})  # each stage's own summary
        stage_warnings = [w for out in outputs.values() if isinstance(out, dict) for w in out.get("warnings") or []]
        if stage_warnings:  # e.g. trace_quality's: the report shows them
            self.result.setdefault("warnings", []).extend(stage_warnings)
        self.result["calls"] = call_summary(self.rundir, self.spec, self.meter)
        self.result["status"] = run_status(self.spec, self.result["calls"], self.result.get("splits"))
        # metrics.json is written once, after the reports were rendered from the same document
        self.result = MetricsDocument.document(json.loads(json.dumps(json_safe(self.result))))
        try:
            write_reports(self.rundir.path, metrics=self.result)
        except Exception as err:  # a report must never cost the run its results
            self.result.setdefault("warnings", []).append(f"report failed: {err.__class__.__name__}: {err}")
        self.rundir.write_json("metrics.json", self.result)
        return self.result

    # -- the numbers -------------------------------------------------------------------------------------------
    def metrics(self, records: list[dict]) -> dict:
        ctx, spec = self.ctx, self.spec
        corpus, ev = ctx.corpus, spec.evaluate
        pairs = [(a, v.name) for v in ctx.variants for a in v.compare_to]
        groups: dict[str, list[str]] = {}
        for v in ctx.variants:
            groups.setdefault(v.kind, []).append(v.name)
        splits = {s: split_metrics(corpus, s, ctx.eval_items(s), records, n_boot=ev.bootstrap,
                                   seed=spec.seed, aggregate=spec.data.aggregate, pairs=pairs,
                                   inter_rater_groups=groups, min_parse_rate=ev.min_parse_rate,
                                   collapse_share=ev.collapse_share, collapse_spread=ev.collapse_spread)
                  for s in ev.splits}
        n_labels = [len(it.labels) for it in corpus.items]
        return {
            "spec": {"name": spec.name, "description": spec.description, "seed": spec.seed},
            "data": {"label_set": list(corpus.label_set.labels), "level": corpus.label_set.level,
                     "per_annotator": corpus.per_annotator, "stats": corpus.stats,
                     "labels_per_item": round(sum(n_labels) / len(n_labels), 2) if n_labels else 0},
            "variants": [{"name": v.name, "kind": v.kind, "rater": v.rater, "model": v.model.model,
                          "adapter": v.model.adapter, "label_only": v.label_only} for v in ctx.variants],
            "splits": splits,
            "timing": {k: round(v, 1) for k, v in self.timing.items()},  # seconds
            # llama.cpp runs in this process, so this is every model's memory too (peak so far, MiB)
            "peak_rss_mib": {k: round(f.peak_rss_mib) for k, f in self.footprints.items()},
            "stages": {k: f.record() for k, f in self.footprints.items()},
        }

    def write_incomplete(self, err: RunIncomplete) -> None:
        """metrics.json and report.md of a run that stopped with work left: no agreement numbers (they would be
        computed on the survivors of an outage), what stopped it, how far each stage got, how to resume."""
        spec = self.spec
        result = {"spec": {"name": spec.name, "description": spec.description, "seed": spec.seed},
                  "status": {"state": "incomplete", "stage": err.stage, "reason": err.reason, "message": str(err)},
                  "calls": call_summary(self.rundir, spec, self.meter),
                  "timing": {k: round(v, 1) for k, v in self.timing.items()}}
        result = MetricsDocument.document(json.loads(json.dumps(json_safe(result))))
        self.rundir.write_json("metrics.json", result)
        write_reports(self.rundir.path, metrics=result, html=False)
        stale = self.rundir.file("report.html")
        if stale.exists():  # a page from before must not show numbers this run no longer stands behind
            stale.unlink()

    def summary(self) -> str:
        return console_summary(self.result, self.spec, self.rundir)


def console_summary(result: dict, spec, rundir: RunDir) -> str:
    """The lines the compile command prints when a run finished: traces, α per variant, the human ceiling, failed
    variants, where the report is."""
    from thinktrace.report import fmt_est
    from thinktrace.report.flags import flag_text

    lines = []
    t = result.get("traces")
    if t:
        lines.append(f"traces: {t['accepted']} accepted of {t['attempts']} attempts; {t['explained']}/"
                     f"{t['examples']} examples explained")
    for split, m in result["splits"].items():
        for name, r in m["raters"].items():
            flags = flag_text(r)
            lines.append(f"{split} {name}: alpha {fmt_est(r['alpha'])}, parsed {r['n_items'] - r['n_unparsed']}"
                         f"/{r['n_items']}, LM errors {r.get('n_errors', 0)}" + (f"; {flags}" if flags else ""))
        ceiling = (m.get("human_ceiling") or {}).get("loo_alpha")
        if ceiling:
            lines.append(f"{split} human ceiling (LOO alpha): {fmt_est(ceiling)}")
    failed = (result.get("status") or {}).get("failed_variants") or []
    if failed:
        lines.append("FAILED variants (parse rate below evaluate.min_parse_rate "
                     f"{spec.evaluate.min_parse_rate:.0%}): " +
                     ", ".join(f"{f['split']} {f['variant']} ({f['parsed']}/{f['n_answers']} answers parsed)"
                               for f in failed))
    lines.append(f"report: {rundir.file('report.md')} (and report.html)")
    return "\n".join(lines)
