"""Guideline synthesis and refinement (thinktrace/guidelines.py, programs/guideline.py) on scripted fake LMs.

The fake raters read the guideline in their system prompt: with the rule keyword KEYWORD they always give the
human label, with BADWORD always a wrong one, otherwise the human label on every other item only.
"""

import json
import re
import threading

import pytest
from support import read_jsonl
from support.fakes import fake_lm
from pydantic import ValidationError

from thinktrace.prompt_formats import make_prompt_format
from thinktrace.data import Item
from thinktrace.errors import SpecError
from thinktrace.guidelines import (GuidelinesConfig, guideline_from_instructions, plan_calls, refine_guideline,
                                   write_rater_programs)
from thinktrace.labels import LabelSet
from thinktrace.lm.scripted import request_fields, text_of
from thinktrace.loader import load_object

LABELS = LabelSet.of(["negative", "neutral", "positive"])
GUIDE = "Rate the sentiment of the text as negative, neutral or positive."
Rater = load_object("programs/rater.py:Rater", [], "programs.rater")
GuidelineWriter = load_object("programs/guideline.py:GuidelineWriter", [], "guidelines")
RULES = load_object("programs/guideline.py:RULES_HEADING", [], "guidelines")
EXAMPLES = load_object("programs/guideline.py:EXAMPLES_HEADING", [], "guidelines")
render = load_object("programs/guideline.py:render_guideline", [], "guidelines")
PLAIN = make_prompt_format("plain")


def truth(i: int) -> str:
    return LABELS.labels[i % 3]


def wrong(i: int) -> str:
    return LABELS.labels[(i + 1) % 3]


def items(n: int, split: str = "dev", prefix: str = "d") -> list[Item]:
    return [Item(f"{prefix}{i}", f"text number {i}", truth(i), [truth(i)], [""], split) for i in range(n)]


def traces(n_per_label: dict[str, int]) -> list[dict]:
    rows, k = [], 0
    for label, n in n_per_label.items():
        for _ in range(n):
            rows.append({"key": f"t{k}", "item_id": f"t{k}", "item": f"train text {k}", "human": label,
                         "label": label, "rationale": f"reasoning {k} leads to {label}", "strategy": "blind"})
            k += 1
    return rows


def user_text(request) -> str:
    return text_of(request.messages[-1].text)


def rater_rule(inputs, request):
    system = text_of(request.system)
    i = int(inputs["item"].split()[-1])
    if "BADWORD" in system:
        label = wrong(i)
    elif "KEYWORD" in system:
        label = truth(i)
    else:
        label = truth(i) if i % 2 == 0 else wrong(i)
    return {"rationale": f"about item {i}", "label": label}


ROLLOUTS = {}


def candidate_index(request) -> int:
    """The candidate a writer call is for (its rollout seed: rounds 1-3, up to 8 candidates each)."""
    from thinktrace.guidelines import rollout_seed

    if not ROLLOUTS:
        ROLLOUTS.update({rollout_seed(0, "traces", r, i): i for r in (1, 2, 3) for i in range(8)})
    return ROLLOUTS.get(request.config.seed or 0, 0)


class Writer:
    """A scripted writer: records what each call saw; `rules(n, label)` gives candidate n's rules for a label (map
    and reduce), `revise(n, label)` its revised rules."""

    def __init__(self, rules=lambda n, label: f"- KEYWORD rule {n} for {label} items",
                 revise=lambda n, label: f"- KEYWORD revised rule for {label} items"):
        self.rules, self.revise = rules, revise
        self.calls: list[tuple[str, object]] = []
        self.lock = threading.Lock()

    def __call__(self, inputs, request):
        _, outputs = request_fields(request)
        user = user_text(request)
        n = candidate_index(request)
        with self.lock:
            if "decision_rules" in outputs and "traces" in inputs:
                ids = re.findall(r"\[\d+\] Item: train text (\d+)", user)
                self.calls.append(("summarize", ids))
                return {"decision_rules": self.rules(n, inputs["label"])}
            if "decision_rules" in outputs and "errors" in inputs:
                self.calls.append(("revise", len(re.findall(r"\[\d+\] Item:", user))))
                return {"decision_rules": self.revise(n, inputs["label"])}
            if "decision_rules" in outputs:
                self.calls.append(("combine", len(re.findall(r"\[\d+\]\n", user))))
                return {"decision_rules": self.rules(n, inputs["label"])}
            if "new_instruction" in outputs:  # GEPA's instruction proposer
                self.calls.append(("reflect", None))
                return {"new_instruction": f"{GUIDE}\nKEYWORD: reflect on the sentiment."}
            self.calls.append(("other", outputs))  # MIPROv2's proposer signatures
            return {name: f"{GUIDE} KEYWORD proposal" for name in outputs}


