"""The trace-quality stage: does each accepted trace carry its label? Fake readers (tests/support/fake_engines.py): one
returns the label its trace states (a copier: the mask leaves it nothing), one follows the words its trace quotes (a
reasoner: the masked trace still leads it), one ignores the trace."""

import json

import numpy as np
import pytest
from support import read_jsonl
from support.specs import FAKE_ENGINES, toy_spec, write_spec

from thinktrace.compile import main
from thinktrace.labels import LabelSet
from thinktrace.trace_quality import build_units, leak_stats, quality_metrics
from thinktrace.trace_quality.units import MASKED, MASKED_REJECTED, REJECTED, WITH, WITHOUT, trace_id

ENGINES = FAKE_ENGINES


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



# -- the numbers, on hand-made records ------------------------------------------------------------------------

def _trace(key, human, strategy="blind", attempt=0, item_id=None):
    return {"key": key, "item_id": item_id or key, "item": f"text {key}", "human": human, "rationale": f"r {key}",
            "strategy": strategy, "attempt": attempt, "label": human}


def _done(traces, with_labels, without_labels, rejected_labels=None, masked=None, masked_rejected=None):
    """Records of each condition; the masked ones answer as the raw ones unless given."""
    done = {}
    for t, w, o, m in zip(traces, with_labels, without_labels, masked or with_labels):
        done[(WITH, trace_id(t))] = {"condition": WITH, "label": w}
        done[(MASKED, trace_id(t))] = {"condition": MASKED, "label": m}
        done[(WITHOUT, t["item_id"])] = {"condition": WITHOUT, "label": o}
    for t, r, m in zip(traces, rejected_labels or [], masked_rejected or rejected_labels or []):
        if r is not False:
            done[(REJECTED, t["key"])] = {"condition": REJECTED, "label": r, "trace_strategy": "blind"}
            done[(MASKED_REJECTED, t["key"])] = {"condition": MASKED_REJECTED, "label": m, "trace_strategy": "blind"}
    return done


def test_rates_paired_differences_and_the_rejected_subset_are_counted_exactly():
    traces = [_trace(f"i{n}", "pos" if n < 6 else "neg") for n in range(10)]
    with_ = ["pos"] * 6 + ["neg"] * 3 + ["pos"]  # 9 of 10 hits
    masked = ["pos"] * 5 + ["neg"] * 4 + ["pos"]  # 8 of 10 hits: the mask took i5
    without = ["pos", "neg", "neg", "neg", "neg", "neg", "pos", "pos", "pos", "neg"]  # 2 of 10 hits
    rejected = ["neg", "neg", "pos", False, False, False, "neg", "pos", False, False]  # 5 traces; hits: i2, i6
    masked_rej = ["pos", "pos", "pos", False, False, False, "neg", "neg", False, False]  # all 5 hit once masked
    q = quality_metrics(traces, _done(traces, with_, without, rejected, masked, masked_rej), ["neg", "pos"],
                        reader="r", n_boot=500, seed=0)
    o = q["overall"]
    assert o["n"] == 10 and o[WITH]["value"] == pytest.approx(0.9) and o[WITHOUT]["value"] == pytest.approx(0.2)
    assert o[MASKED]["value"] == pytest.approx(0.8)
    d = o["masked_trace_minus_without_trace"]
    assert d["diff"] == pytest.approx(0.6) and d["ci"][0] > 0 and d["ci"][0] <= 0.6 <= d["ci"][1]
    assert o["with_trace_minus_without_trace"]["diff"] == pytest.approx(0.7)
    assert o["with_trace_minus_masked_trace"]["diff"] == pytest.approx(0.1)
    assert o[WITH]["ci"][0] <= 0.9 <= o[WITH]["ci"][1] and q["moves_toward_human"] is True and not q["warnings"]
    assert q["raw_moves_toward_human"] is True and o["raw_moves_toward_human"] is True
    r = o["rejected"]
    assert r["n"] == 5 and r["n_items"] == 5 and r["by_strategy"] == {"blind": 5}
    assert r[WITH]["value"] == pytest.approx(1.0) and r[REJECTED]["value"] == pytest.approx(0.4)
    assert r["with_trace_minus_rejected_trace"]["diff"] == pytest.approx(0.6)
    assert r[MASKED]["value"] == pytest.approx(1.0) and r[MASKED_REJECTED]["value"] == pytest.approx(1.0)
    assert r["masked_trace_minus_masked_rejected_trace"]["diff"] == 0 and r["accepted_beats_rejected"] is False
    assert r["masked_rejected_trace_minus_without_trace"]["diff"] == pytest.approx(0.8)
    assert r[WITHOUT]["value"] == pytest.approx(0.2)  # only i0 of the subset (i0, i1, i2, i6, i7)
    pos, neg = q["per_label"]["pos"], q["per_label"]["neg"]
    assert pos["n"] == 6 and pos[WITH]["value"] == 1.0 and pos[WITHOUT]["value"] == pytest.approx(1 / 6)
    assert pos[MASKED]["value"] == pytest.approx(5 / 6) and neg[MASKED]["value"] == pytest.approx(0.75)
    assert neg["n"] == 4 and neg[WITH]["value"] == pytest.approx(0.75) and neg[WITHOUT]["value"] == pytest.approx(0.25)
    assert list(q["per_label"]) == ["neg", "pos"]  # label-set order


