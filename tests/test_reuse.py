"""`sampling.attempts_from`: a run replays another run's sampling attempts (thinktrace.reuse)."""

import json

import pytest
import yaml
from support import read_jsonl
from support.specs import toy_spec, write_spec

from thinktrace.compile import main

QUICK = {"trace_quality.enabled": False, "guidelines.enabled": False, "evaluate.max_items": 2}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished run whose attempts the others reuse."""
    tmp = tmp_path_factory.mktemp("source")
    out = tmp / "run"
    assert main([str(write_spec(tmp, toy_spec(**QUICK))), "--out", str(out)]) == 0
    return out


def traces(run):
    return [(t["key"], t["label"], t["rationale"]) for t in read_jsonl(run / "traces.jsonl")]


def test_a_run_replays_the_other_runs_attempts_instead_of_sampling(tmp_path, source):
    out = tmp_path / "run"
    spec = toy_spec(**QUICK, **{"sampling.attempts_from": str(source)})
    assert main([str(write_spec(tmp_path, spec)), "--out", str(out)]) == 0
    assert traces(out) == traces(source) and traces(out)
    metrics = json.loads((out / "metrics.json").read_text())
    attempts = read_jsonl(out / "attempts.jsonl")
    # every attempt journalled here is the other run's, marked (a sampled one would carry no reused_from)
    assert [{**a, "reused_from": None} for a in attempts] == read_jsonl(source / "attempts.jsonl")
    assert {a["reused_from"] for a in attempts} == {str(source)}
    assert metrics["traces"]["reused_attempts"] == len(attempts)
    assert metrics["traces"]["reused_examples"] == metrics["traces"]["examples"]
    # resumed: nothing is taken twice
    assert main([str(write_spec(tmp_path, spec)), "--resume", str(out)]) == 0
    assert len(read_jsonl(out / "attempts.jsonl")) == len(attempts)


def test_examples_the_other_run_lacks_are_sampled(tmp_path, source):
    """The other run sampled the first items only: the rest are sampled here, the first replayed."""
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "spec.resolved.yaml").write_text((source / "spec.resolved.yaml").read_text())
    kept = read_jsonl(source / "attempts.jsonl")
    first = sorted({a["key"] for a in kept})[:2]
    (partial / "attempts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in kept if a["key"] in first))
    out = tmp_path / "run"
    spec = toy_spec(**QUICK, **{"sampling.attempts_from": str(partial / "attempts.jsonl")})
    assert main([str(write_spec(tmp_path, spec)), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["traces"]["reused_examples"] == 2 < metrics["traces"]["examples"]
    attempts = read_jsonl(out / "attempts.jsonl")
    assert {a["key"] for a in attempts if a.get("reused_from")} == set(first)
    assert {a["key"] for a in attempts if not a.get("reused_from")} == {e["key"] for e in kept} - set(first)


@pytest.mark.parametrize("override, field", [
    ({"sampling.k": 2}, "sampling.k"),
    ({"seed": 1}, "seed"),
    ({"codebook": "Rate how positive the text is."}, "codebook"),
    ({"sampling.temperature": 0.3}, "sampling.temperature"),
])
def test_other_requests_are_refused_naming_the_field(tmp_path, source, capsys, override, field):
    spec = toy_spec(**QUICK, **override, **{"sampling.attempts_from": str(source)})
    assert main([str(write_spec(tmp_path, spec)), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "sampling.attempts_from" in err and f"the other run's {field} is" in err


def test_another_corpus_or_a_missing_spec_is_refused(tmp_path, source, capsys):
    moved = tmp_path / "relabelled"
    moved.mkdir()
    (moved / "spec.resolved.yaml").write_text((source / "spec.resolved.yaml").read_text())
    flipped = [{**a, "human": "neutral" if a["human"] != "neutral" else "positive"}
               for a in read_jsonl(source / "attempts.jsonl")]
    (moved / "attempts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in flipped))
    spec = toy_spec(**QUICK, **{"sampling.attempts_from": str(moved)})
    assert main([str(write_spec(tmp_path, spec)), "--out", str(tmp_path / "a")]) == 2
    assert "another human label than this run's data" in capsys.readouterr().err

    (moved / "spec.resolved.yaml").unlink()
    assert main([str(write_spec(tmp_path, spec)), "--out", str(tmp_path / "b")]) == 2
    assert "spec.resolved.yaml beside it is needed" in capsys.readouterr().err

    spec = toy_spec(**QUICK, **{"sampling.attempts_from": "no/such/run"})
    assert main([str(write_spec(tmp_path, spec)), "--out", str(tmp_path / "c")]) == 2
    assert "sampling.attempts_from" in capsys.readouterr().err


def test_the_plan_names_the_source(tmp_path, source, capsys):
    spec = toy_spec(**QUICK, **{"sampling.attempts_from": str(source)})
    assert main([str(write_spec(tmp_path, spec)), "--dry-run"]) == 0
    assert f"attempts_from={source}" in capsys.readouterr().out
    assert yaml.safe_load((source / "spec.resolved.yaml").read_text())["sampling"]["attempts_from"] is None