def setup(writer: Writer, n_raters: int = 2):
    wlm, wengine = fake_lm(writer, "writer")
    raters, engines = {}, []
    for k in range(n_raters):
        lm, engine = fake_lm(rater_rule, f"rater{k}")
        raters[f"r{k}"], engines = lm, engines + [engine]
    return wlm, wengine, raters, engines


def refine(tmp_path, writer, cfg=None, n_raters=2, **kw):
    wlm, wengine, raters, engines = setup(writer, n_raters)
    cfg = cfg or GuidelinesConfig(enabled=True, rounds=1, candidates=2, batch_size=4)
    args = dict(original=GUIDE, traces=traces({"negative": 5, "neutral": 3, "positive": 6}), writer_lm=wlm,
                raters=raters, rater_factory=lambda g: Rater(g, LABELS), dev_items=items(12), label_set=LABELS,
                adapter=PLAIN, seed=0, n_boot=20, log_dir=tmp_path / "guidelines", threads=2)
    args.update(kw)
    result = refine_guideline(cfg, **args)
    return result, wengine, engines


# -- the writer ---------------------------------------------------------------------------------------------
def run_writer(writer, trace_rows, batch_size=4, priority=(), adapter=PLAIN, **kw):
    import dspy

    lm, engine = fake_lm(writer, "writer")
    program = GuidelineWriter(LABELS, batch_size=batch_size, **kw)
    with dspy.context(lm=lm, adapter=adapter):
        return program(guideline=GUIDE, traces=trace_rows, priority=priority), engine


@pytest.mark.parametrize("adapter", [PLAIN, None], ids=["plain", "chat"])
def test_map_reduce_never_exceeds_batch_size(adapter):
    writer = Writer()
    rows = traces({"positive": 50, "negative": 5, "neutral": 1})
    pred, engine = run_writer(writer, rows, batch_size=4, adapter=adapter)
    summarize = [ids for stage, ids in writer.calls if stage == "summarize"]
    combine = [n for stage, n in writer.calls if stage == "combine"]
    assert all(1 <= len(ids) <= 4 for ids in summarize) and all(2 <= n <= 4 for n in combine)
    assert sorted(int(i) for ids in summarize for i in ids) == list(range(56))  # every trace read exactly once
    assert len(summarize) == 13 + 2 + 1
    assert len(combine) == 3 + 1 + 1  # positive: 13 lists -> 4 -> 1; negative: 2 -> 1
    assert pred.calls == engine.calls == len(summarize) + len(combine)
    plan = plan_calls(GuidelinesConfig(batch_size=4, candidates=1), {"positive": 50, "negative": 5, "neutral": 1},
                      n_raters=1, n_dev=10)
    assert plan["rounds"][0]["writer_calls"] == engine.calls
    assert "KEYWORD" in pred.guideline and pred.fallbacks == [] and pred.missing == []
    assert list(pred.rules) == ["negative", "neutral", "positive"]  # label-set order
    assert pred.guideline == render(GUIDE, pred.rules)  # assembled in code: original, then rules per label
    assert pred.stats["map"] == {"calls": 16, "truncated": 0, "retries": 0, "fallbacks": 0}


def test_priority_traces_come_first():
    writer = Writer()
    rows = traces({"positive": 12})
    priority = {"t11", "t7", "t3"}
    pred, _ = run_writer(writer, rows, batch_size=4, priority=priority)
    first = [ids for stage, ids in writer.calls if stage == "summarize"][0]
    assert set(first[:3]) == {"11", "7", "3"}
    assert pred.batches["positive"][0][:3] == ["t3", "t7", "t11"]
    capped = GuidelineWriter(LABELS, batch_size=4, max_traces_per_label=3).batches(rows, priority)
    assert capped == {"positive": [[t for t in rows if t["item_id"] in priority]]}


