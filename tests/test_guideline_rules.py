"""Rules that generalise (contrasts, the rule check, label-section overlap) and selection that selects (paired
comparison against the original, dev's power, competitors and demos in one pool). Fake engines only."""

from __future__ import annotations

import json
import re
import threading

import pytest
from pydantic import ValidationError
from support.fakes import fake_lm
from test_guidelines import GUIDE, LABELS, PLAIN, Rater, items, rater_rule, traces, truth, user_text

from thinktrace.guidelines import GuidelinesConfig, plan_calls, refine_guideline
from thinktrace.guidelines.rule_check import RuleChecker, jaccard, section_overlap
from thinktrace.guidelines.selection import dev_size_needed, select
from thinktrace.labels import LabelSet
from thinktrace.lm.scripted import request_fields
from thinktrace.loader import load_object

GuidelineWriter = load_object("programs/guideline.py:GuidelineWriter", [], "guidelines")


CUES = {"negative": "hostile insulting", "neutral": "factual plain", "positive": "warm praising"}


class ScriptWriter:
    """Answers each writer stage with its own function of the call's inputs; records (stage, inputs)."""

    def __init__(self, map_=None, fix=None, separate=None, revise=None):
        self.map = map_ or (lambda inputs: f"- KEYWORD words of mood {inputs['label']}")
        self.fix = fix or (lambda inputs: "- a general KEYWORD condition about tone")
        self.sep = separate or (lambda inputs: f"- shows {CUES[inputs['label']]} wording")
        self.revise = revise or (lambda inputs: "- KEYWORD revised")
        self.calls: list[tuple[str, dict]] = []
        self.lock = threading.Lock()

    def __call__(self, inputs, request):
        _, outputs = request_fields(request)
        with self.lock:
            if "problem" in inputs:
                stage, answer = "fix", self.fix(inputs)
            elif "neighbour_rules" in inputs:
                stage, answer = "separate", self.sep(inputs)
            elif "traces" in inputs:
                stage, answer = "map", self.map(inputs)
                inputs = {**inputs, "user": user_text(request)}
            elif "errors" in inputs:
                stage, answer = "revise", self.revise(inputs)
            else:
                stage, answer = "combine", self.map(inputs)
            self.calls.append((stage, inputs))
        return {"decision_rules": answer}

    def stage(self, name):
        return [inputs for stage, inputs in self.calls if stage == name]


def write(writer, rows, labels=LABELS, **kw):
    import dspy

    lm, _ = fake_lm(writer, "writer")
    program = GuidelineWriter(labels, batch_size=8, **kw)
    with dspy.context(lm=lm, adapter=PLAIN):
        return program(guideline=GUIDE, traces=rows)


# -- contrasts ----------------------------------------------------------------------------------------------
def test_each_label_is_written_beside_its_neighbours_traces():
    writer = ScriptWriter()
    rows = traces({"negative": 3, "neutral": 3, "positive": 3})
    write(writer, rows, contrasts=2, check_rules=True)
    shown = {c["label"]: c["user"] for c in writer.stage("map")}
    # negative's only neighbour is neutral (label order); neutral sees both sides; 2 traces of each neighbour
    assert "Neighbouring label neutral" in shown["negative"] and "Neighbouring label positive" not in shown["negative"]
    assert "Neighbouring label negative" in shown["neutral"] and "Neighbouring label positive" in shown["neutral"]
    assert len(re.findall(r"- Item: train text", shown["neutral"])) == 4
    # the label's own traces stay numbered; the neighbours' are not read as the label's
    assert sorted(re.findall(r"\[\d+\] Item: train text (\d+)", shown["neutral"])) == ["3", "4", "5"]
    write(none := ScriptWriter(), rows, contrasts=0)
    assert all("Neighbouring label" not in c["user"] for c in none.stage("map"))


