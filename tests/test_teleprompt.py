import dspy
import pytest
from support.fakes import fake_lm, seed_of

from thinktrace.labels import LabelSet
from thinktrace.loader import load_object
from thinktrace.rundir import JsonlLog
from thinktrace.teleprompt import RejectionSampling, accepted_traces, judge_predictor
from thinktrace.traces import acceptance_stats, sft_rows

LABELS = LabelSet.of(["negative", "neutral", "positive"])
Rater = load_object("programs/rater.py:Rater", [], "programs.rater")
TraceInferrer = load_object("programs/trace.py:TraceInferrer", [], "programs.infer")
GUIDE = "Rate the sentiment of the text."


def examples(n=6, label_of=lambda i: LABELS.labels[i % 3]):
    return [dspy.Example(key=f"i{i}", item_id=f"i{i}", item=f"text number {i}", label=label_of(i),
                         human_labels=[label_of(i)]).with_inputs("item") for i in range(n)]


def truth(item: str) -> str:
    return LABELS.labels[int(item.split()[-1]) % 3]


def blind_rule(succeed_every: int):
    """The sampled label is right only when the attempt's seed is divisible by `succeed_every`."""
    def rule(inputs, request):
        right = seed_of(request) % succeed_every == 0
        label = truth(inputs["item"]) if right else "Positive." if truth(inputs["item"]) != "positive" else "neg"
        return {"rationale": f"thinking about {inputs['item']} (seed {seed_of(request)})", "label": label}
    return rule


def run(rule, exs, **kw):
    lm, engine = fake_lm(rule)
    tele = RejectionSampling(LABELS, generator=lm, progress=False, num_threads=2, **kw)
    compiled = tele.compile(Rater(GUIDE, LABELS), trainset=exs, teacher=TraceInferrer(GUIDE, LABELS))
    return tele, compiled, engine


def test_blind_accepts_only_matching_labels_and_stops_early():
    tele, compiled, engine = run(blind_rule(3), examples(), k=20, keep=1)
    by_key = {}
    for r in tele.attempts:
        by_key.setdefault(r["key"], []).append(r)
    for key, recs in by_key.items():
        assert [r["attempt"] for r in recs] == list(range(len(recs)))
        assert sum(r["accepted"] for r in recs) == 1 and recs[-1]["accepted"]  # stopped at the first success
        assert all(r["accepted"] == (r["seed"] % 3 == 0) for r in recs)
    traces = accepted_traces(tele.attempts, examples())
    assert len(traces) == 6 and all(t["label"] == t["human"] for t in traces)
    assert engine.calls == len(tele.attempts)
    assert len(judge_predictor(compiled).demos) == 4


def test_keep_and_unexplained_examples():
    never_right = lambda inputs, request: {"rationale": "x", "label": "neutral" if truth(inputs["item"]) != "neutral" else "negative"}
    tele, _, _ = run(never_right, examples(3), k=4, keep=2)
    assert len(tele.attempts) == 12 and not any(r["accepted"] for r in tele.attempts)
    stats = acceptance_stats(tele.attempts, examples(3))
    assert stats["explained"] == 0 and stats["unexplained"] == ["i0", "i1", "i2"]
    tele, _, _ = run(blind_rule(1), examples(3), k=4, keep=2)
    assert len(tele.attempts) == 6 and all(r["accepted"] for r in tele.attempts)


def test_hinted_needs_the_blind_check():
    def rule(inputs, request):
        if "label" in inputs:  # InferRationale: half the rationales argue for the wrong label
            good = seed_of(request) % 2 == 0
            return {"rationale": f"so it is {inputs['label'] if good else 'unclear'}"}
        if "rationale" in inputs:  # CheckRationale reads the label off the rationale
            said = inputs["rationale"].split()[-1]
            return {"label": said if said in LABELS else "neutral"}
        return {"rationale": "blind", "label": "nonsense"}  # blind never parses
    exs = examples(6)
    tele, _, _ = run(rule, exs, k=6, keep=1, strategy="blind_then_hinted")
    stats = acceptance_stats(tele.attempts, exs)
    assert stats["per_strategy"]["blind"]["accepted"] == 0
    for r in tele.attempts:
        if r["strategy"] == "hinted":
            assert r["accepted"] == (r["label"] == r["human"])
            assert r["accepted"] == (r["seed"] % 2 == 0 or r["human"] == "neutral")
    assert all(t["label"] == t["human"] for t in accepted_traces(tele.attempts, exs))


def test_errors_and_garbage_are_counted_not_fatal():
    def rule(inputs, request):
        s = seed_of(request) % 4
        if s == 0:
            raise RuntimeError("provider exploded")
        if s == 1:
            return "garbage without fields"
        return {"rationale": "ok", "label": truth(inputs["item"])}
    exs = examples(8)
    tele, _, _ = run(rule, exs, k=8, keep=1)
    stats = acceptance_stats(tele.attempts, exs)
    assert stats["failed"]["errors"] == sum(1 for r in tele.attempts if r["seed"] % 4 == 0)
    assert all(r["label"] == r["human"] for r in tele.attempts if r["accepted"])
    assert not any(r["accepted"] for r in tele.attempts if r["seed"] % 4 in (0, 1))


