"""LM faults through a full compile: the run completes, every fault is counted, no accepted trace is wrong."""

import json

from specs import TESTS, toy_spec, write_spec

from thinktrace.compile import main


def test_faulty_engine_full_compile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rater = {"name": "faulty", "provider": "python", "model": f"{TESTS / 'fake_engines.py'}:faulty",
             "cache": False}
    spec = toy_spec(**{"models.raters": [rater], "sampling.k": 6, "sampling.strategy": "blind_then_hinted"})
    out = tmp_path / "run"
    assert main([str(write_spec(tmp_path, spec)), "--out", str(out)]) == 0
    attempts = [json.loads(x) for x in (out / "attempts.jsonl").read_text().splitlines()]
    errors = [a for a in attempts if a["error"]]
    assert errors and all("injected" in e["error"] for e in errors), errors[:3]
    assert all(a["label"] == a["human"] for a in attempts if a["accepted"])
    metrics = json.loads((out / "metrics.json").read_text())
    failed = metrics["traces"]["failed"]
    assert failed["errors"] == len(errors)
    assert sum(failed["by_type"].values()) == len(errors)
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    rater = metrics["splits"]["test"]["raters"]["faulty"]
    assert rater["n_errors"] == sum(1 for p in preds if p["error"])
    assert rater["n_unparsed"] == sum(1 for p in preds if p["label"] is None)
    for trace in (json.loads(x) for x in (out / "traces.jsonl").read_text().splitlines()):
        assert trace["label"] == trace["human"]
    report = (out / "report.md").read_text()
    assert "LM errors" in report and "failed attempts" in report
