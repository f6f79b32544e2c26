"""Cut answers never become traces by default (`sampling.accept_cut: false`): an attempt whose answer was cut by
max_tokens (finish reason "length"), or whose label a local model had to write under the grammar after the answer
stopped short of it (label source "choice"), is journalled with its finish reason, counted, and not accepted, on the
blind and the hinted path; traces keep `label_source` and `finish_reason`; an old journal replayed derives acceptance
again (a "choice" attempt of an older version is cut)."""

from __future__ import annotations

import re

import dspy
import pytest
from support.fakes import fake_lm, seed_of

from thinktrace.prompt_formats import PlainAdapter
from thinktrace.labels import LabelSet
from thinktrace.lm.grammar import GRAMMAR_KEY, _constrainable, mark_constrainable
from thinktrace.lm.scripted import text_of
from thinktrace.loader import load_object
from thinktrace.records import Attempt, Trace, dump, record_cut
from thinktrace.rundir import JsonlLog
from thinktrace.teleprompt import RejectionSampling, accepted_traces
from thinktrace.traces import acceptance_stats

LABELS = LabelSet.of(["negative", "neutral", "positive"])
Rater = load_object("programs/rater.py:Rater", [], "programs.rater")
TraceInferrer = load_object("programs/trace.py:TraceInferrer", [], "programs.infer")
GUIDE = "Rate the sentiment of the text."


def examples(n=3):
    return [dspy.Example(key=f"i{i}", item_id=f"i{i}", item=f"text number {i}", label=LABELS.labels[i % 3],
                         human_labels=[LABELS.labels[i % 3]]).with_inputs("item") for i in range(n)]


def truth(item: str) -> str:
    return LABELS.labels[int(item.split()[-1]) % 3]


def is_choice(request) -> bool:
    """The completion of a cut answer under the label-set grammar (thinktrace.prompt_formats.choose_field)."""
    meta = (request.config.extensions or {}).get("metadata") or {}
    return str(meta.get(GRAMMAR_KEY, "")).startswith('root ::= " "?')


@pytest.fixture
def grammar_lm():
    """A fake LM that takes a grammar (like llama.cpp), so a cut answer's label is written under it."""
    made = []

    def make(rule):
        lm, engine = fake_lm(rule, name="cutfake")
        mark_constrainable(lm.model)
        made.append(lm.model)
        return lm, engine
    yield make
    for model in made:
        _constrainable.discard(model)


def cut_until(n_cut: int):
    """Blind answers: the first `n_cut` attempts (seed order is per attempt: the attempt index is read from the
    call count per item) are cut inside the rationale; the grammar then writes the right label. Later attempts are
    whole and right."""
    seen: dict[str, int] = {}

    def rule(inputs, request):
        item = request_item(request)
        if is_choice(request):
            return truth(item)
        seen[item] = seen.get(item, 0) + 1
        if seen[item] <= n_cut:
            return f"Rationale: the text {item} reads as clearly", "length"  # the plain format, cut
        return {"rationale": f"the text {item} reads as {truth(item)}", "label": truth(item)}
    return rule


def request_item(request) -> str:
    """The item of a request ("text number N"), wherever the adapter put it."""
    return re.search(r"text number \d+", "\n".join(text_of(m.text) for m in request.messages)).group(0)


def run(lm, exs, journal=(), log=None, **kw):
    """Rejection sampling in the plain prompt format (the spec's default; one LM call per answer)."""
    tele = RejectionSampling(LABELS, generator=lm, progress=False, num_threads=1, attempts_log=log,
                             adapter=PlainAdapter(), **kw)
    tele.compile(Rater(GUIDE, LABELS), trainset=exs, teacher=TraceInferrer(GUIDE, LABELS), journal=journal)
    return tele


