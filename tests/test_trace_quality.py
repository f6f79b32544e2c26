"""The trace-quality stage: does each accepted trace carry its label? Fake readers (tests/fake_engines.py): one
returns the label its trace states, one ignores the trace."""

import json

import numpy as np
import pytest
from specs import TESTS, toy_spec, write_spec

from thinktrace.compile import main
from thinktrace.trace_quality import build_units, quality_metrics
from thinktrace.trace_quality.units import REJECTED, WITH, WITHOUT, trace_id

ENGINES = TESTS / "fake_engines.py"


def reader_spec(engine: str, level: str = "nominal", **extra) -> dict:
    spec = toy_spec(**{"trace_quality": {"enabled": True, "reader": "reader"}, "data.level": level,
                       "guidelines.enabled": False, **extra})
    spec["models"]["raters"].append({"name": "reader", "provider": "python", "model": f"{ENGINES}:{engine}",
                                     "cache": False})
    spec["models"]["generator"] = dict(spec["models"]["raters"][0], name="gen")
    return spec


def run(tmp_path, spec: dict, *extra) -> tuple:
    out = tmp_path / "run"
    assert main([str(write_spec(tmp_path, spec)), "--out", str(out), *extra]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def jsonl(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


# -- the numbers, on hand-made records ------------------------------------------------------------------------

def _trace(key, human, strategy="blind", attempt=0, item_id=None):
    return {"key": key, "item_id": item_id or key, "item": f"text {key}", "human": human, "rationale": f"r {key}",
            "strategy": strategy, "attempt": attempt, "label": human}


def _done(traces, with_labels, without_labels, rejected_labels=None):
    done = {}
    for t, w, o in zip(traces, with_labels, without_labels):
        done[(WITH, trace_id(t))] = {"condition": WITH, "label": w}
        done[(WITHOUT, t["item_id"])] = {"condition": WITHOUT, "label": o}
    for t, r in zip(traces, rejected_labels or []):
        if r is not False:
            done[(REJECTED, t["key"])] = {"condition": REJECTED, "label": r, "trace_strategy": "blind"}
    return done


def test_rates_paired_differences_and_the_rejected_subset_are_counted_exactly():
    traces = [_trace(f"i{n}", "pos" if n < 6 else "neg") for n in range(10)]
    with_ = ["pos"] * 6 + ["neg"] * 3 + ["pos"]  # 9 of 10 hits
    without = ["pos", "neg", "neg", "neg", "neg", "neg", "pos", "pos", "pos", "neg"]  # 2 of 10 hits
    rejected = ["neg", "neg", "pos", False, False, False, "neg", "pos", False, False]  # 5 traces; hits: i2, i6
    q = quality_metrics(traces, _done(traces, with_, without, rejected), ["neg", "pos"], reader="r", n_boot=500,
                        seed=0)
    o = q["overall"]
    assert o["n"] == 10 and o[WITH]["value"] == pytest.approx(0.9) and o[WITHOUT]["value"] == pytest.approx(0.2)
    d = o["with_trace_minus_without_trace"]
    assert d["diff"] == pytest.approx(0.7) and d["ci"][0] > 0 and d["ci"][0] <= 0.7 <= d["ci"][1]
    assert o[WITH]["ci"][0] <= 0.9 <= o[WITH]["ci"][1] and q["moves_toward_human"] is True and not q["warnings"]
    r = o["rejected"]
    assert r["n"] == 5 and r["n_items"] == 5 and r["by_strategy"] == {"blind": 5}
    assert r[WITH]["value"] == pytest.approx(1.0) and r[REJECTED]["value"] == pytest.approx(0.4)
    assert r["with_trace_minus_rejected_trace"]["diff"] == pytest.approx(0.6)
    assert r[WITHOUT]["value"] == pytest.approx(0.2)  # only i0 of the subset (i0, i1, i2, i6, i7)
    pos, neg = q["per_label"]["pos"], q["per_label"]["neg"]
    assert pos["n"] == 6 and pos[WITH]["value"] == 1.0 and pos[WITHOUT]["value"] == pytest.approx(1 / 6)
    assert neg["n"] == 4 and neg[WITH]["value"] == pytest.approx(0.75) and neg[WITHOUT]["value"] == pytest.approx(0.25)
    assert list(q["per_label"]) == ["neg", "pos"]  # label-set order


def test_the_warning_rule_is_ci_aware():
    """A positive difference whose CI reaches 0 still warns; without resamples the point difference decides."""
    traces = [_trace(f"i{n}", "pos") for n in range(10)]
    with_, without = ["pos"] * 3 + ["neg"] * 7, ["pos"] * 2 + ["neg"] * 8
    q = quality_metrics(traces, _done(traces, with_, without), ["neg", "pos"], reader="r", n_boot=500, seed=0)
    d = q["overall"]["with_trace_minus_without_trace"]
    assert d["diff"] == pytest.approx(0.1) and d["ci"][0] <= 0
    assert q["moves_toward_human"] is False and len(q["warnings"]) == 1 and "do not move the reader" in q["warnings"][0]
    assert "0.30" in q["warnings"][0] and "0.20" in q["warnings"][0]
    q0 = quality_metrics(traces, _done(traces, with_, without), ["neg", "pos"], reader="r", n_boot=0, seed=0)
    assert q0["overall"][WITH]["ci"] == [None, None] and q0["moves_toward_human"] is True and not q0["warnings"]
    same = quality_metrics(traces, _done(traces, with_, with_), ["neg", "pos"], reader="r", n_boot=0, seed=0)
    assert same["moves_toward_human"] is False and same["warnings"]


def test_failed_calls_leave_their_traces_out_and_unparsed_answers_are_misses():
    traces = [_trace(f"i{n}", "pos") for n in range(4)]
    done = _done(traces, ["pos", None, "pos", "pos"], ["neg"] * 4)
    done[(WITHOUT, "i3")] = {"condition": WITHOUT, "label": None, "error": "InvalidRequestError: 400"}
    q = quality_metrics(traces, done, ["neg", "pos"], reader="r", n_boot=100, seed=0)
    assert q["overall"]["n"] == 3 and q["overall"][WITH]["value"] == pytest.approx(2 / 3)
    assert q["n_errors"][WITHOUT] == 1 and q["n_unparsed"][WITH] == 1


def test_units_one_without_per_item_and_the_first_rejected_trace_by_strategy_then_attempt():
    traces = [_trace("a::x", "pos", item_id="a"), _trace("a::y", "neg", item_id="a"),
              _trace("b", "pos", strategy="hinted", attempt=0)]
    attempts = [
        {"key": "b", "strategy": "hinted", "attempt": 1, "accepted": False, "rationale": "late hinted"},
        {"key": "b", "strategy": "blind", "attempt": 2, "accepted": False, "rationale": "blind 2"},
        {"key": "b", "strategy": "blind", "attempt": 1, "accepted": False, "rationale": "blind 1"},
        {"key": "b", "strategy": "blind", "attempt": 0, "accepted": False, "rationale": "", "error": None},
        {"key": "a::x", "strategy": "blind", "attempt": 0, "accepted": False, "rationale": "x", "error": "503"},
        {"key": "a::y", "strategy": "blind", "attempt": 0, "accepted": True, "rationale": "r a::y"},
    ]
    units = build_units(traces, attempts)
    got = [(u.condition, u.unit, u.trace) for u in units]
    assert got == [(WITH, "a::x|blind|0", "r a::x"), (WITHOUT, "a", None), (WITH, "a::y|blind|0", "r a::y"),
                   (WITH, "b|hinted|0", "r b"), (WITHOUT, "b", None), (REJECTED, "b", "blind 1")]


# -- the stage in a compile run ----------------------------------------------------------------------------------

@pytest.mark.parametrize("level", ["nominal", "ordinal"])
def test_a_reader_that_reads_the_trace_returns_the_human_label_with_it(tmp_path, monkeypatch, level):
    monkeypatch.chdir(tmp_path)
    out, metrics = run(tmp_path, reader_spec("trace_reader", level))
    q = metrics["trace_quality"]
    traces = jsonl(out / "traces.jsonl")
    assert q["reader"] == "reader" and q["n_traces"] == len(traces) and q["overall"]["n"] == len(traces)
    neutral = sum(t["human"] == "neutral" for t in traces) / len(traces)
    assert q["overall"][WITH]["value"] == 1.0 and q["overall"][WITHOUT]["value"] == pytest.approx(neutral)
    assert q["moves_toward_human"] is True and not metrics.get("warnings")
    r = q["overall"]["rejected"]  # the keyword generator's rejected traces state a wrong label
    assert r["n"] > 0 and r[REJECTED]["value"] == 0.0 and r[WITH]["value"] == 1.0
    assert set(q["per_label"]) <= {"negative", "neutral", "positive"}
    assert q["per_label"]["neutral"][WITHOUT]["value"] == 1.0 and q["per_label"]["positive"][WITHOUT]["value"] == 0
    records = jsonl(out / "trace_quality.jsonl")
    assert {r["condition"] for r in records} == {WITH, WITHOUT, REJECTED} and all(not r["error"] for r in records)
    assert metrics["calls"]["stages"]["trace_quality"]["settled"] == len(records)
    assert metrics["timing"]["trace_quality"] >= 0
    report = (out / "report.md").read_text()
    assert "## Trace quality" in report and "Rejected-trace subset" in report and "> trace quality" not in report


def test_a_reader_that_ignores_the_trace_gets_the_corpus_a_warning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, metrics = run(tmp_path, reader_spec("trace_ignorer"))
    q = metrics["trace_quality"]
    assert q["overall"][WITH]["value"] == q["overall"][WITHOUT]["value"]
    assert q["overall"]["with_trace_minus_without_trace"]["diff"] == 0 and q["moves_toward_human"] is False
    assert any(w.startswith("trace quality: the traces do not move the reader (reader)") for w in metrics["warnings"])
    report, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "> trace quality: the traces do not move the reader" in report
    assert 'class="warn">trace quality: the traces do not move the reader' in page


def test_resume_repeats_no_settled_call(tmp_path, monkeypatch):
    """A run cut short (half the journal kept, one unit with only a retryable failure): the resume reads exactly
    the units without a settled record, and the numbers equal an uninterrupted run's."""
    monkeypatch.chdir(tmp_path)
    calls = tmp_path / "reads.log"
    monkeypatch.setenv("THINKTRACE_FAKE_READ_LOG", str(calls))
    out, first = run(tmp_path, reader_spec("trace_reader"))
    journal = out / "trace_quality.jsonl"
    records = jsonl(journal)
    assert len(calls.read_text().splitlines()) == len(records)
    kept, dropped = records[: len(records) // 2], records[len(records) // 2:]
    retry = {**dropped[0], "label": None, "error": "ServerError: injected 503", "error_kind": "transient"}
    journal.write_text("".join(json.dumps(r) + "\n" for r in kept + [retry]))
    calls.write_text("")
    assert main([str(write_spec(tmp_path, reader_spec("trace_reader"))), "--resume", str(out)]) == 0
    again = calls.read_text().splitlines()
    assert len(again) == len(dropped)
    assert sorted((line.split("\t")[0], line.split("\t")[1]) for line in again) == sorted(
        ("item" if r["condition"] == WITHOUT else "trace", next(t["item"] for t in jsonl(out / "traces.jsonl")
                                                              if t["item_id"] == r["item_id"])) for r in dropped)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trace_quality"] == first["trace_quality"]
    calls.write_text("")
    assert main([str(write_spec(tmp_path, reader_spec("trace_reader"))), "--resume", str(out)]) == 0
    assert calls.read_text() == ""  # all settled: not one call


def test_max_traces_caps_the_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, metrics = run(tmp_path, reader_spec("trace_reader", **{"trace_quality.max_traces": 2}))
    assert metrics["trace_quality"]["n_traces"] == 2


def test_the_plan_lists_the_stage_with_its_reader_and_artifacts(tmp_path, monkeypatch, capsys):
    from thinktrace.data import load_corpus
    from thinktrace.spec import load_spec
    from thinktrace.stages import plan_stages

    monkeypatch.chdir(tmp_path)
    loaded = load_spec(write_spec(tmp_path, reader_spec("trace_reader", **{"trace_quality.max_traces": 3})))
    plan = plan_stages(loaded.spec, load_corpus(loaded.spec.data, loaded.base_dir, seed=0))
    assert list(plan)[:2] == ["traces", "trace_quality"]
    tq = plan["trace_quality"]
    assert tq["reader"] == "reader" and tq["writes"] == ["trace_quality.jsonl"] and tq["traces_max"] == 3
    assert tq["lm_calls_max"] == 9
    assert main([str(write_spec(tmp_path, reader_spec("trace_reader"))), "--dry-run"]) == 0
    assert "trace_quality" in capsys.readouterr().out and not (tmp_path / "runs").exists()


def test_by_default_the_check_runs_when_the_student_is_fine_tuned():
    from thinktrace.spec import Spec
    from thinktrace.stages import TraceQualityStage

    stage = TraceQualityStage()
    assert not stage.enabled(Spec.model_validate(toy_spec()))  # no fine-tuning: no student to read
    tuned = Spec.model_validate(toy_spec(**{"finetune.enabled": True}))
    assert stage.enabled(tuned)
    from thinktrace.trace_quality.run import reader_name

    assert reader_name(tuned) == "smollm2-135m"  # the untuned fine-tuning base
    assert not stage.enabled(Spec.model_validate(toy_spec(**{"finetune.enabled": True,
                                                             "trace_quality.enabled": False})))


@pytest.mark.parametrize("override, field, says", [
    ({"trace_quality.reader": "nobody"}, "trace_quality.reader", "one of: kw"),
    ({"trace_quality.enabled": True, "sampling.enabled": False}, "trace_quality.enabled", "sampling.enabled"),
    ({"trace_quality.max_traces": 0}, "trace_quality.max_traces", "greater than or equal to 1"),
    ({"trace_quality.speed": 1}, "trace_quality.speed", "allowed: enabled, reader, max_traces"),
])
def test_bad_trace_quality_specs_name_the_field(tmp_path, override, field, says):
    from thinktrace.errors import SpecError
    from thinktrace.spec import load_spec

    with pytest.raises(SpecError) as err:
        load_spec(write_spec(tmp_path, toy_spec(**override)))
    assert field in str(err.value) and says in str(err.value) and "spec.yaml" in str(err.value)


def test_bootstrap_rates_reuse_the_agreement_resamples():
    """The rates' CIs come from agreement's resample_weights: the same draws as its other statistics."""
    from thinktrace.agreement._bootstrap import percentile_ci, resample_weights
    from thinktrace.trace_quality.stats import compare

    hits = np.array([1.0, 0, 1, 1, 0, 1, 1, 1])
    boot = np.concatenate([w @ hits / len(hits) for w in resample_weights(len(hits), 300, 7)])
    got = compare({"a": hits}, [], 300, 7)["a"]
    assert got["ci"] == pytest.approx(list(percentile_ci(boot)))


def test_the_dry_run_cost_counts_the_readers_calls(tmp_path):
    from thinktrace.data import load_corpus
    from thinktrace.lm.estimate import estimate
    from thinktrace.spec import load_spec
    from thinktrace.stages import plan_stages

    loaded = load_spec(write_spec(tmp_path, reader_spec("trace_reader")))
    corpus = load_corpus(loaded.spec.data, loaded.base_dir, seed=0)
    stages = plan_stages(loaded.spec, corpus)
    rows = {r["name"]: r["calls"] for r in estimate(loaded.spec, stages, corpus, loaded.guideline)}
    assert rows["reader"] == stages["trace_quality"]["lm_calls_max"] + stages["evaluate"]["lm_calls_max"] // 2