# -- the rule check -----------------------------------------------------------------------------------------
def test_checker_faults():
    labels = LabelSet.of(range(-4, 5), "ordinal")
    checker = RuleChecker(labels, "Rate the sentiment of a single word on a scale from -4 to +4, with 0 neutral.",
                          ["appallingly", ":)", "not", "the mayor said that the city will build a bridge"])
    assert checker.fault("- as 'appallingly' is used to describe bad things") == "quotes_item"
    assert checker.fault("- emoticons like :) show joy") == "quotes_item"
    assert checker.fault("- the mayor said that the city will spend") == "quotes_item"  # 6 words verbatim
    assert checker.fault("- not every word about joy is strong") is None  # a stopword item is not looked for
    assert checker.fault("- I rate this as -2 because it is sad") == "states_label"
    assert checker.fault("- the sentiment of a single word on a scale, neutral") == "restates_original"
    assert checker.fault("- words that express mild disapproval of a person") is None


def test_faulty_rules_are_rewritten_once_or_dropped_and_counted():
    rows = traces({"negative": 2, "neutral": 2, "positive": 2})

    def map_(inputs):  # every label: one clean rule, one quoting a train item, one stating a label
        return (f"- KEYWORD tone cue for {inputs['label']}\n- as 'train text 0' shows\n"
                f"- I rate such items as {inputs['label']}")
    fixes = iter(["- a general KEYWORD condition", "- still quotes train text 1"] * 10)
    writer = ScriptWriter(map_=map_, fix=lambda inputs: next(fixes))
    pred = write(writer, rows, check_rules=True)
    faults = pred.rule_faults
    assert faults["quotes_item"]["found"] == 3 and faults["states_label"]["found"] == 3
    assert sum(f["rewritten"] for f in faults.values()) == 3 and sum(f["dropped"] for f in faults.values()) == 3
    assert len(writer.stage("fix")) == 6  # one rewrite per faulty rule
    assert len(pred.dropped_rules) == 3 and {d["fault"] for d in pred.dropped_rules} <= {"quotes_item", "states_label"}
    for text in pred.rules.values():
        assert "train text" not in text and "I rate" not in text and "KEYWORD tone cue" in text
    assert pred.stats["check"]["calls"] == 6
    off = write(ScriptWriter(map_=map_), rows, check_rules=False)
    assert all("train text 0" in t for t in off.rules.values()) and not any(
        f["found"] for f in off.rule_faults.values())


# -- label-section overlap ----------------------------------------------------------------------------------
def test_overlapping_neighbour_sections_are_rewritten_apart():
    rows = traces({"negative": 2, "neutral": 2, "positive": 2})
    same = ScriptWriter(map_=lambda inputs: "- strong emotional words describing people and events")
    pred = write(same, rows, check_rules=True, overlap_threshold=0.5)
    assert [(o["a"], o["b"]) for o in pred.overlap] == [("negative", "neutral"), ("neutral", "positive")]
    first, second = pred.overlap
    assert first["before"] == 1.0 and first["after"] < 0.5 and first["rewritten"]
    # pairs are taken in label order, each measured when its turn comes: neutral was already rewritten apart
    assert second["before"] < 0.5 and not second["rewritten"]
    assert len(same.stage("separate")) == 2  # both sides of the first pair
    assert pred.rules["negative"] != pred.rules["neutral"] != pred.rules["positive"]
    # a rewrite that does not lower the overlap is not kept, and the pair is reported as it is
    stubborn = ScriptWriter(map_=lambda inputs: "- strong emotional words describing people and events",
                            separate=lambda inputs: "- strong emotional words describing people and events")
    pred = write(stubborn, rows, check_rules=True, overlap_threshold=0.5)
    assert all(o["before"] == o["after"] == 1.0 and not o["rewritten"] for o in pred.overlap)
    assert [f["stage"] for f in pred.fallbacks] == ["separate", "separate"]  # one note per pair
    # null threshold: reported, never rewritten
    quiet = ScriptWriter(map_=lambda inputs: "- strong emotional words describing people and events")
    pred = write(quiet, rows, check_rules=True, overlap_threshold=None)
    assert not quiet.stage("separate") and all(o["before"] == 1.0 for o in pred.overlap)


