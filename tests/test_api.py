"""The Python API (`thinktrace.compile`, `Run`, `thinktrace.compare`, `load_spec`) runs what the command line runs,
and the run's stages are a registry a user extends (a stage of their own, registered after an existing one)."""

from __future__ import annotations

import json

import pytest
from support.specs import toy_spec, write_spec

import thinktrace
from thinktrace.compile import main

VOLATILE = {"timing", "peak_rss_mib", "stages", "calls"}  # wall times, memory, tokens per stage, endpoint counters


def comparable(metrics: dict) -> dict:
    """metrics.json without what differs between two runs of the same spec (latencies, times, counters)."""
    out = {k: v for k, v in json.loads(json.dumps(metrics)).items() if k not in VOLATILE}
    for split in out.get("splits", {}).values():
        for rater in split.get("raters", {}).values():
            rater.pop("latency_s_median", None)
    return out


def same(a: dict, b: dict) -> bool:
    """Equal as JSON documents (NaN, as metrics.json writes it, equal to NaN)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_compile_returns_the_run_the_cli_writes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, toy_spec(**{"sampling.max_demos": 2}))
    run = thinktrace.compile(str(spec), out=tmp_path / "api", evaluate={"bootstrap": 30})
    written = json.loads((tmp_path / "api" / "metrics.json").read_text())
    assert same(run.metrics.model_dump(mode="json", exclude_unset=True), written)  # the document the run wrote
    assert run.ok and run.status == "complete" and run.path == tmp_path / "api"
    assert [v.name for v in run.variants] == ["kw", "kw+demos"]
    assert run.traces and run.traces[0]["label"] == run.traces[0]["human"]
    assert run.report.is_file() and run.report_html.is_file() and "kw" in run.summary
    assert run.alpha("kw").value == written["splits"]["test"]["raters"]["kw"]["alpha"]["value"]
    # the command line, same spec and the same override: the same numbers
    assert main([str(spec), "--set", "evaluate.bootstrap=30", "--out", str(tmp_path / "cli")]) == 0
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert same(comparable(cli), comparable(written))
    again = thinktrace.Run.open(tmp_path / "cli")
    dumped = again.metrics.model_dump(mode="json", exclude_unset=True)
    assert same(dumped, cli)


def test_compile_takes_a_mapping_and_dry_run_plans_without_models(tmp_path):
    spec = toy_spec()
    run = thinktrace.compile(spec, dry_run=True, base_dir=tmp_path, sampling={"k": 2})
    assert run.metrics is None and run.plan["stages"]["traces"]["k"] == 2
    assert not (tmp_path / "runs").exists()
    with pytest.raises(thinktrace.errors.SpecError, match=r"<mapping>: sampling.k"):
        thinktrace.compile(spec, dry_run=True, sampling={"k": 0})


def test_field_overrides_are_set_assignments():
    from thinktrace.run.api import _field_overrides

    assert _field_overrides({"data": {"limit": 50, "split": {"train": 0.5}}, "seed": 1, "evaluate": {
        "splits": ["dev", "test"]}, "description": "a: b"}) == [
        "data.limit=50", "data.split.train=0.5", "seed=1", "evaluate.splits=[dev, test]", "description='a: b'"]


def test_compile_is_callable_as_the_module_too():
    """`python -m thinktrace.compile` is a module; importing it must not take the API function's place."""
    import thinktrace.compile as module

    assert callable(thinktrace.compile) and callable(module) and callable(thinktrace.compare)
    with pytest.raises(thinktrace.errors.SpecError, match="spec file not found"):
        module("no-such-spec.yaml", dry_run=True)