def test_the_verdict_reads_the_masked_trace_not_the_raw_one():
    """A reader that only copies stated labels: the raw trace lifts it, the masked one does not. The verdict is
    the masked one's, and the warning says so (with the raw rate beside it)."""
    traces = [_trace(f"i{n}", "pos") for n in range(10)]
    q = quality_metrics(traces, _done(traces, ["pos"] * 10, ["neg"] * 10, masked=["neg"] * 10), ["neg", "pos"],
                        reader="r", n_boot=200, seed=0)
    assert q["raw_moves_toward_human"] is True and q["moves_toward_human"] is False
    assert q["overall"]["masked_trace_minus_without_trace"]["diff"] == 0
    assert q["warnings"] == [
        "trace quality: the masked traces do not move the reader (r) toward the human label: it returns the human "
        "label at 0.00 [0.00, 0.00] with the masked trace (every statement of a label masked) and 0.00 [0.00, 0.00] "
        "without it, difference +0.00 [+0.00, +0.00] on 10 traces; with the raw trace 1.00 [1.00, 1.00] (rule: the "
        "masked difference's CI must lie above 0)"]


def test_a_rejected_trace_that_lifts_less_than_the_accepted_one_is_read_on_the_masked_traces():
    traces = [_trace(f"i{n}", "pos") for n in range(12)]
    q = quality_metrics(traces, _done(traces, ["pos"] * 12, ["neg"] * 12, ["pos"] * 12, masked=["pos"] * 12,
                                      masked_rejected=["neg"] * 12), ["neg", "pos"], reader="r", n_boot=200, seed=0)
    r = q["overall"]["rejected"]
    assert r["with_trace_minus_rejected_trace"]["diff"] == 0  # raw: both state "pos"
    assert r["masked_trace_minus_masked_rejected_trace"]["diff"] == 1 and r["accepted_beats_rejected"] is True


