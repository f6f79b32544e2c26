"""End-to-end compile runs on the toy corpus with a fake engine (provider: python), in-process and as a CLI."""

import json
import os
import subprocess
import sys

import pytest
from support import read_jsonl
from support.specs import toy_spec, write_spec

from thinktrace.compile import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_dir(tmp_path):
    runs = sorted((tmp_path / "runs" / "toy").iterdir())
    assert len(runs) == 1
    return runs[0]


def test_compile_writes_the_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, toy_spec())
    assert main([str(spec)]) == 0
    run = run_dir(tmp_path)
    for name in ("spec.resolved.yaml", "data.json", "predictions.jsonl", "metrics.json", "report.md",
                 "attempts.jsonl", "traces.jsonl", "sft.jsonl", "program.json"):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["splits"]["test"]
    rater = test["raters"]["kw"]
    assert rater["n_unparsed"] == 0 and rater["alpha"]["value"] is not None
    assert rater["alpha"]["ci"][0] <= rater["alpha"]["value"] <= rater["alpha"]["ci"][1]
    assert test["human_ceiling"]["loo_alpha"]["value"] is not None
    preds = read_jsonl(run / "predictions.jsonl")
    data = json.loads((run / "data.json").read_text())
    assert {p["item_id"] for p in preds} == set(data["splits"]["test"])
    traces = read_jsonl(run / "traces.jsonl")
    assert traces and all(t["label"] == t["human"] for t in traces)
    assert set(t["item_id"] for t in traces) <= set(data["splits"]["train"])  # traces never come from test
    report = (run / "report.md").read_text()
    assert "α (95% CI)" in report and "Human ceiling" in report and "Inferred thinking traces" in report
    assert "alpha" in capsys.readouterr().out


def test_resume_reuses_predictions_and_attempts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, toy_spec())
    out = tmp_path / "runs" / "toy" / "fixed"
    assert main([str(spec), "--out", str(out)]) == 0
    before = {n: (out / n).read_text() for n in ("predictions.jsonl", "attempts.jsonl", "traces.jsonl")}
    assert main([str(spec), "--resume", str(out)]) == 0
    for name, text in before.items():
        assert (out / name).read_text() == text, name  # nothing new was sampled or rated


def test_stage_times_add_up_over_a_run_and_its_resumes(tmp_path, monkeypatch):
    """metrics.json's timing is each stage's time over every session of the run folder: a resume that redoes
    nothing adds its own (small) time to the first session's, instead of replacing it."""
    import json
    import time

    from thinktrace.run.pipeline import Pipeline

    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, toy_spec())
    out = tmp_path / "runs" / "toy" / "fixed"
    real = Pipeline.run_stage

    def slow_first_session(self, name, fn):  # the first session's traces stage takes 0.3 s longer
        return real(self, name, (lambda: (time.sleep(0.3), fn())[1]) if name == "traces" else fn)

    monkeypatch.setattr(Pipeline, "run_stage", slow_first_session)
    assert main([str(spec), "--out", str(out)]) == 0
    first = json.loads((out / "metrics.json").read_text())["timing"]
    monkeypatch.setattr(Pipeline, "run_stage", real)
    assert main([str(spec), "--resume", str(out)]) == 0
    second = json.loads((out / "metrics.json").read_text())["timing"]
    assert first["traces"] >= 0.3 and set(first) <= set(second)
    assert all(second[k] >= first[k] for k in first) and second["traces"] >= 0.3


def test_a_running_stage_journals_its_time_so_far(tmp_path, monkeypatch):
    """A session killed inside a stage keeps the time it spent there: timing.json holds the stage's time so far
    while it runs (every TIMING_TICK_S), not only after it ends."""
    import json
    import time

    from thinktrace.run import pipeline as pipeline_module
    from thinktrace.run.pipeline import Pipeline

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline_module, "TIMING_TICK_S", 0.05)
    spec = write_spec(tmp_path, toy_spec())
    out = tmp_path / "runs" / "toy" / "fixed"
    real = Pipeline.run_stage
    seen = {}

    def watched(self, name, fn):
        def slow():
            time.sleep(0.4)  # what a session killed now would leave behind
            seen[name] = json.loads(self.rundir.file("timing.json").read_text()).get(name)
            return fn()
        return real(self, name, slow if name == "traces" else fn)

    monkeypatch.setattr(Pipeline, "run_stage", watched)
    assert main([str(spec), "--out", str(out)]) == 0
    assert seen["traces"] is not None and seen["traces"] >= 0.2
    assert json.loads((out / "timing.json").read_text())["traces"] >= 0.4


def test_resume_with_another_spec_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / "toy" / "fixed"
    assert main([str(write_spec(tmp_path, toy_spec())), "--out", str(out)]) == 0
    other = write_spec(tmp_path, toy_spec(seed=5), "other.yaml")
    assert main([str(other), "--resume", str(out)]) == 2
    assert "different spec" in capsys.readouterr().err


