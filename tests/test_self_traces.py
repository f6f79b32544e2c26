"""The student's own traces (`sampling.self_traces`, thinktrace.self_traces): a second rejection-sampling run with
the student as generator, journalled and resumable; the teacher's and the student's traces on the examples both
explained, as many rows each; the adapters and paired comparisons they add; plan and run naming the same variants.
The teacher and the student are fake engines; fine-tuning runs a step per adapter on a tiny random checkpoint."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import pytest
from support import read_jsonl
from support.tiny_model import children_in_process
from support.specs import FAKE_ENGINES, toy_spec, write_spec

from thinktrace.compile import main

FAKES = FAKE_ENGINES



def self_spec(tiny, **overrides) -> dict:
    """Teacher: the keyword rater (right on a sample whose seed is divisible by 3); student: weak_student (by 5).
    keep 2, so an example can have more accepted traces from one than from the other."""
    return toy_spec(**{
        "models.generator": {"name": "teacher", "provider": "python", "model": f"{FAKES}:keyword_rater",
                             "cache": False},
        "models.raters": [{"name": "student", "provider": "python", "model": f"{FAKES}:weak_student",
                           "cache": False}],
        "sampling.k": 4, "sampling.keep": 2, "sampling.self_traces": True, "sampling.self_generator": "student",
        "trace_quality.enabled": False, "evaluate.bootstrap": 20, "evaluate.max_items": 5,
        "finetune": {"enabled": True, "base": str(tiny), "max_steps": 1, "save_steps": 1, "batch_size": 4,
                     "max_length": 480, "num_threads": 1},
        **overrides})


@pytest.fixture(scope="module")
def clean(tiny_model_dir, tmp_path_factory):
    """One uninterrupted run, and its plan."""
    from thinktrace.data import load_corpus
    from thinktrace.spec import load_spec
    from thinktrace.run.stages import plan_stages

    work = tmp_path_factory.mktemp("self-clean")
    path = write_spec(work, self_spec(tiny_model_dir))
    out = work / "run"
    with children_in_process():  # fine-tuning in this process: the same adapters without a child's imports
        assert main([str(path), "--out", str(out)]) == 0
    loaded = load_spec(path)
    plan = plan_stages(loaded.spec, load_corpus(loaded.spec.data, loaded.base_dir, loaded.spec.seed))
    return out, plan, json.loads((out / "metrics.json").read_text())


def test_self_traces_are_the_students_own_sampled_like_the_teachers(clean):
    from thinktrace.teleprompt import attempt_seed

    out, plan, metrics = clean
    teacher = read_jsonl(out / "traces.jsonl")
    attempts = read_jsonl(out / "self" / "attempts.jsonl")
    own = read_jsonl(out / "self" / "traces.jsonl")
    explained = {t["key"] for t in teacher}
    assert attempts and {a["key"] for a in attempts} == explained  # only what the teacher explained is sampled
    for a in attempts:  # the teacher's seed scheme, the student's words, the teacher's acceptance rule
        assert a["seed"] == attempt_seed(0, a["key"], a["strategy"], a["attempt"])
        assert a["rationale"].startswith("the student reads")
        assert a["accepted"] == (a["label"] == a["human"])
    per_key = Counter(a["key"] for a in attempts)
    accepted = Counter(a["key"] for a in attempts if a["accepted"])
    assert all(accepted[k] == 2 or per_key[k] == 4 for k in per_key)  # keep 2 of at most k 4
    assert sorted(t["rationale"] for t in own) == sorted(a["rationale"] for a in attempts if a["accepted"])
    s = metrics["self_traces"]
    assert s["generator"] == "student" and s["examples"] == len(explained) and s["explained"] == len(accepted)
    assert 0 < s["explained"] < len(explained)  # the student explains some of the teacher's examples, not all
    assert plan["self_traces"]["generator"] == "student" and plan["self_traces"]["lm_calls_max"] == 20 * 4
    assert metrics["calls"]["stages"]["self_traces"]["settled"] == len(attempts)


def test_the_pair_trains_on_the_common_examples_with_as_many_rows(clean):
    out, _, metrics = clean
    teacher = Counter(t["key"] for t in read_jsonl(out / "traces.jsonl"))
    own = Counter(t["key"] for t in read_jsonl(out / "self" / "traces.jsonl"))
    t_rows, s_rows = read_jsonl(out / "self" / "sft_teacher.jsonl"), read_jsonl(out / "self" / "sft.jsonl")
    assert len(t_rows) == len(s_rows) > 0
    assert [r["key"] for r in t_rows] == [r["key"] for r in s_rows]  # the same examples, in the same order
    common = set(teacher) & set(own)
    assert Counter(r["key"] for r in s_rows) == {k: min(teacher[k], own[k]) for k in common}
    assert any(teacher[k] != own[k] for k in common)  # this data exercises the "as many rows" cut
    assert all("the student reads" in r["messages"][-1]["content"] for r in s_rows)
    assert all("suggest" in r["messages"][-1]["content"] for r in t_rows)  # the teacher's words
    ft = metrics["finetune"]
    base = next(v["name"] for v in metrics["variants"] if v["kind"] == "trace-sft").split("+")[0]
    on = {kind: ft[kind]["trained_on"] for kind in ("trace-sft", "label-sft", "trace-sft-common", "self-trace-sft")}
    assert on["trace-sft"]["rows"] == sum(teacher.values()) == on["label-sft"]["rows"]  # trace-sft keeps them all
    assert on["trace-sft-common"]["rows"] == on["self-trace-sft"]["rows"] == len(s_rows)
    n_common = metrics["self_traces"]["common"]["common_examples"]
    assert on["trace-sft-common"]["common_examples"] == len(common) == n_common
    assert "teacher" in on["trace-sft-common"]["source"] and "own" in on["self-trace-sft"]["source"]
    assert json.loads((out / "finetune" / "self-trace-sft" / "job.json").read_text())["rows"] == "self/sft.jsonl"
    report = (out / "report.md").read_text()
    assert f"Common examples (both explained): {len(common)}" in report
    assert "the student's own accepted traces" in report and "| trained on |" in report
    assert base and all(ft[k]["rows"] <= on[k]["rows"] for k in on)


def test_plan_and_run_name_the_same_variants_and_the_comparisons_are_paired(clean):
    out, plan, metrics = clean
    ran = [v["name"] for v in metrics["variants"]]
    assert sorted(plan["evaluate"]["variants"]) == sorted(ran)
    assert plan["finetune"]["adapters"] == ["trace-sft", "label-sft", "shuffled-trace-sft", "trace-sft-common",
                                            "self-trace-sft"]
    base = next(v["rater"] for v in metrics["variants"] if v["kind"] == "self-trace-sft")
    pairs = {(c["a"], c["b"]) for c in metrics["splits"]["test"]["comparisons"]}
    expected = {(f"{base}+self-trace-sft", f"{base}+trace-sft-common"),  # teacher − self, the data held fixed
                (f"{base}+label-sft", f"{base}+trace-sft"),  # traces − labels only
                (f"{base}+shuffled-trace-sft", f"{base}+trace-sft"),  # traces − shuffled traces, the same rows
                (base, f"{base}+trace-sft"), (base, f"{base}+self-trace-sft"), (base, f"{base}+trace-sft-common")}
    assert expected <= pairs
    for artifact in ("self/attempts.jsonl", "self/traces.jsonl", "self/sft.jsonl", "self/sft_teacher.jsonl"):
        assert artifact in plan["self_traces"]["writes"] and (out / artifact).is_file()


def test_the_shuffled_control_trains_on_trace_sfts_rows_with_each_rationale_on_another_item(clean):
    """`shuffled-trace-sft` (finetune.ablation_shuffled, on by default): sft_shuffled.jsonl holds trace-sft's rows,
    same items and answer labels in the same order, the rationales moved within each label; the result says how
    many moved, and the report says it too."""
    from thinktrace.traces import shuffled_rationales

    out, plan, metrics = clean
    traces = read_jsonl(out / "traces.jsonl")
    rows, shuffled = read_jsonl(out / "sft.jsonl"), read_jsonl(out / "sft_shuffled.jsonl")
    assert [(r["key"], r["label"]) for r in shuffled] == [(r["key"], r["label"]) for r in rows]
    assert [r["messages"][:-1] for r in shuffled] == [r["messages"][:-1] for r in rows]  # the same prompts
    expected = shuffled_rationales(traces, 0)  # the spec's seed
    moved = sum(t["rationale_moved"] for t in expected)
    assert moved and [r["rationale_item_id"] for r in shuffled] == [t["rationale_item_id"] for t in expected]
    index = {(t["key"], t["attempt"]): n for n, t in enumerate(traces)}
    for row, t in zip(shuffled, expected):  # each answer is trace-sft's answer of the trace it came from
        source = rows[index[(t["rationale_key"], t["rationale_attempt"])]]
        assert row["messages"][-1] == source["messages"][-1]
        assert (row["messages"][-1] != rows[index[(t["key"], t["attempt"])]]["messages"][-1]) == t["rationale_moved"]
    info = metrics["finetune"]["shuffled-trace-sft"]["trained_on"]
    assert info["rows"] == len(rows) and info["rationales_moved"] == moved
    assert info["rationales_kept"] == len(rows) - moved
    assert "sft_shuffled.jsonl" in plan["finetune"]["writes"]
    assert "shuffled-trace-sft" in {v["kind"] for v in metrics["variants"]}
    assert f"{info['rationales_moved']} rationales moved" in (out / "report.md").read_text()


def test_an_outage_of_the_student_stops_the_stage_and_resume_finishes_it_without_repeats(
        clean, tiny_model_dir, tmp_path, monkeypatch, in_process_children):
    clean_out, _, _ = clean
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("THINKTRACE_FAKE_CALL_LOG", str(calls))
    monkeypatch.setenv("THINKTRACE_FAKE_STUDENT_DOWN", "1")
    path = write_spec(tmp_path, self_spec(tiny_model_dir, calls={"retries": 0, "max_error_rate": 1.0}))
    out = tmp_path / "run"
    assert main([str(path), "--out", str(out)]) == 3  # incomplete: resume it
    first = read_jsonl(out / "self" / "attempts.jsonl")
    from thinktrace.journal import retryable

    assert any(retryable(a) for a in first) and any(a["accepted"] for a in first)
    assert not (out / "finetune").exists()  # stopped before fine-tuning
    monkeypatch.delenv("THINKTRACE_FAKE_STUDENT_DOWN")
    assert main([str(path), "--resume", str(out)]) == 0
    for name in ("self/traces.jsonl", "self/sft.jsonl", "self/sft_teacher.jsonl"):
        assert (out / name).read_text() == (clean_out / name).read_text(), name
    sampled = [line for line in calls.read_text().splitlines() if line.startswith("student") and
               line.split("\t")[2] != "0.0"]
    assert len(sampled) == len(set(sampled))  # no settled attempt was made twice


def test_common_traces_takes_as_many_of_each_examples_traces():
    from thinktrace.run.stages.self_traces import common_traces

    t = lambda key, n: {"key": key, "item_id": key.split("::")[0], "rationale": f"{key}-{n}"}  # noqa: E731
    teacher = [t("a", 1), t("a", 2), t("b", 1), t("c", 1)]
    own = [t("b", 1), t("b", 2), t("a", 1), t("d", 1)]
    chosen_teacher, chosen_own = common_traces(teacher, own)
    assert [r["rationale"] for r in chosen_teacher] == ["a-1", "b-1"]
    assert [r["rationale"] for r in chosen_own] == ["a-1", "b-1"]
    assert common_traces(teacher, []) == ([], [])


def test_no_common_example_trains_no_pair(tmp_path):
    from thinktrace.run.stages.self_traces import SELF_ROWS, TEACHER_ROWS, common_jobs

    (tmp_path / "self").mkdir()
    row = {"messages": [], "key": "a", "item_id": "a", "label": "x"}
    (tmp_path / TEACHER_ROWS).write_text("")
    (tmp_path / SELF_ROWS).write_text("")
    p = SimpleNamespace(rundir=SimpleNamespace(file=lambda name: tmp_path / name))
    assert common_jobs(p) == {}
    for name in (TEACHER_ROWS, SELF_ROWS):
        (tmp_path / name).write_text(json.dumps(row) + "\n")
    jobs = common_jobs(p)
    assert set(jobs) == {"trace-sft-common", "self-trace-sft"}
    assert jobs["self-trace-sft"][0] == SELF_ROWS and jobs["self-trace-sft"][2]["common_examples"] == 1


@pytest.mark.parametrize("override, field, says", [
    ({"sampling.self_traces": True}, "sampling.self_traces", "finetune.enabled"),
    ({"sampling.self_generator": "kw"}, "sampling.self_generator", "self_traces: true"),
    ({"sampling.self_traces": True, "finetune.enabled": True, "sampling.self_generator": "nobody"},
     "sampling.self_generator", "one of: kw"),
    ({"sampling.self_traces": True, "finetune.enabled": True, "sampling.self_generator": "kw"},
     "sampling.self_traces", "also the trace generator"),
    ({"sampling.self_traces": True, "finetune.enabled": True, "finetune.base": "smollm2-135m",
      "models.raters": [{"name": "small", "provider": "local", "model": "smollm2-135m"}]},
     "sampling.self_traces", "also the trace generator"),
])
def test_bad_self_traces_settings_name_the_field(tmp_path, override, field, says):
    from thinktrace.errors import SpecError
    from thinktrace.spec import load_spec

    with pytest.raises(SpecError) as err:
        load_spec(write_spec(tmp_path, toy_spec(**override)))
    assert field in str(err.value) and says in str(err.value) and "spec.yaml" in str(err.value)


def test_no_accepted_trace_skips_fine_tuning_with_a_warning_not_a_crash(tiny_model_dir, tmp_path, monkeypatch,
                                                                         in_process_children):
    """A generator that explains nothing (bad luck on a small sample, a weak teacher) must not cost the run: the
    fine-tuning stage says why it trained nothing, the rest is evaluated, exit 0."""
    import thinktrace.teleprompt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(thinktrace.teleprompt, "accepted_traces", lambda attempts, trainset: [])
    out = tmp_path / "run"
    spec = self_spec(tiny_model_dir, **{"sampling.self_traces": False, "sampling.self_generator": None,
                              "trace_quality.enabled": None})
    assert main([str(write_spec(tmp_path, spec)), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "no accepted trace" in metrics["finetune"]["skipped"]
    assert [v["name"] for v in metrics["variants"]] == ["student"]
    assert any(w.startswith("finetune skipped: no accepted trace") for w in metrics["warnings"])
    assert "Fine-tuning skipped: no accepted trace" in (out / "report.md").read_text()


def test_the_findings_table_answers_the_papers_first_question_from_the_runs_comparisons(clean):
    from thinktrace.report.sections.findings import rows
    from thinktrace.runview import RunView

    out, _, metrics = clean
    base = next(v["rater"] for v in metrics["variants"] if v["kind"] == "self-trace-sft")
    table = {r[0]: r for r in rows(RunView(out), "test")}
    assert {"traces vs labels alone (fine-tuned student)", "fine-tuned on traces vs untuned",
            "fine-tuned on labels vs untuned", "teacher's traces vs the student's own (same items, same rows)"} \
        <= set(table)
    assert table["teacher's traces vs the student's own (same items, same rows)"][1] == \
        f"{base}+trace-sft-common − {base}+self-trace-sft"
    assert "Does it work?" in (out / "report.md").read_text()