def test_a_registered_stage_runs_in_its_place_and_adds_a_variant(tmp_path, monkeypatch):
    from dataclasses import replace

    from thinktrace.registry import stages
    from thinktrace.run.stages import Stage, StageResult, plan_stages

    seen = []

    class Shout(Stage):
        """Rate with the guideline in capitals: a variant of each rater, paired with it."""

        name = "shout"

        def plan(self, ctx):
            ctx.variants += [f"{r.name}+shout" for r in ctx.spec.models.raters]
            return {"lm_calls_max": 0}

        def run(self, ctx):
            seen.append([v.name for v in ctx.variants])
            return StageResult({"shouted": len(ctx.baselines())},
                               [replace(v, name=f"{v.name}+shout", kind="shout", guideline=v.guideline.upper(),
                                        compare_to=[v.name]) for v in ctx.baselines()])

    stages.register("shout", Shout(), after="traces")
    try:
        assert stages.names()[:2] == ["traces", "shout"]
        with pytest.raises(ValueError, match="already registered"):
            stages.register("shout", Shout())
        monkeypatch.chdir(tmp_path)
        run = thinktrace.compile(str(write_spec(tmp_path, toy_spec())), out=tmp_path / "run")
        from thinktrace.data import load_corpus

        loaded = thinktrace.load_spec(tmp_path / "spec.yaml")
        plan = plan_stages(loaded.spec, load_corpus(loaded.spec.data, loaded.base_dir, loaded.spec.seed))
    finally:
        stages.unregister("shout")
    assert seen == [["kw"]]
    assert run.metrics.model_dump()["shout"] == {"shouted": 1}
    assert [v.name for v in run.variants] == ["kw", "kw+shout"]
    assert list(plan) == ["traces", "shout", "evaluate"] and "kw+shout" in plan["evaluate"]["variants"]
    pairs = {(c.a, c.b) for c in run.metrics.splits["test"].comparisons}
    assert ("kw", "kw+shout") in pairs


def test_a_stage_that_returns_no_result_is_an_error(tmp_path, monkeypatch):
    from thinktrace.registry import stages
    from thinktrace.run.stages import Stage

    class Broken(Stage):
        name = "broken"

        def plan(self, ctx):
            return {"lm_calls_max": 0}

        def run(self, ctx):
            return {"not": "a StageResult"}

    stages.register("broken", Broken(), after="traces")
    try:
        monkeypatch.chdir(tmp_path)
        with pytest.raises(TypeError, match="stage broken returned dict"):
            thinktrace.compile(str(write_spec(tmp_path, toy_spec())), out=tmp_path / "run")
    finally:
        stages.unregister("broken")


def test_unknown_stage_after_names_the_stages():
    from thinktrace.registry import stages
    from thinktrace.run.stages import Stage

    with pytest.raises(ValueError, match="one of: traces, self_traces"):
        stages.register("x", Stage(), after="nope")


def test_compare_takes_runs_and_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, toy_spec(**{"evaluate.bootstrap": 20}))
    first = thinktrace.compile(str(spec), out=tmp_path / "a")
    second = thinktrace.compile(str(spec), out=tmp_path / "b", sampling={"max_demos": 2})
    comp = thinktrace.compare(first, str(second.path))
    assert [(r["run_index"], r["variant"]) for r in comp.rows] == [(0, "kw"), (1, "kw"), (1, "kw+demos")]
    assert "kw+demos" in comp.markdown()
    from thinktrace.runview import RunError

    with pytest.raises(RunError, match="nowhere: no such run folder"):
        thinktrace.compare(tmp_path / "nowhere")


def test_a_stage_class_registered_with_the_decorator_is_instantiated():
    from thinktrace.registry import stages
    from thinktrace.run.stages import Stage, StageResult, stages as run_stages

    @stages.register("noop", after="traces")
    class Noop(Stage):
        name = "noop"

        def plan(self, ctx):
            return {"lm_calls_max": 0}

        def run(self, ctx):
            return StageResult()

    try:
        made = [s for s in run_stages() if s.name == "noop"]
        assert len(made) == 1 and isinstance(made[0], Noop)
    finally:
        stages.unregister("noop")