def test_overlap_is_the_jaccard_of_content_words():
    assert jaccard("mild joy words", "strong joy words") == pytest.approx(2 / 4)  # joy, words of 4 words
    assert jaccard("the joy of it", "a joy") == 1.0 and jaccard("", "the") is None  # stopwords do not count
    assert section_overlap({"a": "the cats", "c": "dogs", "b": "cats"}, ["a", "b", "c"]) == [
        {"a": "a", "b": "b", "jaccard": 1.0}, {"a": "b", "b": "c", "jaccard": 0.0}]


# -- selection ------------------------------------------------------------------------------------------------
def _labels(pattern: str, n: int) -> list[str]:
    """right on the items whose index passes `pattern` ("all", "even", "first<k>"), else wrong."""
    out = []
    for i in range(n):
        right = pattern == "all" or (pattern == "even" and i % 2 == 0) or (
            pattern.startswith("first") and i < int(pattern[5:]))
        out.append(truth(i) if right else LABELS.labels[(i + 1) % 3])
    return out


def test_the_winner_is_kept_only_when_dev_separates_it_from_the_original():
    n = 60
    human = [truth(i) for i in range(n)]
    labels = {"0-0": _labels("even", n), "1-0": _labels("all", n), "1-1": _labels("first31", n)}
    rows = [{"id": cid, "kind": "x", "mean": 0.0} for cid in labels]
    from thinktrace.agreement import rater_vs_human
    for r in rows:
        r["mean"] = rater_vs_human(human, labels[r["id"]], LABELS, n_boot=0)["alpha"]["value"]
    sel = select(rows, "0-0", lambda cid: {"r": labels[cid]}, human, LABELS, n_boot=200, seed=0)
    assert sel["winner"] == "1-0" and sel["chosen"] == "1-0" and sel["separated"] and not sel["kept_original"]
    assert sel["vs_original"]["ci"][0] > 0 and sel["power"]["n_needed"] >= 1
    # the same winner by a hair: dev cannot separate it, the original is kept and the reason says so
    labels["1-0"] = _labels("first31", n)
    labels["1-0"][1] = truth(1)  # one more right than the original's 30
    rows = [{"id": cid, "kind": "x", "mean": rater_vs_human(human, labels[cid], LABELS, n_boot=0)["alpha"]["value"]}
            for cid in ("0-0", "1-0")]
    sel = select(rows, "0-0", lambda cid: {"r": labels[cid]}, human, LABELS, n_boot=200, seed=0)
    assert sel["winner"] == "1-0" and sel["chosen"] == "0-0" and sel["kept_original"] and not sel["separated"]
    assert sel["vs_original"]["ci"][0] <= 0 <= sel["vs_original"]["ci"][1] and "cannot separate" in sel["reason"]


def test_dev_size_needed_from_the_paired_variance():
    # n (se (z_.975 + z_.8) / delta)^2 = 50 (0.1 * 2.8016 / 0.1)^2 = 392.4
    assert dev_size_needed(0.1, 50) == 393
    assert dev_size_needed(0.05, 50) == 99  # a quarter of the variance, a quarter of the items
    assert dev_size_needed(None, 50) is None and dev_size_needed(0.0, 50) is None


def refine(tmp_path, cfg, writer, **kw):
    wlm, _ = fake_lm(writer, "writer")
    raters = {f"r{k}": fake_lm(rater_rule, f"rater{k}")[0] for k in range(2)}
    args = dict(original=GUIDE, traces=traces({"negative": 3, "neutral": 3, "positive": 3}), writer_lm=wlm,
                raters=raters, rater_factory=lambda g: Rater(g, LABELS), dev_items=items(24), label_set=LABELS,
                adapter=PLAIN, seed=0, n_boot=100, log_dir=tmp_path / "guidelines", threads=2)
    args.update(kw)
    return refine_guideline(cfg, **args)


