"""Named extension points (thinktrace.registry): a guideline optimizer and a sampling strategy registered by name
are validated and used; an unknown name is a one-line error naming the field and the registered names."""

import dspy
import pytest
from support.fakes import fake_lm, seed_of
from support.specs import toy_spec, write_spec

from thinktrace import registry
from thinktrace.data import Item
from thinktrace.errors import SpecError
from thinktrace.guidelines import GuidelinesConfig, check_optimizer, plan_calls, refine_guideline
from thinktrace.labels import LabelSet
from thinktrace.loader import load_object
from thinktrace.registry import Registry
from thinktrace.spec import load_spec
from thinktrace.sampling import SamplingStrategy, check_sampling_strategy, sampling_strategy
from thinktrace.teleprompt import RejectionSampling, attempt_seed

LABELS = LabelSet.of(["negative", "neutral", "positive"])
GUIDE = "Rate the sentiment of the text."
Rater = load_object("programs/rater.py:Rater", [], "programs.rater")
TraceInferrer = load_object("programs/trace.py:TraceInferrer", [], "programs.infer")


@pytest.fixture
def registered():
    """Register into a global registry for one test: `registered(registry, name, obj)`; removed afterwards."""
    added = []

    def add(reg, name, obj):
        reg.register(name, obj)
        added.append((reg, name))
        return obj

    yield add
    for reg, name in added:
        reg.unregister(name)


# -- the Registry --------------------------------------------------------------------------------------------
def test_after_inserts_in_order_and_a_taken_name_is_an_error():
    reg = Registry("stage", "thinktrace.test_stages")
    reg.register("a", 1)
    reg.register("c", 3)
    reg.register("b", 2, after="a")

    @reg.register("d", after="c")
    def d():
        return 4

    assert reg.names() == ["a", "b", "c", "d"] and reg.get("d") is d
    with pytest.raises(ValueError, match="a stage named 'a' is already registered"):
        reg.register("a", 9)
    reg.register("a", 9, replace=True)
    assert reg.get("a") == 9
    with pytest.raises(ValueError, match="cannot register stage 'e' after 'zz': no such stage; one of: "):
        reg.register("e", 5, after="zz")
    with pytest.raises(SpecError) as err:
        reg.get("zz", "stages.x")
    assert err.value.field == "stages.x" and "\n" not in str(err.value)
    assert f"unknown stage 'zz'; one of: {', '.join(reg.names())}" in str(err.value)
    assert sorted(reg.names()) == ["a", "b", "c", "d"]


# -- guideline optimizers --------------------------------------------------------------------------------------
def rater_rule(inputs, request):
    """Right on every item with KEYWORD in the guideline, else on every other item."""
    i = int(inputs["item"].split()[-1])
    right = "KEYWORD" in str(request.system) or i % 2 == 0
    return {"rationale": f"about item {i}", "label": LABELS.labels[i % 3 if right else (i + 1) % 3]}


def keyword_optimizer(ref, round_, index, parent):
    """A custom optimizer: appends a KEYWORD rule to the parent's text, no writer call."""
    ref.log_dir.joinpath("seen.txt").open("a").write(f"{round_}-{index} parent {parent['id']}\n")

    def make(rollout):
        return ref.texts[parent["id"]] + f"\nKEYWORD rule {round_}-{index}", {"kind": "keyword", "writer_calls": 0,
                                                                              "fallbacks": []}
    return make


keyword_optimizer.plan = lambda cfg, round_, sizes: {"writer_calls": 1, "rater_calls": sizes["n_dev"]}


def test_a_registered_guideline_optimizer_is_validated_planned_and_used(tmp_path, registered):
    registered(registry.guideline_optimizers, "keyword", keyword_optimizer)
    cfg = GuidelinesConfig(enabled=True, optimizer="keyword", rounds=2, candidates=2)
    check_optimizer(cfg)
    plan = plan_calls(cfg, {"positive": 3}, n_raters=2, n_dev=6)
    assert plan["writer_calls"] == 2 * 2 * 1 and plan["rater_calls"] == 12 + 2 * 2 * (12 + 6)
    wlm, _ = fake_lm(lambda inputs, request: {}, "writer")
    raters = {"r0": fake_lm(rater_rule, "r0")[0], "r1": fake_lm(rater_rule, "r1")[0]}
    dev = [Item(f"d{i}", f"text number {i}", LABELS.labels[i % 3], [LABELS.labels[i % 3]], [""], "dev")
           for i in range(6)]
    result = refine_guideline(cfg, original=GUIDE, traces=[], writer_lm=wlm, raters=raters,
                              rater_factory=lambda g: Rater(g, LABELS), dev_items=dev, label_set=LABELS,
                              adapter=None, seed=0, n_boot=10, log_dir=tmp_path / "g", threads=1)
    assert result["optimizer"] == "keyword" and result["best_id"] == "1-0"
    assert [r["kind"] for r in result["candidates"]] == ["original"] + ["keyword"] * 4
    assert "KEYWORD rule 1-0" in result["best"] and result["candidates"][1]["mean"] == pytest.approx(1.0)
    seen = (tmp_path / "g" / "seen.txt").read_text().splitlines()
    assert seen == ["1-0 parent 0-0", "1-1 parent 0-0", "2-0 parent 1-0", "2-1 parent 1-0"]