def test_tolerance_on_ordinal_scale():
    scale = LabelSet.of([1, 2, 3, 4, 5], "ordinal")
    exs = [dspy.Example(key="a", item_id="a", item="x 1", label="3", human_labels=["3"]).with_inputs("item")]
    lm, _ = fake_lm(lambda i, r: {"rationale": "r", "label": "4"})
    strict = RejectionSampling(scale, generator=lm, k=2, progress=False)
    loose = RejectionSampling(scale, generator=lm, k=2, tolerance=1, progress=False)
    for tele, expected in ((strict, False), (loose, True)):
        tele.compile(Rater(GUIDE, scale), trainset=exs, teacher=TraceInferrer(GUIDE, scale))
        assert tele.attempts[0]["accepted"] is expected
    with pytest.raises(ValueError):
        RejectionSampling(LABELS, generator=lm, tolerance=1)


def test_resume_replays_the_journal_without_new_calls(tmp_path):
    log = JsonlLog(tmp_path / "attempts.jsonl")
    exs = examples(5)
    lm, engine = fake_lm(blind_rule(4))
    first = RejectionSampling(LABELS, generator=lm, k=10, progress=False, attempts_log=log)
    first.compile(Rater(GUIDE, LABELS), trainset=exs[:3], teacher=TraceInferrer(GUIDE, LABELS))
    calls_first = engine.calls
    second = RejectionSampling(LABELS, generator=lm, k=10, progress=False, attempts_log=log)
    second.compile(Rater(GUIDE, LABELS), trainset=exs, teacher=TraceInferrer(GUIDE, LABELS), journal=log.read())
    new_keys = {r["key"] for r in log.read()[calls_first:]}
    assert new_keys == {"i3", "i4"}  # the three finished examples cost no new call
    assert engine.calls == len(log.read())
    assert [r["key"] for r in second.attempts if r["accepted"]] == [f"i{i}" for i in range(5)]


def test_sft_rows_match_inference_format():
    tele, _, _ = run(blind_rule(1), examples(2), k=1)
    traces = accepted_traces(tele.attempts, examples(2))
    sig = judge_predictor(Rater(GUIDE, LABELS)).signature
    rows = sft_rows(traces, sig)
    inference = dspy.ChatAdapter().format(sig, demos=[], inputs={"item": traces[0]["item"]})
    assert rows[0]["messages"][:-1] == inference
    assert "[[ ## rationale ## ]]" in rows[0]["messages"][-1]["content"]
    ablation = sft_rows(traces, sig, with_rationale=False)
    assert "rationale" not in ablation[0]["messages"][-1]["content"]
    assert "[[ ## label ## ]]" in ablation[0]["messages"][-1]["content"]


@pytest.mark.parametrize("adapter", ["plain", "chat"])
def test_every_adapter_round_trips_through_the_teleprompter(adapter):
    from thinktrace.prompt_formats import make_prompt_format

    tele, compiled, _ = run(blind_rule(2), examples(4), k=6, adapter=make_prompt_format(adapter))
    assert all(r["label"] == r["human"] for r in tele.attempts if r["accepted"])
    assert sum(r["accepted"] for r in tele.attempts) == 4


def test_per_annotator_mode_gives_disagreeing_annotators_their_own_traces(tmp_path):
    """Two annotators disagree on an item: each (item, annotator label) is its own example and gets a trace whose
    label is that annotator's label."""
    from thinktrace.data import DataConfig, load_corpus
    from thinktrace.traces import trainset

    data = tmp_path / "d.csv"
    data.write_text("item_id,text,annotator_id,label\n"
                    "a,text number 0,ann1,negative\na,text number 0,ann2,positive\n"
                    "b,text number 1,ann1,neutral\nb,text number 1,ann2,neutral\n"
                    "c,text number 2,ann1,neutral\n")
    corpus = load_corpus(DataConfig(source=str(data), label_set=list(LABELS.labels),
                                    split={"train": 0.67, "dev": 0.0, "test": 0.33}), tmp_path, seed=0)
    assert {it.item_id for it in corpus.split("train")} == {"a", "b"}, "seeded split moved: pick other ids"
    exs = trainset(corpus, per_annotator=True)
    assert sorted(e.key for e in exs) == ["a::ann1", "a::ann2", "b::ann1", "b::ann2"]

    def rule(inputs, request):  # samples cycle through the labels, so every label is eventually proposed
        return {"rationale": f"seed {seed_of(request)}", "label": LABELS.labels[seed_of(request) % 3]}

    tele, _, _ = run(rule, exs, k=30, keep=1)
    traces = accepted_traces(tele.attempts, exs)
    by_key = {t["key"]: t for t in traces}
    assert by_key["a::ann1"]["label"] == "negative" and by_key["a::ann2"]["label"] == "positive"
    assert by_key["a::ann1"]["human_labels"] == ["negative", "positive"]
    assert all(t["label"] == t["human"] for t in traces)