def test_demos_and_the_compiled_program_compete_on_dev(tmp_path):
    """demo_factory: the demos-only program (original text) and the compiled one (refined text) join the pool;
    rated by their own programs, never taken for a copy of the original's text."""
    def with_demos(g):  # the fake raters read demos in the prompt: a KEYWORD demo makes them right
        return Rater(g + "\nKEYWORD demo", LABELS)
    writer = ScriptWriter(map_=lambda inputs: f"- BADWORD cue {inputs['label']}")
    cfg = GuidelinesConfig(enabled=True, rounds=1, candidates=1, batch_size=4, overlap_threshold=None)
    result = refine(tmp_path, cfg, writer, demo_factory=with_demos)
    rows = {r["id"]: r for r in result["candidates"]}
    assert set(rows) == {"0-0", "1-0", "demos", "compiled"}
    assert rows["demos"]["kind"] == "demos-only" and rows["demos"]["same_as"] is None
    assert rows["demos"]["mean"] == pytest.approx(1.0) and 1.0 > rows["0-0"]["mean"] > rows["1-0"]["mean"]
    sel = result["selection"]
    assert sel["winner"] == "demos" and sel["chosen"] == "demos" and sel["separated"]
    assert result["refined_id"] == "1-0"  # the refined guideline is still the best written text
    assert sel["power"]["n_dev"] == 24 and sel["pool"] == ["0-0", "1-0", "demos", "compiled"]
    again = refine(tmp_path, cfg, ScriptWriter(), demo_factory=with_demos)  # resumed: read back, same selection
    assert again["selection"] == sel


def test_competitors_write_into_the_same_pool(tmp_path):
    from thinktrace.registry import guideline_optimizers

    def keyword(ref, round_, index, parent):
        return lambda rollout: (GUIDE + "\nKEYWORD from a competitor", {"kind": "kw", "writer_calls": 0,
                                                                        "fallbacks": []})
    guideline_optimizers.register("test-keyword", keyword, replace=True)
    try:
        writer = ScriptWriter(map_=lambda inputs: f"- BADWORD cue {inputs['label']}")
        cfg = GuidelinesConfig(enabled=True, rounds=1, candidates=1, batch_size=4, compete=["test-keyword"])
        result = refine(tmp_path, cfg, writer)
        ids = [r["id"] for r in result["candidates"]]
        assert ids == ["0-0", "1-0", "1-test-keyword0"]
        assert result["best_id"] == "1-test-keyword0" and result["selection"]["chosen"] == "1-test-keyword0"
        assert result["compete"] == ["test-keyword"]
        plan = plan_calls(cfg, {"negative": 3}, n_raters=2, n_dev=24)
        assert plan["rater_calls"] == 48 + 2 * 48
    finally:
        guideline_optimizers.unregister("test-keyword")
    with pytest.raises(ValidationError, match="main optimizer"):
        GuidelinesConfig(compete=["traces"])
    with pytest.raises(ValidationError, match="copro"):
        GuidelinesConfig(compete=["copro"])


def test_competitors_can_write_fewer_candidates_in_fewer_rounds(tmp_path):
    """compete_rounds / compete_candidates: gepa and mipro rate dev inside every candidate run, so a benchmark may
    let them write once; the loop and the plan agree on who writes what."""
    from thinktrace.registry import guideline_optimizers

    def keyword(ref, round_, index, parent):
        return lambda rollout: (GUIDE + f"\nKEYWORD from a competitor {round_}-{index}",
                                {"kind": "kw", "writer_calls": 0, "fallbacks": []})
    keyword.plan = lambda cfg, round_, sizes: {"writer_calls": 5, "rater_calls": 7}
    guideline_optimizers.register("test-keyword", keyword, replace=True)
    try:
        writer = ScriptWriter(map_=lambda inputs: f"- BADWORD cue {inputs['label']}")
        cfg = GuidelinesConfig(enabled=True, rounds=2, candidates=2, batch_size=4, compete=["test-keyword"],
                               compete_rounds=1, compete_candidates=1)
        result = refine(tmp_path, cfg, writer)
        ids = [r["id"] for r in result["candidates"]]
        assert ids == ["0-0", "1-0", "1-1", "1-test-keyword0", "2-0", "2-1"]
        plan = plan_calls(cfg, {"negative": 3}, n_raters=2, n_dev=24)
        assert [r["rater_calls"] for r in plan["rounds"]] == [2 * 48 + (48 + 7), 2 * 48]
        assert [r["writer_calls"] for r in plan["rounds"]][0] == 2 * 1 + 5
        full = plan_calls(cfg.model_copy(update={"compete_rounds": None, "compete_candidates": None}),
                          {"negative": 3}, n_raters=2, n_dev=24)
        assert [r["rater_calls"] for r in full["rounds"]] == [2 * 48 + 2 * (48 + 7)] * 2
    finally:
        guideline_optimizers.unregister("test-keyword")


