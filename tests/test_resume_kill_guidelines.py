"""kill -9 while guideline candidates are being scored, then resume: finished ratings are not redone and the run
ends with the same guideline, programs and test ratings as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from support.specs import fake_model, toy_spec, write_spec

pytestmark = pytest.mark.slow  # compiles in child processes, killed and resumed: `make test-slow`


def lines(path):
    return [x for x in path.read_text().splitlines() if x.endswith("}")] if path.exists() else []


def test_kill_during_guideline_scoring_then_resume(tmp_path):
    rater = {"provider": "python", "model": fake_model("guideline_aware"), "cache": False,
             "num_threads": 1}
    spec = write_spec(tmp_path, toy_spec(**{"models.raters": [dict(rater, name="a"), dict(rater, name="b")],
                                            "guidelines": {"enabled": True, "candidates": 2, "rounds": 1},
                                            "evaluate.bootstrap": 20}))
    cmd = lambda out, *extra: [sys.executable, "-m", "thinktrace.compile", str(spec), "--out", str(out), *extra]  # noqa: E731
    env = {**os.environ, "THINKTRACE_FAKE_DELAY": "0.05"}
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    calls = tmp_path / "calls.tsv"
    proc = subprocess.Popen(cmd(killed), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**env, "THINKTRACE_FAKE_CALL_LOG": str(calls)})
    ratings = killed / "guidelines" / "ratings"
    deadline = time.time() + 120
    while time.time() < deadline and sum(len(lines(p)) for p in ratings.glob("*.jsonl")) < 25:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "guideline.md").exists(), "kill came after refinement ended"
    done = {(p.stem, json.loads(x)["rater"], json.loads(x)["item_id"]) for p in ratings.glob("*.jsonl")
            for x in lines(p)}
    assert len(done) >= 25

    calls.unlink()
    subprocess.run(cmd(killed, "--resume", str(killed)), cwd=tmp_path, check=True, capture_output=True,
                   env={**env, "THINKTRACE_FAKE_CALL_LOG": str(calls)})
    resumed_ratings = sum(1 for x in calls.read_text().splitlines() if x.split("\t")[1] in ("0.0", "None"))
    subprocess.run(cmd(clean), cwd=tmp_path, check=True, capture_output=True, env=env)
    clean_ratings = sum(len(lines(p)) for p in (clean / "guidelines" / "ratings").glob("*.jsonl"))
    test_ratings = len(lines(clean / "predictions.jsonl"))
    # the resumed process rated only what was missing (dev scoring) plus the test split
    assert resumed_ratings <= clean_ratings - len(done) + test_ratings
    for name in ("guideline.md", "programs/a.json", "programs/b.json", "traces.jsonl"):
        assert (killed / name).read_text() == (clean / name).read_text(), name
    preds = lambda run: sorted((json.loads(x)["rater"], json.loads(x)["item_id"], json.loads(x)["label"])  # noqa: E731
                               for x in lines(run / "predictions.jsonl"))
    assert preds(killed) == preds(clean)
