"""How a run's LM calls went, from its journals (so it covers every resume): per stage, units settled / left and
final failures; this process's endpoint, fleet and budget counters; and the run's status."""

from __future__ import annotations

from thinktrace.journal import attempt_key, prediction_key


def call_summary(rundir, spec, meter) -> dict:
    """Per stage, from the journals: units settled / left, final failures by type, retryable failures journalled,
    retries spent inside calls; and this process's endpoint counters."""
    from thinktrace.journal import summary
    from thinktrace.lm.fleet import fleet_stats
    from thinktrace.lm.guard import endpoint_stats
    from thinktrace.records import Prediction
    from thinktrace.rundir import JsonlLog

    stages = {}
    if rundir.file("attempts.jsonl").exists():
        stages["traces"] = summary(rundir.log("attempts.jsonl"), attempt_key)
    if rundir.file("self/attempts.jsonl").exists():  # the student's own traces (stage self_traces)
        stages["self_traces"] = summary(JsonlLog(rundir.file("self/attempts.jsonl")), attempt_key)
    ratings = sorted(rundir.file("guidelines").glob("ratings/*.jsonl"))
    if ratings:
        rows = [{**r, "_candidate": p.stem} for p in ratings for r in JsonlLog(p, model=Prediction)]
        stages["guidelines"] = summary(rows, lambda r: (r["_candidate"], r["rater"], r["item_id"]))
    if rundir.file("trace_quality.jsonl").exists():
        stages["trace_quality"] = summary(JsonlLog(rundir.file("trace_quality.jsonl")),
                                          lambda r: (r["condition"], r["unit"]))
    if rundir.file("prompts_dev.jsonl").exists():
        stages["prompts"] = summary(rundir.log("prompts_dev.jsonl"), prediction_key)
    if rundir.file("predictions.jsonl").exists():
        stages["evaluate"] = summary(rundir.log("predictions.jsonl"), prediction_key)
    return {"stages": stages, "endpoints": endpoint_stats(), "max_failed": spec.calls.max_failed,
            "fleets": fleet_stats(), "usage": meter.summary()}


def run_status(spec, calls: dict, splits: dict | None = None) -> dict:
    """complete; failures_over_threshold (a stage's final failures above `calls.max_failed`); or
    variants_failed (a variant's parse rate below `evaluate.min_parse_rate`, `failed_variants` lists them,
    also beside failures_over_threshold). Both finish the run with exit 4."""
    from thinktrace.metrics import failed_variants

    over = {name: round(st["final_failures"] / st["settled"], 4) for name, st in calls["stages"].items()
            if st["settled"] and st["final_failures"] / st["settled"] > spec.calls.max_failed}
    failed = failed_variants(splits or {})
    parts = []
    if over:
        parts.append(f"final failures above calls.max_failed ({spec.calls.max_failed:.0%}): " +
                     ", ".join(f"{k} {v:.1%}" for k, v in over.items()))
    if failed:
        parts.append(f"parse rate below evaluate.min_parse_rate ({spec.evaluate.min_parse_rate:.0%}): " +
                     ", ".join(f"{f['variant']} parsed {f['parsed']}/{f['n_answers']} answers"
                               + (f" ({f['split']})" if len(splits or {}) > 1 else "") for f in failed))
    if not parts:
        return {"state": "complete"}
    status = {"state": "failures_over_threshold" if over else "variants_failed", "message": "; ".join(parts)}
    if over:
        status["stages"] = over
    if failed:
        status.update(failed_variants=failed, min_parse_rate=spec.evaluate.min_parse_rate)
    return status