def test_leak_stats_count_traces_that_state_their_label_and_the_leaks_left_after_masking():
    vader = LabelSet.of(range(-4, 5), level="ordinal")
    traces = [dict(_trace("a", "-2"), rationale="Bad. Therefore, I label this as -2."),
              dict(_trace("b", "1"), rationale="A positive attribute, so it would be rated positively."),
              dict(_trace("c", "3"), rationale="It is a 3, strongly positive.")]
    attempts = [{"key": "a", "strategy": "blind", "attempt": 0, "accepted": False, "label": "-3",
                 "rationale": "Strong negative: -3 on the scale."},
                {"key": "b", "strategy": "blind", "attempt": 0, "accepted": False, "label": "0",
                 "rationale": "Neutral, but the human said 1."},
                {"key": "z", "strategy": "blind", "attempt": 0, "accepted": False, "label": "0",
                 "rationale": "not a checked example: 0"}]
    s = leak_stats(traces, attempts, vader)
    assert s["accepted"] == {"n": 3, "states_own_label": 2, "share_states_own_label": pytest.approx(2 / 3),
                             "states_human_label": 2, "share_states_human_label": pytest.approx(2 / 3), "masked": 2}
    assert s["rejected"] == {"n": 2, "states_own_label": 1, "share_states_own_label": 0.5, "states_human_label": 1,
                             "share_states_human_label": 0.5, "masked": 2}
    assert s["residual_after_mask"] == 0 and s["placeholder"] == "[label]"
    q = quality_metrics(traces, _done(traces, ["-2", "1", "3"], ["0"] * 3), vader.labels, reader="r", n_boot=0,
                        seed=0, leaks=s)
    assert q["leaks"] == s and not q["warnings"]
    assert "leaks are left" in quality_metrics(traces, _done(traces, ["-2", "1", "3"], ["0"] * 3), vader.labels,
                                               reader="r", n_boot=0, seed=0,
                                               leaks={**s, "residual_after_mask": 1})["warnings"][0]


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
    traces[1]["rationale"] = "a::y reads as Negative"
    units = build_units(traces, attempts, LabelSet.of(["neg", "negative", "pos"]))
    got = [(u.condition, u.unit, u.trace, u.same_as) for u in units]
    assert got == [(MASKED, "a::x|blind|0", "r a::x", (WITH, "a::x|blind|0")), (WITH, "a::x|blind|0", "r a::x", None),
                   (WITHOUT, "a", None, None),
                   (MASKED, "a::y|blind|0", "a::y reads as [label]", None),
                   (WITH, "a::y|blind|0", "a::y reads as Negative", None),
                   (MASKED, "b|hinted|0", "r b", (WITH, "b|hinted|0")), (WITH, "b|hinted|0", "r b", None),
                   (WITHOUT, "b", None, None),
                   (MASKED_REJECTED, "b", "blind 1", (REJECTED, "b")), (REJECTED, "b", "blind 1", None)]
    assert units[3].trace_sha != units[4].trace_sha and units[2].trace_sha is None
    from thinktrace.run.stages.trace_quality import with_twins

    done = {(WITH, "a::x|blind|0"): {"condition": WITH, "label": "pos"}}
    twins = with_twins(done, units)  # an unchanged masked trace takes its raw answer, read once
    assert twins[(MASKED, "a::x|blind|0")] == {"condition": MASKED, "label": "pos", "same_as": [WITH, "a::x|blind|0"]}
    assert (MASKED, "a::y|blind|0") not in twins and (MASKED, "b|hinted|0") not in twins


# -- the stage in a compile run ----------------------------------------------------------------------------------

