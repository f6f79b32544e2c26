"""The trace-quality stage's work: pick the reader, make each reader call once (journalled in trace_quality.jsonl:
settled units are skipped on resume, retryable failures are made again; a journal from a run made before the masked
conditions existed replays as it is, and only the masked units are read), and compute the numbers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Sequence

from tqdm.auto import tqdm

from thinktrace.errors import RunIncomplete
from thinktrace.journal import latest_settled
from thinktrace.lm.config import ModelConfig
from thinktrace.trace_quality.stats import leak_stats, quality_metrics
from thinktrace.trace_quality.units import Unit, build_units

if TYPE_CHECKING:  # pragma: no cover
    from thinktrace.pipeline import Pipeline

JOURNAL = "trace_quality.jsonl"


def read_key(r: dict) -> tuple:
    """The unit of trace_quality.jsonl: one condition of one trace, item or example."""
    return r["condition"], r["unit"]


def _on_base(spec, cfg: ModelConfig) -> bool:
    from thinktrace.lm.embedded import canonical_name

    base = spec.finetune.base
    return cfg.is_local and not cfg.adapter and (canonical_name(cfg.model) or cfg.model) == (canonical_name(base) or base)


def reader_name(spec) -> str:
    """The reader's name, from the spec alone (the plan): `trace_quality.reader`, else the rater on the
    fine-tuning base, else the base model itself."""
    if spec.trace_quality.reader:
        return spec.trace_quality.reader
    return next((r.name for r in spec.models.raters if _on_base(spec, r)), spec.finetune.base)


def reader_model(p: Pipeline) -> ModelConfig:
    """The reader's model entry: a named model of the spec, else the untuned student (the configured rater on
    `finetune.base`, on the weights it is evaluated on; else that base model served locally)."""
    spec = p.spec
    if spec.trace_quality.reader:
        return p.on_training_base(spec.model_named(spec.trace_quality.reader))
    for cfg in spec.models.raters:
        if _on_base(spec, cfg):
            return p.on_training_base(cfg)
    template = next((r for r in spec.models.raters if r.is_local), None)
    return ModelConfig(name=spec.finetune.base, provider="local", model=spec.finetune.base,
                       training_base=spec.finetune.enabled, max_tokens=template.max_tokens if template else 256)


def read_units(reader, lm, units: Sequence[Unit], log, *, name: str, threads: int = 4, adapter=None) -> list[dict]:
    """Each unit read once (thinktrace.evaluate.rate_one: the journal's answered / failed records), appended to
    `log` as it finishes; returns the new records. EndpointDown stops it (finished calls are journalled)."""
    from thinktrace.evaluate import rate_one

    records: list[dict] = []
    if not units:
        return records

    def call(u: Unit) -> dict:
        program = lambda item: reader(item=item, trace=u.trace)  # noqa: E731
        return {"condition": u.condition, "unit": u.unit, "key": u.key, "reader": name,
                "trace_strategy": u.trace_strategy, "trace_attempt": u.trace_attempt, "trace_sha": u.trace_sha,
                **rate_one(program, lm, u, adapter)}

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool, \
            tqdm(total=len(units), desc=f"trace quality [{name}]", unit="call") as bar:
        futures = [pool.submit(call, u) for u in units]
        try:
            for future in as_completed(futures):
                record = future.result()
                log.append(record)
                records.append(record)
                bar.update(1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return records


def run_trace_quality(p: Pipeline) -> dict:
    """The stage: every unit of the accepted traces (up to `max_traces`) read by the reader; the metrics."""
    from thinktrace.loader import load_object
    from thinktrace.records import TraceRead
    from thinktrace.rundir import JsonlLog

    cfg = p.spec.trace_quality
    traces = p.rundir.log("traces.jsonl").read()
    traces = traces[: cfg.max_traces] if cfg.max_traces else traces
    attempts = p.rundir.log("attempts.jsonl").read()
    label_set = p.corpus.label_set
    units = build_units(traces, attempts, label_set)
    model = reader_model(p)
    reader = load_object(p.spec.programs.reader, [p.loaded.base_dir], "programs.reader")(
        guideline=p.loaded.guideline, label_set=p.corpus.label_set)
    log = JsonlLog(p.rundir.file(JOURNAL), model=TraceRead)
    records = log.read()
    done = settled_for(records, units)
    todo = [u for u in units if (u.condition, u.unit) not in done and u.same_as is None]
    if todo:
        records += read_units(reader, p.lm(model), todo, log, name=model.name, threads=model.num_threads,
                              adapter=p.adapter_for(model))
    done = with_twins(settled_for(records, units), units)
    left = [u for u in units if (u.condition, u.unit) not in done]
    if left:
        raise RunIncomplete("trace_quality", f"{len(left)} of {len(units)} reader calls failed retryably after "
                            "their retries")
    wanted = {(u.condition, u.unit) for u in units}
    return quality_metrics(traces, {k: r for k, r in done.items() if k in wanted}, label_set.labels,
                           reader=model.name, n_boot=p.spec.evaluate.bootstrap, seed=p.spec.seed,
                           leaks=leak_stats(traces, attempts, label_set))


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
