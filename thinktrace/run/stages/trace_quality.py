"""Stage `trace_quality`: does each accepted trace carry its label (thinktrace.trace_quality)? The reader (the
untuned student unless `trace_quality.reader` names one) reads each unit once, through the run's executor (threads
or Ray actors), journalled in trace_quality.jsonl: settled units are skipped on resume, retryable failures are made
again; a journal from a run made before the masked conditions existed replays as it is, and only the masked units
are read. A reviewed resume (`compile --reviewed`) also reads the reviewed traces (an edited trace is a new text),
journalled apart in reviewed/trace_quality.jsonl; its metrics are the summary's `reviewed`."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Sequence

from tqdm.auto import tqdm

from thinktrace.errors import RunIncomplete
from thinktrace.journal import latest_settled
from thinktrace.run.stages.base import PlanContext, Stage, StageResult
from thinktrace.trace_quality.stats import leak_stats, quality_metrics
from thinktrace.trace_quality.units import Unit, build_units

if TYPE_CHECKING:  # pragma: no cover
    from thinktrace.run.context import RunContext

JOURNAL = "trace_quality.jsonl"
REVIEWED_JOURNAL = "reviewed/trace_quality.jsonl"  #: the reviewed traces' reads (a reviewed resume)


def read_key(r: dict) -> tuple:
    """The unit of trace_quality.jsonl: one condition of one trace, item or example."""
    return r["condition"], r["unit"]


def _read(reader, adapter, name: str, lms: dict, u: Unit) -> dict:
    """The reading task (picklable: a Ray worker runs it with its own LM): one unit's journal record."""
    from thinktrace.evaluate import rate_one

    program = lambda item: reader(item=item, trace=u.trace)  # noqa: E731
    return {"condition": u.condition, "unit": u.unit, "key": u.key, "reader": name,
            "trace_strategy": u.trace_strategy, "trace_attempt": u.trace_attempt, "trace_sha": u.trace_sha,
            **rate_one(program, lms["reader"], u, adapter)}


def read_units(reader, lm, units: Sequence[Unit], log, *, name: str, threads: int = 4, adapter=None,
               executor=None) -> list[dict]:
    """Each unit read once (thinktrace.evaluate.rate_one: the journal's answered / failed records) on `executor`
    (default: the run's), appended to `log` as it finishes; returns the new records. EndpointDown stops it
    (finished calls are journalled)."""
    from thinktrace.execution import current_executor, drive

    records: list[dict] = []
    if not units:
        return records
    executor = executor or current_executor()
    with tqdm(total=len(units), desc=f"trace quality [{name}]", unit="call") as bar:
        def keep(unit: Unit, record: dict) -> None:
            log.append(record)
            records.append(record)
            bar.update(1)

        drive(executor.pool(partial(_read, reader, adapter, name), {"reader": lm}, threads), units, keep)
    return records


def settled_for(records: Sequence[dict], units: Sequence[Unit]) -> dict:
    """{(condition, unit): its last settled record}, without records of another trace than the unit shows now (a
    record carries the hash of the trace it was shown since masking began; older records carry none and count)."""
    shown = {(u.condition, u.unit): u.trace_sha for u in units}
    return {k: r for k, r in latest_settled(records, read_key).items()
            if r.get("trace_sha") is None or r.get("trace_sha") == shown.get(k)}


def with_twins(done: dict, units: Sequence[Unit]) -> dict:
    """`done` plus, for each masked unit the mask left unchanged, its raw twin's settled record under its own
    (condition, unit): the same prompt, so the same answer, read once."""
    out = dict(done)
    for u in units:
        if u.same_as is not None and u.same_as in done and (u.condition, u.unit) not in done:
            out[(u.condition, u.unit)] = {**done[u.same_as], "condition": u.condition, "same_as": list(u.same_as)}
    return out


class TraceQualityStage(Stage):
    name = "trace_quality"
    artifacts = (JOURNAL,)

    def enabled(self, spec) -> bool:
        return spec.sampling.enabled and spec.trace_quality.active(spec)

    def plan(self, ctx: PlanContext) -> dict:
        """At most: per accepted trace one call with it masked and one raw, one with a rejected trace masked and one
        raw; per item one without (a masked trace the mask leaves unchanged is not read again)."""
        n = len(ctx.examples) * ctx.spec.sampling.keep
        n = min(n, ctx.spec.trace_quality.max_traces or n)
        return {"reader": ctx.roles.reader_name(), "traces_max": n, "lm_calls_max": 5 * n}

    def run(self, ctx: RunContext) -> StageResult:
        """Every unit of the accepted traces (up to `max_traces`) read by the reader; the summary: the metrics (and,
        on a reviewed resume, the reviewed traces' metrics under `reviewed`)."""
        summary = self.measure(ctx, ctx.rundir.log("traces.jsonl").read(), JOURNAL)
        if ctx.reviewed:
            kept, counts = ctx.reviewed_traces()
            summary["reviewed"] = {**self.measure(ctx, kept, REVIEWED_JOURNAL), "review": counts} if kept else \
                {"review": counts, "n_traces": 0}
        return StageResult(summary)

    def measure(self, ctx: RunContext, traces: list[dict], journal: str) -> dict:
        """The trace-quality metrics of `traces` (up to `max_traces`), reads journalled in `journal`."""
        from thinktrace.records import TraceRead
        from thinktrace.rundir import JsonlLog

        cfg = ctx.spec.trace_quality
        traces = traces[: cfg.max_traces] if cfg.max_traces else traces
        attempts = ctx.rundir.log("attempts.jsonl").read()
        label_set = ctx.corpus.label_set
        units = build_units(traces, attempts, label_set)
        model = ctx.roles.reader().model
        reader = ctx.program_class("reader")(guideline=ctx.guideline, label_set=label_set)
        ctx.rundir.file(journal).parent.mkdir(parents=True, exist_ok=True)
        log = JsonlLog(ctx.rundir.file(journal), model=TraceRead)
        records = log.read()
        done = settled_for(records, units)
        todo = [u for u in units if (u.condition, u.unit) not in done and u.same_as is None]
        if todo:
            records += read_units(reader, ctx.lm(model), todo, log, name=model.name, threads=model.num_threads,
                                  adapter=ctx.prompt_format_for(model), executor=ctx.executor)
        done = with_twins(settled_for(records, units), units)
        left = [u for u in units if (u.condition, u.unit) not in done]
        if left:
            raise RunIncomplete("trace_quality", f"{len(left)} of {len(units)} reader calls failed retryably after "
                                "their retries")
        wanted = {(u.condition, u.unit) for u in units}
        return quality_metrics(traces, {k: r for k, r in done.items() if k in wanted}, label_set.labels,
                               reader=model.name, n_boot=ctx.spec.evaluate.bootstrap, seed=ctx.spec.seed,
                               leaks=leak_stats(traces, attempts, label_set))
