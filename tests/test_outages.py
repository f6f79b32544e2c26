"""An endpoint outage costs no run: a real HTTP server on 127.0.0.1 is stopped mid-stage and started again.

For each stage that calls LMs (evaluation, rejection sampling, guideline scoring): the compile stops fast with
exit 3 and a one-line message naming the model, the endpoint and the resume command; the run folder says it is
incomplete and shows no α; the resume (server back on the same port) completes every unit, makes no answered
call twice, and ends with the same records as an uninterrupted run (the server is scripted, so texts match).
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from support import read_jsonl
from support.fake_engines import RULE
from support.openai_fake import FakeOpenAI, is_rating
from support.specs import remote, spec_for, write_spec

from thinktrace.compile import EXIT_INCOMPLETE, main
from thinktrace.journal import latest_settled


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    srv = FakeOpenAI().start()
    yield srv
    srv.stop()


def run_interrupted(tmp_path, server, spec: dict, n: int, when, capsys):
    """Run, with the server going down after n answered requests matching `when`; return the run folder, the
    seconds from the server going down to the compile's return, and the one stderr line."""
    path = write_spec(tmp_path, spec)
    out = tmp_path / "run"
    server.go_down_after(n, when)
    code = main([str(path), "--out", str(out)])
    stopped = time.monotonic()
    assert code == EXIT_INCOMPLETE
    assert server.down.is_set()
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1, err
    return path, out, err[0], stopped


def resume(path, out, server) -> int:
    server.start()  # same port: the spec's api_base works again
    return main([str(path), "--resume", str(out)])


def uninterrupted(tmp_path, spec: dict) -> tuple[FakeOpenAI, Path]:
    srv = FakeOpenAI().start()
    try:
        spec = json.loads(json.dumps(spec).replace(spec["models"]["raters"][0]["api_base"], srv.url))
        base = tmp_path / "ref"
        base.mkdir()
        out = base / "run"
        assert main([str(write_spec(base, spec)), "--out", str(out)]) == 0
        return srv, out
    finally:
        srv.stop()


from pathlib import Path  # noqa: E402


def check_stop(err: str, server, out: Path, stage: str) -> None:
    assert f"stage {stage}" in err and "model judge" in err and server.url in err
    assert "--resume" in err and str(out) in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"]["state"] == "incomplete" and metrics["status"]["stage"] == stage
    report = (out / "report.md").read_text()
    assert "INCOMPLETE RUN" in report.splitlines()[2] and "α" not in report
    assert not (out / "report.html").exists()


def settled(records, key):
    return latest_settled(records, key)


def pred_key(r):
    return r["split"], r["rater"], r["item_id"]


def attempt_key(r):
    return r["key"], r["strategy"], r["attempt"]


def test_evaluation_outage_stops_fast_and_resume_completes(tmp_path, monkeypatch, server, capsys):
    monkeypatch.chdir(tmp_path)
    spec = spec_for(tmp_path, server.url, **{"sampling.enabled": False, "guidelines.enabled": False,
                                             "finetune.enabled": False})
    path, out, err, _ = run_interrupted(tmp_path, server, spec, 20, is_rating, capsys)
    check_stop(err, server, out, "evaluate")
    before = read_jsonl(out / "predictions.jsonl", missing_ok=True)
    n_test = len(json.loads((out / "data.json").read_text())["splits"]["test"])
    answered_before = [r for r in before if not r["error"]]
    assert 20 <= len(answered_before) < n_test
    # the stage stopped on the breaker: a handful of retryable failures, not one per remaining item
    assert len([r for r in before if r["error"]]) <= 8
    assert all(r["error_kind"] == "connection" for r in before if r["error"])

    calls_before = Counter(server.answered)
    assert resume(path, out, server) == 0
    after = read_jsonl(out / "predictions.jsonl", missing_ok=True)
    done = settled(after, pred_key)
    assert len(done) == n_test and not any(r["error"] for r in done.values())
    # no answered call was made again: every request body was answered once over both server lifetimes
    assert max(Counter(server.answered).values()) == 1
    assert sum(Counter(server.answered).values()) == n_test and len(calls_before) == len(answered_before)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"]["state"] == "complete"
    assert metrics["calls"]["stages"]["evaluate"]["pending"] == 0
    assert metrics["calls"]["stages"]["evaluate"]["retryable_failures"] == len(before) - len(answered_before)
    assert metrics["splits"]["test"]["raters"]["judge"]["n_items"] == n_test
    # the same predictions as a run the outage never touched
    _, ref = uninterrupted(tmp_path, spec)
    ref_done = settled(read_jsonl(ref / "predictions.jsonl", missing_ok=True), pred_key)
    assert {k: (r["label"], r["rationale"]) for k, r in done.items()} == \
        {k: (r["label"], r["rationale"]) for k, r in ref_done.items()}
    print(f"evaluate outage: {len(answered_before)} answered + {len(before) - len(answered_before)} retryable "
          f"failures before; {len(done)}/{n_test} settled after resume")