def test_refinement_reports_rule_faults_and_overlap(tmp_path):
    writer = ScriptWriter(map_=lambda inputs: f"- KEYWORD cue {inputs['label']}\n- see train text 0")
    cfg = GuidelinesConfig(enabled=True, rounds=1, candidates=1, batch_size=4)
    result = refine(tmp_path, cfg, writer)
    assert result["rule_faults"]["quotes_item"] == {"found": 3, "rewritten": 3, "dropped": 0}
    assert result["rules_dropped"] == 0 and result["overlap_threshold"] == 0.5
    assert [(o["a"], o["b"]) for o in result["overlap"]] == [("negative", "neutral"), ("neutral", "positive")]
    meta = json.loads((tmp_path / "guidelines" / "candidates" / "1-0.json").read_text())
    assert meta["rule_faults"] == result["rule_faults"]
    summary = json.loads((tmp_path / "guidelines" / "summary.json").read_text())
    assert summary["selection"]["chosen"] == result["selection"]["chosen"]


def test_report_marks_the_selection_and_states_when_dev_could_not_separate():
    from thinktrace.report.sections.guideline import _candidates, _selection

    g = {"refined_id": "1-0", "candidates": [{"id": "0-0", "kind": "original", "mean": 0.5, "alpha": {"r": 0.5}},
                                             {"id": "1-0", "kind": "traces", "mean": 0.6, "alpha": {"r": 0.6}}],
         "selection": {"pool": ["0-0", "1-0"], "winner": "1-0", "chosen": "0-0", "chosen_kind": "original",
                       "reason": "dev cannot separate it", "vs_original": {"diff": 0.1, "ci": [-0.1, 0.3], "n": 20,
                                                                           "b_id": "1-0"},
                       "power": {"delta": 0.1, "power": 0.8, "n_dev": 20, "se": 0.1, "n_needed": 157,
                                 "enough": False}}}
    table = _candidates(g)[0]
    assert [str(cell) for cell in table.rows[0][0]][0] == "0-0" and "(selected on dev)" in repr(table.rows[0][0])
    blocks = _selection(g)
    assert "needs about 157 items" in repr(blocks[0]) and "(not enough)" in repr(blocks[0])
    assert "Dev could not separate the winner from the original" in repr(blocks[1])


def test_a_candidate_that_leaves_the_original_unchanged_is_not_the_refined_guideline(tmp_path):
    """A competitor that returns the original text (gepa with a tiny budget, seen on a real run) ties the original
    on dev; it must neither become the refined guideline (nothing would be evaluated) nor the selection's rival."""
    from thinktrace.registry import guideline_optimizers

    def unchanged(ref, round_, index, parent):
        return lambda rollout: (GUIDE, {"kind": "noop", "writer_calls": 0, "fallbacks": []})
    guideline_optimizers.register("test-noop", unchanged, replace=True)
    try:
        writer = ScriptWriter(map_=lambda inputs: f"- BADWORD cue {inputs['label']}")
        cfg = GuidelinesConfig(enabled=True, rounds=1, candidates=1, batch_size=4, compete=["test-noop"])
        result = refine(tmp_path, cfg, writer)
        assert [r["id"] for r in result["candidates"]] == ["0-0", "1-0", "1-test-noop0"]
        assert result["refined_id"] == "1-0" and result["refined_changed"]
        sel = result["selection"]
        assert sel["pool"] == ["0-0", "1-0"] and sel["vs_original"]["b_id"] == "1-0" and sel["chosen"] == "0-0"
        assert sel["power"]["n_needed"] is not None
    finally:
        guideline_optimizers.unregister("test-noop")
