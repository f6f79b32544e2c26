"""kill -9 in the middle of trace sampling, then resume: no accepted trace lost, no completed LM call repeated,
and the final artifacts equal an uninterrupted run's."""

import os
import signal
import subprocess
import sys
import time

import pytest
from support import read_jsonl
from support.specs import toy_spec, write_spec

pytestmark = pytest.mark.slow  # compiles in child processes, killed and resumed: `make test-slow`

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compile_cmd(spec, out, *extra):
    return [sys.executable, "-m", "thinktrace.compile", str(spec), "--out", str(out), *extra]



def test_kill_during_sampling_then_resume(tmp_path):
    spec = write_spec(tmp_path, toy_spec(**{"sampling.k": 6, "evaluate.bootstrap": 20}))
    env = {**os.environ, "THINKTRACE_FAKE_DELAY": "0.05", "PYTHONUNBUFFERED": "1"}
    calls = tmp_path / "calls.tsv"
    killed = tmp_path / "killed"

    proc = subprocess.Popen(compile_cmd(spec, killed), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**env, "THINKTRACE_FAKE_CALL_LOG": str(calls)})
    deadline = time.time() + 120
    while time.time() < deadline and len(read_jsonl(killed / "attempts.jsonl", missing_ok=True, partial_ok=True)) < 12:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    journal = read_jsonl(killed / "attempts.jsonl", missing_ok=True, partial_ok=True)
    assert 12 <= len(journal) and not (killed / "traces.jsonl").exists(), "kill came too late to test anything"
    done_before = {(r["key"], r["seed"]) for r in journal}

    calls.unlink()
    subprocess.run(compile_cmd(spec, killed, "--resume", str(killed)), cwd=tmp_path, check=True,
                   capture_output=True, env={**env, "THINKTRACE_FAKE_CALL_LOG": str(calls)})
    resumed_sampling_calls = [line.split("\t") for line in calls.read_text().splitlines()
                              if line.split("\t")[2] != "0.0"]
    by_seed = {r["seed"]: r["key"] for r in read_jsonl(killed / "attempts.jsonl", missing_ok=True, partial_ok=True)}
    assert not {(by_seed.get(int(seed)), int(seed)) for _, seed, _, _ in resumed_sampling_calls} & done_before

    clean = tmp_path / "clean"
    subprocess.run(compile_cmd(spec, clean), cwd=tmp_path, check=True, capture_output=True, env=env)
    for name in ("traces.jsonl", "sft.jsonl"):
        assert (killed / name).read_text() == (clean / name).read_text(), name
    key = lambda r: (r["key"], r["strategy"], r["attempt"])  # noqa: E731
    resumed = read_jsonl(killed / "attempts.jsonl", missing_ok=True, partial_ok=True)
    assert len({key(r) for r in resumed}) == len(resumed)  # no attempt journalled twice
    assert sorted(map(key, resumed)) == sorted(map(key, read_jsonl(clean / "attempts.jsonl")))