def test_a_cut_answer_is_asked_again_with_a_larger_budget_then_a_smaller_batch():
    def cutting(inputs, request):  # rules need 200 tokens; one trace's rules fit in any budget
        n = len(re.findall(r"\[\d+\] Item:", user_text(request)))
        if n > 1 and (request.config.max_tokens or 0) < 200:
            return "Decision rules: - a rule that was cu", "length"
        return {"decision_rules": f"- rule from {n} traces about {inputs.get('label')}"}

    pred, _ = run_writer(cutting, traces({"positive": 3}), batch_size=4, max_tokens=64, max_tokens_cap=128)
    st = pred.stats["map"]
    # 3 traces at 64 -> cut; at 128 -> cut (the cap); then halves: 1 trace ok, 2 traces cut twice, then 1 + 1
    assert st["truncated"] == 4 and st["fallbacks"] == 0 and st["retries"] >= 3
    assert pred.rules["positive"] and pred.fallbacks == []
    # with room to grow, doubling the budget is enough
    pred, _ = run_writer(cutting, traces({"positive": 3}), batch_size=4, max_tokens=100, max_tokens_cap=400)
    assert pred.stats["map"] == {"calls": 2, "truncated": 1, "retries": 1, "fallbacks": 0}


def test_a_single_trace_cut_at_the_cap_is_a_counted_fallback():
    pred, _ = run_writer(lambda inputs, request: ("- half a rul", "length"), traces({"positive": 1, "negative": 1}),
                         max_tokens=64, max_tokens_cap=64)
    assert pred.rules == {} and pred.missing == ["negative", "positive"]
    assert [f["stage"] for f in pred.fallbacks] == ["map", "map"] and "cut at 64 tokens" in pred.fallbacks[0]["what"]
    assert pred.guideline == GUIDE  # nothing usable: the original, unchanged
    assert pred.stats["map"]["truncated"] == 2 and pred.stats["map"]["fallbacks"] == 2


@pytest.mark.parametrize("answer, why, sent", [("", "empty output", 4), ({"decision_rules": "ok."}, "no decision rule", 2)])
def test_empty_or_ruleless_answers_are_resampled_once_then_counted(answer, why, sent):
    seen = []

    def writer(inputs, request):
        seen.append(request.config.temperature)
        return answer
    pred, engine = run_writer(writer, traces({"positive": 2}))
    # one new sample, at a temperature that can differ (an empty completion is also asked again by the LM guard)
    assert engine.calls == sent and seen[-1] > 0
    assert pred.missing == ["positive"] and why in pred.fallbacks[0]["what"]
    assert pred.stats["map"] == {"calls": 2, "truncated": 0, "retries": 1, "fallbacks": 1}


def test_rules_dropped_for_one_label_are_flagged(tmp_path):
    writer = Writer(rules=lambda n, label: "" if label == "neutral" else f"- KEYWORD rule for {label} items")
    result, _, _ = refine(tmp_path, writer, cfg=GuidelinesConfig(enabled=True, rounds=1, candidates=1,
                                                                  batch_size=4, examples_per_label=1))
    sections = result["refined_sections"]
    assert sections["labels_without_rules"] == ["neutral"] and not sections["rules_empty"]
    assert result["writer_stats"]["map"]["fallbacks"] == 1
    assert set(result["ablation_texts"]) == {"rules", "examples"}
    rules_only, examples_only = result["ablation_texts"]["rules"], result["ablation_texts"]["examples"]
    assert RULES in rules_only and EXAMPLES not in rules_only
    assert EXAMPLES in examples_only and RULES not in examples_only
    assert result["refined"] == render(GUIDE, {"negative": "- KEYWORD rule for negative items",
                                               "positive": "- KEYWORD rule for positive items"},
                                       result["refined"].split(EXAMPLES + "\n\n", 1)[1].strip())


