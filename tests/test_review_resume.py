"""A reviewed resume (`compile --resume RUN_DIR --reviewed`) on a run with every use of the traces: demos, the
fine-tuned student (a step on a tiny random checkpoint), the refined guideline and trace quality all run again on
the reviewed traces, beside the raw ones, paired against them; the plan names what the run adds. Fake engines:
the keyword teacher (its blind judge reads a rationale's last word), a guideline-aware rater, a trace reader."""

from __future__ import annotations

import json

import pytest
from support import read_jsonl
from support.specs import FAKE_ENGINES, toy_spec, write_spec
from support.tiny_model import children_in_process

from thinktrace.compile import main
from thinktrace.review.judge import RunJudge
from thinktrace.review.store import ReviewStore


def full_spec(tiny) -> dict:
    fake = lambda engine, name: {"name": name, "provider": "python", "model": f"{FAKE_ENGINES}:{engine}",  # noqa: E731
                                 "cache": False}
    return toy_spec(**{
        "models.generator": fake("keyword_rater", "gen"),
        "models.raters": [fake("guideline_aware", "a"), fake("trace_reader", "reader")],
        "sampling.max_demos": 2, "trace_quality": {"enabled": True, "reader": "reader"},
        "guidelines": {"enabled": True, "candidates": 1, "rounds": 1, "writer": fake("guideline_aware", "writer")},
        "finetune": {"enabled": True, "base": str(tiny), "max_steps": 1, "save_steps": 1, "batch_size": 4,
                     "max_length": 480, "num_threads": 1, "ablation_label_only": False, "ablation_shuffled": False},
        "evaluate.bootstrap": 20, "evaluate.max_items": 5})


@pytest.fixture(scope="module")
def reviewed_run(tiny_model_dir, tmp_path_factory):
    """A run, reviewed (every other trace rejected, one edited), then resumed with --reviewed."""
    work = tmp_path_factory.mktemp("reviewed-resume")
    spec = write_spec(work, full_spec(tiny_model_dir))
    out = work / "run"
    with children_in_process():
        assert main([str(spec), "--out", str(out)]) == 0
    raw = json.loads((out / "metrics.json").read_text())
    store = ReviewStore(out)
    judge = RunJudge(out, store.label_set)
    for n, t in enumerate(store.traces):
        if n % 2:
            store.new_review(t["id"], "reject", "ann", reason="restates the guideline")
    edited = store.traces[0]
    store.new_review(edited["id"], "edit", "ann", rationale=f"the sentiment words say {edited['human']}", judge=judge)
    with children_in_process():
        assert main([str(spec), "--resume", str(out), "--reviewed"]) == 0
    return spec, out, raw, json.loads((out / "metrics.json").read_text()), store, edited


def test_the_fine_tuned_student_trains_on_the_reviewed_rows(reviewed_run):
    _, out, raw, metrics, store, edited = reviewed_run
    kept, counts = ReviewStore(out).reviewed_traces()
    rows = read_jsonl(out / "reviewed" / "sft.jsonl")
    assert len(rows) == len(kept) == len(store.traces) - counts["rejected"] and counts["rejected"] > 0
    assert any("the sentiment words say" in r["messages"][-1]["content"] for r in rows if r["key"] == edited["key"])
    ft = metrics["finetune"]["reviewed-trace-sft"]
    assert ft["trained_on"]["rows"] == len(rows)
    assert json.loads((out / "finetune" / "reviewed-trace-sft" / "job.json").read_text())["rows"] == \
        "reviewed/sft.jsonl"
    assert metrics["finetune"]["trace-sft"]["trained_on"] == raw["finetune"]["trace-sft"]["trained_on"]
    test = metrics["splits"]["test"]
    base = next(v["name"] for v in metrics["variants"] if v["kind"] == "trace-sft").rsplit("+", 1)[0]
    assert f"{base}+reviewed-trace-sft" in test["raters"]
    assert (f"{base}+trace-sft", f"{base}+reviewed-trace-sft") in {(c["a"], c["b"]) for c in test["comparisons"]}


def test_demos_guideline_and_trace_quality_run_on_the_reviewed_traces(reviewed_run):
    _, out, raw, metrics, store, _ = reviewed_run
    kept, _ = ReviewStore(out).reviewed_traces()
    test = metrics["splits"]["test"]
    pairs = {(c["a"], c["b"]) for c in test["comparisons"]}
    assert ("a+demos", "a+reviewed-demos") in pairs
    g = metrics["guidelines"]["reviewed"]
    assert g["review"]["rejected"] > 0 and (out / "reviewed" / "guideline.md").exists()
    assert (out / "reviewed" / "guidelines").is_dir()
    assert g["refined_changed"] and "RULE" in (out / "reviewed" / "guideline.md").read_text()
    assert ("a+refined", "a+reviewed-refined") in pairs and "a+reviewed-refined" in test["raters"]
    q = metrics["trace_quality"]
    assert q["n_traces"] == raw["trace_quality"]["n_traces"] == len(store.traces)  # the raw numbers stay
    assert q["reviewed"]["n_traces"] == len(kept)
    reads = read_jsonl(out / "reviewed" / "trace_quality.jsonl")
    assert reads and {r["unit"] for r in reads if r["condition"] == "with_trace"} <= \
        {f"{t['key']}|{t['strategy']}|{t['attempt']}" for t in kept}


def test_the_plan_names_the_reviewed_variants_the_run_adds(reviewed_run):
    from thinktrace.data import load_corpus
    from thinktrace.run.stages import PlanContext, stages
    from thinktrace.spec import load_spec

    spec, _, raw, metrics, _, _ = reviewed_run
    loaded = load_spec(spec)
    corpus = load_corpus(loaded.spec.data, loaded.base_dir, loaded.spec.seed)
    ctx = PlanContext(loaded.spec, corpus, {n: len(corpus.split(n)) for n in ("train", "dev", "test")}, reviewed=True)
    for stage in stages():
        if stage.enabled(loaded.spec):
            stage.plan(ctx)
    added = {v["name"] for v in metrics["variants"]} - {v["name"] for v in raw["variants"]}
    assert added and added <= set(ctx.variants)
    raters = {r.name for r in loaded.spec.models.raters}  # evaluated in every run; the stages plan the rest
    assert {v["name"] for v in metrics["variants"]} - raters == set(ctx.variants)
    assert all("reviewed" in name for name in added)


def test_the_report_reads_reviewed_vs_raw(reviewed_run):
    _, out, _, metrics, _, _ = reviewed_run
    report = (out / "report.md").read_text()
    assert "reviewed vs raw traces (fine-tuned student)" in report
    assert "reviewed vs raw traces as few-shot demos" in report
    review = metrics["traces"]["reviewed"]
    assert f"{review['rejected']} rejected, 1 edited" in report