def test_a_cut_blind_attempt_whose_forced_label_matches_is_not_accepted(grammar_lm):
    lm, _ = grammar_lm(cut_until(1))
    exs = examples(3)
    tele = run(lm, exs, k=3)
    first = [r for r in tele.attempts if r["attempt"] == 0]
    assert len(first) == 3
    for r in first:  # cut, label written under the grammar, right, and not a trace
        assert r["finish_reason"] == "length" and r["label_source"] == "choice" and r["label"] == r["human"]
        assert r["label_match"] is True and r["accepted"] is False and record_cut(r)
    assert all(r["accepted"] and r["finish_reason"] == "stop" and r["label_source"] == "output"
               for r in tele.attempts if r["attempt"] == 1)
    traces = accepted_traces(tele.attempts, exs)
    assert [t["attempt"] for t in traces] == [1, 1, 1]
    assert all(t["label_source"] == "output" and t["finish_reason"] == "stop" for t in traces)
    stats = acceptance_stats(tele.attempts, exs)
    assert stats["cut"] == {"attempts": 3, "accepted": 0, "label_matched_rejected": 3, "label_source_choice": 3}
    assert stats["per_strategy"]["blind"]["cut"]["attempts"] == 3
    for t in traces:
        assert dump(Trace, t)["finish_reason"] == "stop"


def test_accept_cut_true_keeps_the_cut_trace_and_says_so(grammar_lm):
    lm, _ = grammar_lm(cut_until(1))
    exs = examples(3)
    tele = run(lm, exs, k=3, accept_cut=True)
    assert len(tele.attempts) == 3 and all(r["accepted"] for r in tele.attempts)
    traces = accepted_traces(tele.attempts, exs)
    assert all(t["label_source"] == "choice" and t["finish_reason"] == "length" for t in traces)
    stats = acceptance_stats(tele.attempts, exs)
    assert stats["cut"]["attempts"] == stats["cut"]["accepted"] == 3
    assert stats["cut"]["label_matched_rejected"] == 0


def test_a_cut_answer_that_still_parsed_its_label_is_cut():
    """finish reason "length" with both fields parsed (e.g. the label came first): the rationale is cut."""
    lm, _ = fake_lm(lambda inputs, request: ({"rationale": "so it is", "label": truth(inputs["item"])}, "length"))
    tele = run(lm, examples(2), k=2)
    assert all(r["label_source"] == "output" and r["finish_reason"] == "length" for r in tele.attempts)
    assert not any(r["accepted"] for r in tele.attempts) and len(tele.attempts) == 4


def test_a_cut_hinted_rationale_is_not_accepted_even_when_the_check_agrees():
    def rule(inputs, request):
        if "label" in inputs:  # InferRationale: cut on even seeds
            if seed_of(request) % 2 == 0:
                return {"rationale": f"it reads {inputs['label']}"}, "length"
            return {"rationale": f"it reads {inputs['label']}"}
        if "rationale" in inputs:  # the check reads the label off the rationale
            return {"label": inputs["rationale"].split()[-1]}
        return {"rationale": "blind", "label": "nonsense"}
    lm, _ = fake_lm(rule)
    exs = examples(6)
    tele = run(lm, exs, k=6, strategy="hinted")
    hinted = [r for r in tele.attempts if r["strategy"] == "hinted"]
    assert hinted and all(r["label"] == r["human"] and r["label_source"] == "output" for r in hinted)
    for r in hinted:
        assert r["finish_reason"] == ("length" if r["seed"] % 2 == 0 else "stop")
        assert r["accepted"] == (r["seed"] % 2 == 1)
    stats = acceptance_stats(tele.attempts, exs)
    n_cut = sum(r["seed"] % 2 == 0 for r in hinted)
    assert n_cut and stats["per_strategy"]["hinted"]["cut"]["label_matched_rejected"] == n_cut