@pytest.mark.parametrize("level", ["nominal", "ordinal"])
def test_a_reader_that_copies_the_stated_label_is_lifted_by_the_raw_trace_only(tmp_path, monkeypatch, level):
    """The keyword generator's traces end on their label ("... suggest positive"); a reader that copies it returns
    the human label on every raw trace, but on the masked trace it is back to what it knows without one: the
    verdict (masked) is no and the corpus gets a warning."""
    monkeypatch.chdir(tmp_path)
    out, metrics = run(tmp_path, reader_spec("trace_reader", level))
    q = metrics["trace_quality"]
    traces = read_jsonl(out / "traces.jsonl")
    assert q["reader"] == "reader" and q["n_traces"] == len(traces) and q["overall"]["n"] == len(traces)
    neutral = sum(t["human"] == "neutral" for t in traces) / len(traces)
    o = q["overall"]
    assert o[WITH]["value"] == 1.0 and o[WITHOUT]["value"] == pytest.approx(neutral)
    assert o[MASKED]["value"] == pytest.approx(neutral) and o["masked_trace_minus_without_trace"]["diff"] == 0
    assert q["raw_moves_toward_human"] is True and q["moves_toward_human"] is False
    assert any(w.startswith("trace quality: the masked traces do not move the reader (reader)")
               for w in metrics["warnings"])
    leaks = q["leaks"]
    assert leaks["accepted"]["states_own_label"] == leaks["accepted"]["masked"] == len(traces)
    assert leaks["accepted"]["share_states_own_label"] == 1.0 and leaks["residual_after_mask"] == 0
    r = o["rejected"]  # the keyword generator's rejected traces state a wrong label
    assert r["n"] > 0 and r[REJECTED]["value"] == 0.0 and r[WITH]["value"] == 1.0
    assert leaks["rejected"]["n"] == r["n"] and leaks["rejected"]["states_own_label"] == r["n"]
    assert set(q["per_label"]) <= {"negative", "neutral", "positive"}
    assert q["per_label"]["neutral"][WITHOUT]["value"] == 1.0 and q["per_label"]["positive"][WITHOUT]["value"] == 0
    records = read_jsonl(out / "trace_quality.jsonl")
    assert {r["condition"] for r in records} == {MASKED, WITH, WITHOUT, MASKED_REJECTED, REJECTED}
    assert all(not r["error"] for r in records)
    assert metrics["calls"]["stages"]["trace_quality"]["settled"] == len(records)
    assert metrics["timing"]["trace_quality"] >= 0
    report = (out / "report.md").read_text()
    assert "## Trace quality" in report and "Rejected-trace subset" in report
    assert "> trace quality: the masked traces do not move the reader" in report
    assert f"{len(traces)} of {len(traces)} accepted traces state their own label (100.0%)" in report
    assert "label leaks left after masking: 0" in report


def test_a_reader_that_follows_the_reasoning_is_lifted_by_the_masked_trace(tmp_path, monkeypatch):
    """A reader that goes by the sentiment words a trace quotes: the masked trace leads it to the human label, so
    the verdict is yes; a rejected trace quotes the same item and lifts it as much, which the report says."""
    monkeypatch.chdir(tmp_path)
    out, metrics = run(tmp_path, reader_spec("trace_reasoner"))
    q = metrics["trace_quality"]
    o = q["overall"]
    assert o[MASKED]["value"] == 1.0 and o["masked_trace_minus_without_trace"]["diff"] > 0
    assert q["moves_toward_human"] is True and not metrics.get("warnings")
    r = o["rejected"]
    assert r["n"] > 0 and r[MASKED_REJECTED]["value"] == 1.0 and r["accepted_beats_rejected"] is False
    assert r["masked_trace_minus_masked_rejected_trace"]["diff"] == 0
    shown = [r for r in read_jsonl(out / "trace_quality.jsonl") if r["condition"] == MASKED]
    assert shown and all(r["trace_sha"] for r in shown)
    report = (out / "report.md").read_text()
    assert "a rejected trace lifts the reader about as much as an accepted one (the CI includes 0)" in report
    from thinktrace.report.sections.traces import trace_quality_finding

    finding = trace_quality_finding(q)  # the findings' paragraph (the toy run makes none of the findings' rows)
    text = "".join(x if isinstance(x, str) else x.text for x in finding.text)
    assert finding.style == "para" and text.startswith("Trace quality: with every statement of a label masked")
    assert ("the traces move the reader toward the human label. Accepted vs rejected (masked, "
            f"{r['n']} traces): a rejected trace lifts the reader about as much as an accepted one") in text
    assert f"{q['leaks']['accepted']['states_own_label']} of {q['n_traces']} accepted traces state their label" in text


def test_a_reader_that_ignores_the_trace_gets_the_corpus_a_warning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, metrics = run(tmp_path, reader_spec("trace_ignorer"))
    q = metrics["trace_quality"]
    assert q["overall"][WITH]["value"] == q["overall"][WITHOUT]["value"]
    assert q["overall"]["with_trace_minus_without_trace"]["diff"] == 0 and q["moves_toward_human"] is False
    assert q["overall"]["masked_trace_minus_without_trace"]["diff"] == 0 and q["raw_moves_toward_human"] is False
    assert any(w.startswith("trace quality: the masked traces do not move the reader (reader)")
               for w in metrics["warnings"])
    report, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "> trace quality: the masked traces do not move the reader" in report
    assert 'class="warn">trace quality: the masked traces do not move the reader' in page