def test_writer_prompts_fit_the_context():
    writer = Writer()
    rows = traces({"positive": 8})
    long = [{**t, "rationale": "word " * 150} for t in rows]  # ~250 tokens per trace at 3 chars per token
    pred, _ = run_writer(writer, long, batch_size=8, max_tokens=128, context_tokens=1200)
    sizes = [len(ids) for stage, ids in writer.calls if stage == "summarize"]
    assert sum(sizes) == 8 and max(sizes) < 8 and pred.fallbacks == []


# -- refinement ---------------------------------------------------------------------------------------------
def test_picks_the_candidate_raters_agree_with_and_saves_every_candidate(tmp_path):
    writer = Writer(rules=lambda n, lb: f"- A plain rule {n} for {lb}" if n == 0 else f"- KEYWORD rule {n} for {lb}")
    result, wengine, engines = refine(tmp_path, writer, priority={"t0"})
    assert result["best_id"] == "1-1" and "KEYWORD" in result["best"] and not result["kept_original"]
    assert result["original_dev"]["mean"] < result["best_dev"]["mean"] == pytest.approx(1.0)
    assert set(result["best_dev"]["alpha"]) == {"r0", "r1"}
    log = tmp_path / "guidelines"
    rows = read_jsonl(log / "candidates.jsonl")
    assert [(r["round"], r["index"], r["parent"]) for r in rows] == [(0, 0, None), (1, 0, "0-0"), (1, 1, "0-0")]
    for row in rows:
        text = (log / "candidates" / f"{row['id']}.md").read_text()
        assert text == (GUIDE if row["id"] == "0-0" else render(GUIDE, {
            lb: writer.rules(row["index"], lb) for lb in ("negative", "neutral", "positive")}))
        assert set(row["alpha"]) == {"r0", "r1"} and row["mean"] == pytest.approx(sum(row["alpha"].values()) / 2)
        assert row["alpha_est"]["r0"]["ci"][0] is not None  # bootstrap CI on dev
    assert rows[0]["mean"] == result["original_dev"]["mean"]
    assert all(e.calls == 3 * 12 for e in engines)  # original + 2 candidates, 12 dev items each
    assert result["fallbacks"] == 0 and result["writer_calls"] == wengine.calls
    meta = json.loads((log / "candidates" / "1-0.json").read_text())
    assert meta["kind"] == "traces" and meta["rules"] and meta["batches"]["negative"][0][0] == "t0"


def test_original_is_kept_when_every_candidate_is_worse(tmp_path):
    writer = Writer(rules=lambda n, lb: f"- BADWORD rule {n} for {lb}", revise=lambda n, lb: f"- BADWORD again {lb}")
    cfg = GuidelinesConfig(enabled=True, rounds=2, candidates=2, batch_size=4)
    result, _, _ = refine(tmp_path, writer, cfg=cfg)
    assert result["best_id"] == "0-0" and result["best"] == GUIDE and result["kept_original"]
    assert "original" in result["note"]
    assert [r["id"] for r in result["candidates"]] == ["0-0", "1-0", "1-1", "2-0", "2-1"]
    assert all(r["mean"] < result["original_dev"]["mean"] for r in result["candidates"][1:])
    # round 2 revised the best so far (the original) from its dev errors
    assert [r["parent"] for r in result["candidates"][3:]] == ["0-0", "0-0"]
    assert [r["kind"] for r in result["candidates"][3:]] == ["revision", "revision"]
    revised = [n for stage, n in writer.calls if stage == "revise"]  # one call per label with errors
    assert revised and all(1 <= n <= 4 for n in revised)  # at most batch_size errors shown per label
    meta = json.loads((tmp_path / "guidelines" / "candidates" / "2-0.json").read_text())
    assert sum(len(v) for v in meta["errors_shown"].values()) == sum(revised) / 2


def test_later_rounds_revise_the_best_so_far(tmp_path):
    writer = Writer(rules=lambda n, lb: f"- A plain rule {n} for {lb}")
    cfg = GuidelinesConfig(enabled=True, rounds=2, candidates=1, batch_size=4)
    result, _, _ = refine(tmp_path, writer, cfg=cfg)
    rows = {r["id"]: r for r in result["candidates"]}
    assert rows["2-0"]["parent"] == "0-0"  # 1-0 ties the original: the earlier one stays best
    assert result["best_id"] == "2-0" and "KEYWORD revised" in result["best"]
    assert result["best"].startswith(GUIDE) and RULES in result["best"]