def test_sampling_outage_uses_up_no_attempt(tmp_path, monkeypatch, server, capsys):
    monkeypatch.chdir(tmp_path)
    spec = spec_for(tmp_path, server.url, n=48, split={"train": 0.75, "dev": 0.0, "test": 0.25},
                    **{"sampling.k": 4, "sampling.temperature": 1.0, "guidelines.enabled": False,
                       "finetune.enabled": False,
                       # no retry inside the call, and 6 refusals in a row before the breaker opens: the first
                       # 5 refused attempts are journalled as retryable failures (what this test is about)
                       "calls.connect_retries": 0, "calls.down_after": 6})
    sampling = lambda body: (body.get("temperature") or 0) > 0  # noqa: E731
    path, out, err, _ = run_interrupted(tmp_path, server, spec, 15, sampling, capsys)
    check_stop(err, server, out, "traces")
    before = read_jsonl(out / "attempts.jsonl", missing_ok=True)
    failed = [r for r in before if r["error"]]
    assert len(failed) >= 5 and all(r["error_kind"] == "connection" and not r["accepted"] for r in failed)
    assert resume(path, out, server) == 0
    after = read_jsonl(out / "attempts.jsonl", missing_ok=True)
    done = settled(after, attempt_key)
    # every slot that failed on the outage was sampled again with its own seed: no attempt was used up
    for r in failed:
        assert attempt_key(r) in done and not done[attempt_key(r)]["error"]
    assert max(Counter(server.answered).values()) == 1
    _, ref = uninterrupted(tmp_path, spec)
    ref_done = settled(read_jsonl(ref / "attempts.jsonl", missing_ok=True), attempt_key)
    assert {k: (r["label"], r["accepted"]) for k, r in done.items()} == \
        {k: (r["label"], r["accepted"]) for k, r in ref_done.items()}
    assert (out / "traces.jsonl").read_text() == (ref / "traces.jsonl").read_text()
    print(f"sampling outage: {len(before) - len(failed)} attempts + {len(failed)} retryable failures before; "
          f"{len(done)} settled attempts after resume (uninterrupted run: {len(ref_done)})")


def test_guideline_scoring_outage_never_scores_a_candidate_on_survivors(tmp_path, monkeypatch, server, capsys):
    monkeypatch.chdir(tmp_path)
    spec = spec_for(tmp_path, server.url, n=48, split={"train": 0.25, "dev": 0.5, "test": 0.25},
                    **{"sampling.k": 2, "finetune.enabled": False, "guidelines.enabled": True, "guidelines.candidates": 1,
                       "guidelines.rounds": 1, "models.raters": [remote(server.url)]})
    # down while the refined candidate (its guideline carries the writer's RULE) is rated on dev
    refined_rating = lambda body: is_rating(body) and RULE in json.dumps(body)  # noqa: E731
    path, out, err, _ = run_interrupted(tmp_path, server, spec, 6, refined_rating, capsys)
    check_stop(err, server, out, "guidelines")
    rows = read_jsonl(out / "guidelines" / "candidates.jsonl", missing_ok=True)
    assert [r["id"] for r in rows] == ["0-0"]  # the original is scored; the candidate is not, on 6 ratings
    ratings = read_jsonl(out / "guidelines" / "ratings" / "1-0.jsonl", missing_ok=True)
    n_dev = len(json.loads((out / "data.json").read_text())["splits"]["dev"])
    assert 6 <= len([r for r in ratings if not r["error"]]) < n_dev
    assert resume(path, out, server) == 0
    rows = read_jsonl(out / "guidelines" / "candidates.jsonl", missing_ok=True)
    assert [r["id"] for r in rows] == ["0-0", "1-0"]
    assert rows[1]["n_dev"] == n_dev
    assert len(settled(read_jsonl(out / "guidelines" / "ratings" / "1-0.jsonl", missing_ok=True),
                       lambda r: (r["rater"], r["item_id"]))) \
        == n_dev
    assert max(Counter(server.answered).values()) == 1
    _, ref = uninterrupted(tmp_path, spec)
    ref_rows = read_jsonl(ref / "guidelines" / "candidates.jsonl", missing_ok=True)
    assert [r["alpha"] for r in rows] == [r["alpha"] for r in ref_rows]