def logged_run(tmp_path, monkeypatch):
    """A finished toy run whose reader logs each call: (run folder, its metrics, the call log, the journal path,
    the journal's records)."""
    monkeypatch.chdir(tmp_path)
    calls = tmp_path / "reads.log"
    monkeypatch.setenv("THINKTRACE_FAKE_READ_LOG", str(calls))
    out, first = run(tmp_path, reader_spec("trace_reader"))
    journal = out / "trace_quality.jsonl"
    return out, first, calls, journal, read_jsonl(journal)


def test_resume_repeats_no_settled_call(tmp_path, monkeypatch):
    """A run cut short (half the journal kept, one unit with only a retryable failure): the resume reads exactly
    the units without a settled record, and the numbers equal an uninterrupted run's."""
    out, first, calls, journal, records = logged_run(tmp_path, monkeypatch)
    assert len(calls.read_text().splitlines()) == len(records)
    kept, dropped = records[: len(records) // 2], records[len(records) // 2:]
    retry = {**dropped[0], "label": None, "error": "ServerError: injected 503", "error_kind": "transient"}
    journal.write_text("".join(json.dumps(r) + "\n" for r in kept + [retry]))
    calls.write_text("")
    assert main([str(write_spec(tmp_path, reader_spec("trace_reader"))), "--resume", str(out)]) == 0
    again = calls.read_text().splitlines()
    assert len(again) == len(dropped)
    assert sorted((line.split("\t")[0], line.split("\t")[1]) for line in again) == sorted(
        ("item" if r["condition"] == WITHOUT else "trace", next(t["item"] for t in read_jsonl(out / "traces.jsonl")
                                                              if t["item_id"] == r["item_id"])) for r in dropped)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trace_quality"] == first["trace_quality"]
    calls.write_text("")
    assert main([str(write_spec(tmp_path, reader_spec("trace_reader"))), "--resume", str(out)]) == 0
    assert calls.read_text() == ""  # all settled: not one call


def test_a_journal_from_before_masking_replays_and_only_the_masked_units_are_read(tmp_path, monkeypatch):
    """A run folder checked before the masked conditions existed (its journal: raw, without and rejected records,
    no trace hash): the resume reads the masked units only and gives an uninterrupted run's numbers. A masked
    answer read under another mask (its trace hash differs) is read again."""
    out, first, calls, journal, records = logged_run(tmp_path, monkeypatch)
    old = [{k: v for k, v in r.items() if k != "trace_sha"} for r in records
           if r["condition"] in (WITH, WITHOUT, REJECTED)]
    masked = [r for r in records if r["condition"] in (MASKED, MASKED_REJECTED)]
    assert old and masked and len(old) + len(masked) == len(records)
    journal.write_text("".join(json.dumps(r) + "\n" for r in old))
    calls.write_text("")
    assert main([str(write_spec(tmp_path, reader_spec("trace_reader"))), "--resume", str(out)]) == 0
    again = calls.read_text().splitlines()
    assert len(again) == len(masked) and all("[label]" in line.split("\t")[2] for line in again)
    assert json.loads((out / "metrics.json").read_text())["trace_quality"] == first["trace_quality"]
    stale = dict(read_jsonl(journal)[-1], trace_sha="0" * 12, label="positive")
    with journal.open("a") as fh:
        fh.write(json.dumps(stale) + "\n")
    calls.write_text("")
    assert main([str(write_spec(tmp_path, reader_spec("trace_reader"))), "--resume", str(out)]) == 0
    assert len(calls.read_text().splitlines()) == 1
    assert json.loads((out / "metrics.json").read_text())["trace_quality"] == first["trace_quality"]


def test_max_traces_caps_the_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, metrics = run(tmp_path, reader_spec("trace_reader", **{"trace_quality.max_traces": 2}))
    assert metrics["trace_quality"]["n_traces"] == 2


def test_the_plan_lists_the_stage_with_its_reader_and_artifacts(tmp_path, monkeypatch, capsys):
    from thinktrace.data import load_corpus
    from thinktrace.spec import load_spec
    from thinktrace.run.stages import plan_stages

    monkeypatch.chdir(tmp_path)
    loaded = load_spec(write_spec(tmp_path, reader_spec("trace_reader", **{"trace_quality.max_traces": 3})))
    plan = plan_stages(loaded.spec, load_corpus(loaded.spec.data, loaded.base_dir, seed=0))
    assert list(plan)[:2] == ["traces", "trace_quality"]
    tq = plan["trace_quality"]
    assert tq["reader"] == "reader" and tq["writes"] == ["trace_quality.jsonl"] and tq["traces_max"] == 3
    assert tq["lm_calls_max"] == 15  # per trace: masked, raw, without, masked rejected, raw rejected
    assert main([str(write_spec(tmp_path, reader_spec("trace_reader"))), "--dry-run"]) == 0
    assert "trace_quality" in capsys.readouterr().out and not (tmp_path / "runs").exists()


def test_by_default_the_check_runs_when_the_student_is_fine_tuned():
    from thinktrace.spec import Spec
    from thinktrace.run.stages import TraceQualityStage

    stage = TraceQualityStage()
    assert not stage.enabled(Spec.model_validate(toy_spec()))  # no fine-tuning: no student to read
    tuned = Spec.model_validate(toy_spec(**{"finetune.enabled": True}))
    assert stage.enabled(tuned)
    from thinktrace.run.roles import Roles

    assert Roles(tuned).reader_name() == "smollm2-135m"  # the untuned fine-tuning base
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
    from thinktrace.run.stages import plan_stages

    loaded = load_spec(write_spec(tmp_path, reader_spec("trace_reader")))
    corpus = load_corpus(loaded.spec.data, loaded.base_dir, seed=0)
    stages = plan_stages(loaded.spec, corpus)
    rows = {r["name"]: r["calls"] for r in estimate(loaded.spec, stages, corpus, loaded.guideline)}
    assert rows["reader"] == stages["trace_quality"]["lm_calls_max"] + stages["evaluate"]["lm_calls_max"] // 2


@pytest.mark.parametrize("diff, says", [
    ({"diff": 0.2, "ci": [0.05, 0.35]}, "an accepted trace lifts the reader more than a rejected one (the CI lies above 0)"),
    ({"diff": 0.06, "ci": [-0.01, 0.13]}, "a rejected trace lifts the reader about as much as an accepted one"),
    ({"diff": -0.2, "ci": [-0.35, -0.05]}, "a rejected trace lifts the reader more than an accepted one"),
    ({"diff": 0.0, "ci": [None, None]}, "a rejected trace lifts the reader as much as an accepted one or more (no CI"),
    (None, None),
])
def test_accepted_vs_rejected_is_read_from_the_masked_difference_ci(diff, says):
    from thinktrace.report.sections.traces import accepted_vs_rejected

    got = accepted_vs_rejected(diff)
    assert got == says if says is None else got.startswith(says)


def test_a_run_checked_before_masking_says_its_verdict_reads_the_raw_trace():
    """metrics.json of a run made before the masked conditions (no masked keys): the report renders, warns that
    the raw trace can be copied, and the findings' paragraph draws no conclusion from it."""
    from thinktrace.report.sections.traces import trace_quality_finding

    old = {"reader": "r", "overall": {"n": 5, "with_trace": {"value": 0.8, "ci": [0.4, 1.0]},
                                      "without_trace": {"value": 0.2, "ci": [0.0, 0.6]},
                                      "with_trace_minus_without_trace": {"diff": 0.6, "ci": [0.2, 1.0]},
                                      "moves_toward_human": True}}
    finding = trace_quality_finding(old)
    text = "".join(str(x) for x in finding.text)
    assert finding.style == "warn" and "label statements not masked: a reader can copy a stated label" in text
    assert trace_quality_finding({"overall": {"n": 0}}) is None and trace_quality_finding(None) is None