def test_resume_neither_regenerates_nor_rescores(tmp_path):
    writer = Writer()
    cfg = GuidelinesConfig(enabled=True, rounds=2, candidates=2, batch_size=4)
    first, _, _ = refine(tmp_path, writer, cfg=cfg)
    different = Writer(rules=lambda n, lb: "- different rules here", revise=lambda n, lb: "- different rules here")
    again, wengine, engines = refine(tmp_path, different, cfg=cfg)
    assert wengine.calls == 0 and all(e.calls == 0 for e in engines)
    assert again["best"] == first["best"] and again["best_id"] == first["best_id"]
    assert [r["mean"] for r in again["candidates"]] == [r["mean"] for r in first["candidates"]]
    # a kill while 1-1 was being scored: its text and its finished ratings are kept
    log = tmp_path / "guidelines"
    table = log / "candidates.jsonl"
    table.write_text("".join(line + "\n" for line in table.read_text().splitlines()
                             if json.loads(line)["id"] != "1-1"))
    ratings = log / "ratings" / "1-1.jsonl"
    ratings.write_text("".join(ratings.read_text().splitlines(keepends=True)[:-5]))
    third, wengine, engines = refine(tmp_path, different, cfg=cfg)
    assert wengine.calls == 0 and sum(e.calls for e in engines) == 5
    assert [r["mean"] for r in third["candidates"]] == [r["mean"] for r in first["candidates"]]


def test_identical_candidates_are_scored_once(tmp_path):
    writer = Writer(rules=lambda n, lb: f"- KEYWORD rule for {lb} items")
    result, _, engines = refine(tmp_path, writer)
    assert result["candidates"][2]["same_as"] == "1-0"
    assert all(e.calls == 2 * 12 for e in engines)


def test_compiled_programs_carry_the_refined_guideline(tmp_path):
    writer = Writer()
    result, _, _ = refine(tmp_path, writer, n_raters=2)
    paths = write_rater_programs(result["best"], ["r0", "r1"], lambda g: Rater(g, LABELS), tmp_path / "out",
                                 original=GUIDE)
    assert (tmp_path / "out" / "guideline.md").read_text().strip() == result["best"].strip()
    assert (tmp_path / "out" / "guideline.original.md").read_text().strip() == GUIDE
    for name in ("r0", "r1"):
        state = json.loads(paths["programs"][name].read_text())
        instructions = state["judge"]["signature"]["instructions"]
        assert result["best"].strip() in instructions and "one of: negative, neutral, positive" in instructions
        loaded = Rater("placeholder", LABELS)
        loaded.load(str(paths["programs"][name]))
        assert "KEYWORD" in loaded.judge.signature.instructions
    assert guideline_from_instructions(instructions, lambda g: Rater(g, LABELS)) == result["best"].strip()


def test_config_validation():
    with pytest.raises(ValidationError, match="temperature"):
        GuidelinesConfig(temperature=0.0, candidates=2)
    GuidelinesConfig(temperature=0.0, candidates=1)
    with pytest.raises(ValidationError):
        GuidelinesConfig(batch_size=1)
    with pytest.raises(ValidationError):
        GuidelinesConfig(optimizer="copro")
    plan = plan_calls(GuidelinesConfig(rounds=3, candidates=2, batch_size=8), {"a": 20, "b": 3}, n_raters=2, n_dev=10)
    assert [r["writer_calls"] for r in plan["rounds"]] == [2 * (3 + 1 + 1), 2 * 2, 2 * 2]  # revise: one per label
    assert plan["rater_calls"] == 20 + 3 * 2 * 20


# -- DSPy's own optimizers ----------------------------------------------------------------------------------
def test_gepa_candidates_are_scored_like_trace_candidates(tmp_path):
    cfg = GuidelinesConfig(enabled=True, optimizer="gepa", rounds=1, candidates=1, gepa_max_metric_calls=24)
    writer = Writer()
    result, _, _ = refine(tmp_path, writer, cfg=cfg, dev_items=items(6), train_items=items(6, "train", "x"))
    assert any(stage == "reflect" for stage, _ in writer.calls)
    row = result["candidates"][1]
    assert row["kind"] == "gepa" and result["best_id"] == "1-0" and "KEYWORD" in result["best"]
    assert row["writer_calls"] == sum(stage == "reflect" for stage, _ in writer.calls)
    assert "The label must be" not in result["best"]  # the rater's own suffix is not read back into the guideline
    assert row["mean"] == pytest.approx(1.0) and result["original_dev"]["mean"] < 1.0


