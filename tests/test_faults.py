"""LM faults through a full compile (about 20 % of calls): transient faults are retried inside the call and cost
nothing, final ones are counted against `calls.max_failed`, no accepted trace is wrong."""

import json

from support import read_jsonl
from support.specs import fake_model, toy_spec, write_spec

from thinktrace.compile import EXIT_FAILURES, main

RATER = {"name": "faulty", "provider": "python", "model": fake_model("faulty"), "cache": False}


def faulty_spec(**extra):
    return toy_spec(**{"models.raters": [RATER], "sampling.k": 6, "sampling.strategy": "blind_then_hinted",
                       "calls.backoff_s": 0.0, **extra})



def test_faulty_engine_full_compile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main([str(write_spec(tmp_path, faulty_spec(**{"calls.max_failed": 0.25}))), "--out", str(out)]) == 0
    attempts = read_jsonl(out / "attempts.jsonl")
    errors = [a for a in attempts if a["error"]]
    # transient faults (503, timeout) were retried inside their call; what is journalled is final
    assert errors and all(e["error_kind"] == "final" for e in errors), errors[:3]
    assert {e["error"].split(":")[0] for e in errors} <= {"LMInvalidRequestError", "EmptyAnswer"}
    assert sum(a["retries"] for a in attempts) > 0
    assert all(a["label"] == a["human"] for a in attempts if a["accepted"])
    assert not any(a["accepted"] for a in errors)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"]["state"] == "complete"
    failed = metrics["traces"]["failed"]
    assert failed["errors"] == len(errors)
    assert sum(failed["by_type"].values()) == len(errors)
    calls = metrics["calls"]["stages"]
    assert calls["traces"]["pending"] == 0 and calls["traces"]["final_failures"] == len(errors)
    assert calls["traces"]["in_call_retries"] == sum(a["retries"] for a in attempts)
    preds = read_jsonl(out / "predictions.jsonl")
    rater = metrics["splits"]["test"]["raters"]["faulty"]
    assert rater["n_errors"] == sum(1 for p in preds if p["error"])
    assert rater["n_unparsed"] == sum(1 for p in preds if p["label"] is None)
    assert all(p["error_kind"] == "final" for p in preds if p["error"])
    for trace in read_jsonl(out / "traces.jsonl"):
        assert trace["label"] == trace["human"]
    report = (out / "report.md").read_text()
    assert "LM errors" in report and "failed attempts" in report and "## LM calls" in report
    assert "Too many failed" not in report


def test_final_failures_over_the_threshold_exit_non_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main([str(write_spec(tmp_path, faulty_spec(**{"calls.max_failed": 0.0}))), "--out", str(out)]) \
        == EXIT_FAILURES
    err = capsys.readouterr().err
    assert "calls.max_failed" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"]["state"] == "failures_over_threshold"
    assert (out / "report.md").read_text().splitlines()[2].startswith("> **Too many failed LM calls:**")