def test_a_spec_may_name_a_registered_guideline_optimizer(tmp_path, registered, capsys):
    from thinktrace.compile import main

    spec = toy_spec(guidelines={"enabled": True, "optimizer": "keyword", "candidates": 1})
    path = write_spec(tmp_path, spec)
    err = _spec_error(path)
    assert err.field == "guidelines.optimizer" and "unknown guideline optimizer 'keyword'" in str(err)
    assert "one of: traces, gepa, mipro" in str(err) and "\n" not in str(err)
    registered(registry.guideline_optimizers, "keyword", keyword_optimizer)
    assert load_spec(path).spec.guidelines.optimizer == "keyword"
    assert main([str(path), "--dry-run"]) == 0
    assert "keyword" in capsys.readouterr().out


def test_an_unknown_guideline_optimizer_names_the_field_and_the_registered_ones(registered):
    registered(registry.guideline_optimizers, "keyword", keyword_optimizer)
    with pytest.raises(ValueError, match=r"unknown guideline optimizer 'copro'; one of: traces, gepa, mipro, keyword"):
        GuidelinesConfig(optimizer="copro")
    cfg = GuidelinesConfig(optimizer="keyword")
    registry.guideline_optimizers.unregister("keyword")  # gone after validation: the run's check still says so
    with pytest.raises(SpecError) as err:
        check_optimizer(cfg)
    assert err.value.field == "guidelines.optimizer" and "one of: traces, gepa, mipro" in str(err.value)


def _spec_error(path) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return info.value


# -- sampling strategies ---------------------------------------------------------------------------------------
class TwoHintedThenBlind(SamplingStrategy):
    """A custom plan: at most two hinted attempts, then blind ones."""

    def slots(self, k):
        yield from (("hinted", i) for i in range(min(2, k)))
        yield from (("blind", i) for i in range(k))


def examples(n):
    return [dspy.Example(key=f"i{i}", item_id=f"i{i}", item=f"text number {i}", label=LABELS.labels[i % 3],
                         human_labels=[LABELS.labels[i % 3]]).with_inputs("item") for i in range(n)]


def never_explained(inputs, request):
    """Hinted rationales the check reads as wrong; blind labels right only on even seeds."""
    truth = LABELS.labels[int(inputs["item"].split()[-1]) % 3]
    other = LABELS.labels[(LABELS.labels.index(truth) + 1) % 3]
    if "label" in inputs:
        return {"rationale": f"so it is {other}"}
    if "rationale" in inputs:
        return {"label": inputs["rationale"].split()[-1]}
    return {"rationale": f"blind {seed_of(request)}", "label": truth if seed_of(request) % 2 == 0 else other}


def test_a_registered_sampling_strategy_is_used_by_rejection_sampling(registered):
    registered(registry.sampling_strategies, "two_hinted_then_blind", TwoHintedThenBlind())
    assert check_sampling_strategy("two_hinted_then_blind") == "two_hinted_then_blind"
    assert sampling_strategy("two_hinted_then_blind").calls_per_example(5) == 2 * 2 + 5
    lm, engine = fake_lm(never_explained)
    tele = RejectionSampling(LABELS, generator=lm, k=5, keep=1, strategy="two_hinted_then_blind", seed=3,
                             progress=False, num_threads=1)
    exs = examples(4)
    tele.compile(Rater(GUIDE, LABELS), trainset=exs, teacher=TraceInferrer(GUIDE, LABELS))
    for ex in exs:
        recs = [r for r in tele.attempts if r["key"] == ex.key]
        assert [(r["strategy"], r["attempt"]) for r in recs][:3] == [("hinted", 0), ("hinted", 1), ("blind", 0)]
        assert not any(r["accepted"] for r in recs[:2]) and recs[-1]["accepted"]
        assert sum(r["accepted"] for r in recs) == 1  # stops at keep
        assert all(r["seed"] == attempt_seed(3, ex.key, r["strategy"], r["attempt"]) for r in recs)
    assert engine.calls == sum(2 if r["strategy"] == "hinted" else 1 for r in tele.attempts)


def test_builtin_sampling_strategies_keep_their_slots():
    assert list(sampling_strategy("blind").slots(2)) == [("blind", 0), ("blind", 1)]
    assert list(sampling_strategy("hinted").slots(2)) == [("hinted", 0), ("hinted", 1)]
    assert list(sampling_strategy("blind_then_hinted").slots(2)) == [("blind", 0), ("blind", 1), ("hinted", 0),
                                                                     ("hinted", 1)]
    assert [sampling_strategy(n).calls_per_example(8) for n in ("blind", "hinted", "blind_then_hinted")] == \
        [8, 16, 24]
    assert attempt_seed(0, "i1", "blind", 0) == 1923404210  # the seeds of old runs' journals


def test_an_unknown_sampling_strategy_names_the_field_and_the_registered_ones(registered):
    with pytest.raises(SpecError) as err:
        RejectionSampling(LABELS, generator=fake_lm(never_explained)[0], strategy="psychic")
    assert err.value.field == "sampling.strategy" and "\n" not in str(err.value)
    assert "unknown sampling strategy 'psychic'; one of: blind, hinted, blind_then_hinted" in str(err.value)
    with pytest.raises(ValueError, match="unknown sampling strategy 'psychic'"):
        check_sampling_strategy("psychic")
    registered(registry.sampling_strategies, "telepathic", SamplingStrategy(("telepathic",)))
    with pytest.raises(SpecError, match="makes attempts of unknown kind 'telepathic'; an attempt kind is one of: "
                                        "blind, hinted"):
        sampling_strategy("telepathic")