def test_mipro_without_optuna_is_a_clear_spec_error(tmp_path, monkeypatch):
    import thinktrace.guidelines.config as guidelines

    monkeypatch.setattr(guidelines, "_module_available", lambda name: name != "optuna")
    cfg = GuidelinesConfig(enabled=True, optimizer="mipro")
    with pytest.raises(SpecError) as err:
        refine(tmp_path, Writer(), cfg=cfg)
    assert err.value.field == "guidelines.optimizer" and "optuna" in str(err.value)


def test_mipro_instruction_only(tmp_path):
    pytest.importorskip("optuna", reason="MIPROv2 needs the optional package optuna")
    cfg = GuidelinesConfig(enabled=True, optimizer="mipro", rounds=1, candidates=1, mipro_num_candidates=2,
                           mipro_num_trials=3)
    writer = Writer()
    result, _, _ = refine(tmp_path, writer, cfg=cfg, dev_items=items(6), train_items=items(6, "train", "x"))
    row = result["candidates"][1]
    assert row["kind"] == "mipro" and "KEYWORD" in result["best"] and result["best_id"] == "1-0"
    assert row["mean"] == pytest.approx(1.0)


def test_priority_helpers():
    from thinktrace.guidelines import priority_from_ratings, priority_from_traces

    rows = [{"item_id": "a", "strategy": "blind", "attempt": 0}, {"item_id": "b", "strategy": "blind", "attempt": 2},
            {"item_id": "c", "strategy": "hinted", "attempt": 0}]
    assert priority_from_traces(rows) == {"b", "c"}
    records = [{"item_id": "a", "rater": "x", "human": "pos", "label": "pos"},
               {"item_id": "b", "rater": "x", "human": "pos", "label": None},
               {"item_id": "c", "rater": "y", "human": "pos", "label": "neg"}]
    assert priority_from_ratings(records) == {"b", "c"} and priority_from_ratings(records, ["x"]) == {"b"}



def test_examples_per_label_adds_human_labelled_trace_items_priority_first(tmp_path):
    cfg = GuidelinesConfig(enabled=True, rounds=1, candidates=2, batch_size=4, examples_per_label=2)
    # priority: t1 (negative) and t6 (neutral) were first missed by the generator
    result, _, _ = refine(tmp_path, Writer(), cfg=cfg, priority={"t1", "t6"})
    first = (tmp_path / "guidelines" / "candidates" / "1-0.md").read_text()
    section = first.split(EXAMPLES, 1)[1].strip().splitlines()
    assert len(section) == 6  # 2 per label, 3 labels with traces
    assert section[0] == "- train text 1 -> negative. Why: reasoning 1 leads to negative"
    assert section[2].startswith("- train text 6 -> neutral")
    meta = json.loads((tmp_path / "guidelines" / "candidates" / "1-0.json").read_text())
    assert meta["examples"]["negative"][0] == "t1" and len(meta["examples"]["positive"]) == 2
    # the second candidate shuffles within the priority / other groups: priority items still lead
    second = json.loads((tmp_path / "guidelines" / "candidates" / "1-1.json").read_text())["examples"]
    assert second["negative"][0] == "t1" and second["neutral"][0] == "t6"
    assert result["refined"].count(EXAMPLES) == 1


def test_examples_without_reasoning_show_item_and_label_only():
    writer = GuidelineWriter(LABELS, examples_per_label=1, example_reasoning=False)
    lm, _ = fake_lm(Writer(), "writer")
    import dspy

    with dspy.context(lm=lm, adapter=PLAIN):
        pred = writer(guideline=GUIDE, traces=traces({"negative": 2, "positive": 1}))
    lines = pred.guideline.split(EXAMPLES, 1)[1].strip().splitlines()
    assert lines == ["- train text 0 -> negative", "- train text 2 -> positive"]