def test_dry_run_loads_no_model(tmp_path, capsys):
    spec = toy_spec()
    spec["models"]["raters"][0] = {"name": "ghost", "provider": "local", "model": str(tmp_path / "nope")}
    path = write_spec(tmp_path, spec)
    assert main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "train=20 dev=10 test=10" in out and "at most" in out


def test_set_overrides_and_schema(tmp_path, capsys):
    path = write_spec(tmp_path, toy_spec())
    assert main([str(path), "--dry-run", "--set", "data.limit=20", "--set", "sampling.k=2"]) == 0
    assert "train=10 dev=5 test=5" in capsys.readouterr().out
    assert main(["--schema"]) == 0
    assert "`data.label_set`" in capsys.readouterr().out


@pytest.mark.parametrize("override, field", [
    ("sampling.k=0", "sampling.k"),
    ("models.raters.0.temprature=1", "models.raters.0.temprature"),
    ("data.split.train=0.9", "data.split"),
    ("data.level=cardinal", "data.level"),
    ("programs.rater=programs/nope.py:Rater", "programs.rater"),
    ("programs.rater=programs/rater.py:Nope", "programs.rater"),
])
def test_bad_spec_is_one_line_exit_2(tmp_path, override, field, capsys):
    path = write_spec(tmp_path, toy_spec())
    assert main([str(path), "--dry-run", "--set", override]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and field in lines[0], err


def test_bad_spec_from_the_command_line_is_one_line_exit_2(tmp_path):
    """The same through `python -m thinktrace.compile` (one process start: the checks above run in this one)."""
    path = write_spec(tmp_path, toy_spec())
    proc = subprocess.run([sys.executable, "-m", "thinktrace.compile", str(path), "--dry-run", "--set", "sampling.k=0"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "sampling.k" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_shipped_experiment_specs_validate():
    from pathlib import Path

    from thinktrace.spec import load_spec

    specs = sorted(Path(ROOT, "experiments").glob("*.yaml"))
    assert specs
    for path in specs:
        load_spec(path)


def test_hosted_example_dry_runs_without_keys(monkeypatch, capsys):
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert main([os.path.join(ROOT, "experiments", "hosted.yaml"), "--dry-run"]) == 0
    assert "stage guidelines" in capsys.readouterr().out


def test_an_older_run_folder_resumes_after_fields_were_added(tmp_path, monkeypatch):
    """A spec.resolved.yaml written before a field existed resumes: the missing field takes its default. A field
    that changes results still refuses the resume; `calls` and the description may change."""
    import yaml
    from support.specs import toy_spec, write_spec

    from thinktrace.compile import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    spec = toy_spec(**{"sampling.enabled": False})
    path = write_spec(tmp_path, spec)
    assert main([str(path), "--out", str(out)]) == 0
    resolved = yaml.safe_load((out / "spec.resolved.yaml").read_text())
    del resolved["calls"]  # as written by a version without the `calls` section
    del resolved["evaluate"]["prompts"]
    del resolved["guidelines"]["ablation"]
    (out / "spec.resolved.yaml").write_text(yaml.safe_dump(resolved))
    assert main([str(path), "--resume", str(out)]) == 0
    assert main([str(write_spec(tmp_path, {**spec, "description": "new words"})), "--resume", str(out)]) == 0
    changed = toy_spec(**{"sampling.enabled": False, "seed": 7})
    assert main([str(write_spec(tmp_path, changed)), "--resume", str(out)]) == 2


def test_a_run_folder_from_before_tie_break_resumes_with_its_old_rule(tmp_path, monkeypatch, capsys):
    """A run folder made before `data.tie_break` existed (its spec.resolved.yaml has none) broke ties the old way;
    resumed with a spec that does not set the field, it keeps that rule (pinned, with a note), so its gold labels do
    not change, and keeps it on every later resume. A spec asking for another rule is refused."""
    import json

    import yaml
    from support.specs import toy_spec, write_spec

    from thinktrace.compile import main

    def gold(folder):  # the gold labels of the test items, and the gold label counts over all items
        preds = {r["item_id"]: r["human"] for r in map(json.loads, (folder / "predictions.jsonl").open())}
        return preds, json.loads((folder / "metrics.json").read_text())["data"]["stats"]["gold_distribution"]

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    spec = toy_spec(**{"sampling.enabled": False})
    path = write_spec(tmp_path, spec)
    assert main([str(path), "--out", str(out), "--set", "data.tie_break=lower"]) == 0  # the old rule...
    before = gold(out)
    resolved = yaml.safe_load((out / "spec.resolved.yaml").read_text())
    del resolved["data"]["tie_break"]  # ...as written by a version without the field
    (out / "spec.resolved.yaml").write_text(yaml.safe_dump(resolved))
    capsys.readouterr()
    assert main([str(path), "--resume", str(out)]) == 0
    assert "data.tie_break: lower" in capsys.readouterr().err
    stats = json.loads((out / "metrics.json").read_text())["data"]["stats"]
    assert gold(out) == before and stats["tie_break"] == "lower" and stats["ties"]["majority"] == 2
    assert main([str(path), "--resume", str(out)]) == 0  # and again, now that spec.resolved.yaml names the rule
    assert gold(out) == before
    assert main([str(path), "--resume", str(out), "--set", "data.tie_break=half_even"]) == 2
    assert "data" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    assert main([str(path), "--out", str(fresh)]) == 0  # a new run: the symmetric default, other gold labels
    assert json.loads((fresh / "metrics.json").read_text())["data"]["stats"]["tie_break"] == "half_even"
    assert gold(fresh)[1] != before[1]  # the two tied items (t11, t19) no longer both go to "negative"
    assert gold(fresh)[1]["negative"] == before[1]["negative"] - 2


def test_the_plan_names_fine_tuned_variants_after_the_rater_on_the_base(tmp_path, monkeypatch, capsys):
    from support.specs import toy_spec, write_spec

    from thinktrace.compile import main

    monkeypatch.chdir(tmp_path)
    spec = toy_spec(**{"models.raters": [{"name": "student", "provider": "local", "model": "smollm2-135m"}],
                       "finetune.enabled": True, "finetune.base": "embedded"})
    assert main([str(write_spec(tmp_path, spec)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "'student+trace-sft'" in out and "'student+label-sft'" in out


def test_metrics_json_is_written_once_and_holds_the_report_additions(tmp_path, monkeypatch):
    import json

    from support.specs import toy_spec, write_spec

    from thinktrace.compile import main
    from thinktrace.rundir import RunDir

    writes = []
    original = RunDir.write_json

    def counting(self, name, data):
        writes.append(name)
        return original(self, name, data)

    monkeypatch.setattr(RunDir, "write_json", counting)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main([str(write_spec(tmp_path, toy_spec(**{"sampling.enabled": False}))), "--out", str(out)]) == 0
    assert writes.count("metrics.json") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert "plots" not in metrics and (out / "report.html").exists()  # figures are the report's, not metrics
    assert metrics["schema_version"] == 2 and all(isinstance(v, float) for v in metrics["timing"].values())
    assert "](figures/alpha-test.png)" in (out / "report.md").read_text() and (out / "figures/alpha-test.png").exists()


@pytest.mark.parametrize("max_demos", [2, 0])
def test_the_compiled_programs_demos_are_evaluated_as_a_variant(tmp_path, monkeypatch, max_demos):
    """program.json's demos are used: each rater is rated with them (paired against itself without); with
    max_demos 0 there are neither demos nor the variant."""
    import dspy

    from thinktrace.run.context import RunContext

    monkeypatch.chdir(tmp_path)
    seen = []
    original = RunContext.program_for

    def spy(self, v, guideline=None):
        program = original(self, v, guideline)
        seen.append((v.name, [dict(d) for p in program.predictors() for d in p.demos]))
        return program

    monkeypatch.setattr(RunContext, "program_for", spy)
    out = tmp_path / "run"
    assert main([str(write_spec(tmp_path, toy_spec(**{"sampling.max_demos": max_demos}))), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    saved = json.loads((out / "program.json").read_text())
    saved_demos = [d for part in saved.values() if isinstance(part, dict) for d in part.get("demos") or []]
    variants = {v["name"]: v for v in metrics["variants"]}
    if not max_demos:
        assert "kw+demos" not in variants and not saved_demos and all(not d for _, d in seen)
        return
    assert variants["kw+demos"]["kind"] == "trace-demos" and metrics["traces"]["demos"] == 2
    assert ("kw", "kw+demos") in {(c["a"], c["b"]) for c in metrics["splits"]["test"]["comparisons"]}
    used = [d for name, d in seen if name == "kw+demos"]
    assert used and all(len(d) == 2 for d in used)
    key = lambda d: (d["item"], d["label"], d["rationale"])  # noqa: E731
    assert sorted(map(key, used[0])) == sorted(map(key, saved_demos))  # the compiled program's demos
    assert all(not d for name, d in seen if name == "kw")  # the baseline stays zero-shot
    traces = {(t["item"], t["label"]) for t in map(json.loads, (out / "traces.jsonl").read_text().splitlines())}
    assert {(d["item"], d["label"]) for d in used[0]} <= traces


def test_no_accepted_trace_means_no_demos_variant(tmp_path, monkeypatch):
    """Without an accepted trace a demos variant would be the zero-shot rater again: it is not evaluated, and the
    report says why."""
    import thinktrace.teleprompt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(thinktrace.teleprompt, "select_demos", lambda traces, label_set, n: [])
    out = tmp_path / "run"
    assert main([str(write_spec(tmp_path, toy_spec(**{"sampling.max_demos": 2}))), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["traces"]["demos"] == 0 and "kw+demos" not in {v["name"] for v in metrics["variants"]}
    assert "no accepted trace: no demos variant" in (out / "report.md").read_text()