def test_an_old_journal_is_settled_again_a_choice_attempt_is_cut(tmp_path):
    """Attempts written before finish reasons were journalled: a label written under the grammar ("choice") was a
    cut, so such an attempt stored as accepted is not a trace on replay; the example is sampled further. An old
    accepted "output" attempt stays accepted, with no new call."""
    exs = examples(2)
    path = tmp_path / "attempts.jsonl"
    old = [{"key": "i0", "item_id": "i0", "annotator": None, "human": "negative", "strategy": "blind", "attempt": 0,
            "seed": 1, "rationale": "the text is clearly", "label": "negative", "label_source": "choice",
            "raw_label": None, "raw": "Rationale: the text is clearly", "error": None, "accepted": True,
            "tokens": {"prompt": 1, "completion": 1}, "latency_s": 0.1},
           {"key": "i1", "item_id": "i1", "annotator": None, "human": "neutral", "strategy": "blind", "attempt": 0,
            "seed": 2, "rationale": "plain", "label": "neutral", "label_source": "output", "raw_label": "neutral",
            "raw": None, "error": None, "accepted": True, "tokens": {"prompt": 1, "completion": 1},
            "latency_s": 0.1}]
    path.write_text("".join(__import__("json").dumps(r) + "\n" for r in old))  # no schema_version: version 1
    log = JsonlLog(path, model=Attempt)
    assert log.read()[0]["finish_reason"] is None  # an old record reads, without a finish reason
    calls = []
    lm, _ = fake_lm(lambda inputs, request: calls.append(inputs["item"]) or
                    {"rationale": "whole", "label": truth(inputs["item"])})
    tele = run(lm, exs, journal=log.read(), log=log, k=3)
    assert calls == ["text number 0"]  # only the example whose old trace was cut is sampled again
    by = {(r["key"], r["attempt"]): r for r in tele.attempts}
    assert by[("i0", 0)]["accepted"] is False and by[("i0", 1)]["accepted"] is True
    assert by[("i1", 0)]["accepted"] is True
    assert [(t["key"], t["attempt"]) for t in accepted_traces(tele.attempts, exs)] == [("i0", 1), ("i1", 0)]
    # the same journal under accept_cut keeps the old cut trace and makes no call
    calls.clear()
    tele = run(lm, exs, journal=JsonlLog(path, model=Attempt).read()[:2], k=3, accept_cut=True)
    assert calls == [] and all(r["accepted"] for r in tele.attempts)


def test_old_traces_files_still_read():
    old = {"key": "a", "item_id": "a", "item": "x", "human": "neutral", "label": "neutral", "rationale": "r",
           "strategy": "blind", "attempt": 0}
    row = dump(Trace, old)
    assert row["label_source"] is None and row["finish_reason"] is None


def test_a_run_folder_from_before_accept_cut_resumes_with_the_old_rule(tmp_path, monkeypatch, capsys):
    """Before `sampling.accept_cut` a cut answer whose label matched was a trace: a run folder made then (its
    spec.resolved.yaml lacks the field) resumes with accept_cut true, says so, and its report counts the cut traces
    it keeps; a new run takes the default, false."""
    import json

    import yaml
    from support.specs import toy_spec, write_spec

    from thinktrace.compile import main

    monkeypatch.chdir(tmp_path)
    path = write_spec(tmp_path, toy_spec(**{"evaluate.bootstrap": 0}))
    out = tmp_path / "run"
    assert main([str(path), "--out", str(out)]) == 0
    traces = json.loads((out / "metrics.json").read_text())["traces"]
    assert traces["accept_cut"] is False and traces["cut"]["attempts"] == 0
    assert "cut answers (max_tokens) | 0 attempts cut" in (out / "report.md").read_text()
    resolved = yaml.safe_load((out / "spec.resolved.yaml").read_text())
    del resolved["sampling"]["accept_cut"]  # as written by a version without the field
    (out / "spec.resolved.yaml").write_text(yaml.safe_dump(resolved))
    capsys.readouterr()
    assert main([str(path), "--resume", str(out)]) == 0
    assert "sampling.accept_cut: True" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["traces"]["accept_cut"] is True
    assert main([str(path), "--resume", str(out), "--set", "sampling.accept_cut=false"]) == 2  # would change it
