"""Label choice by likelihood: the engine scores each allowed label after an answer prefix."""

import dspy
import pytest
from dspy.lm15 import Config, Message, Request

from thinktrace.adapters import answer_prefix, choose_field, make_adapter
from thinktrace.labels import LabelSet
from thinktrace.lm import ModelConfig, build_lm
from thinktrace.lm.choices import CHOICES_KEY, requested_choices, score_choices, supports_choices
from thinktrace.lm.local_engine import TransformersEngine
from thinktrace.programs import load_object


def choice_request(choices, prefix="Rationale: fine\nLabel:"):
    return Request(model="local/tiny", messages=(Message.user("Item: x"), Message.assistant(prefix)),
                   config=Config(extensions={"metadata": {CHOICES_KEY: choices}}))


def test_requested_choices_and_validation():
    assert requested_choices(Request(model="m", messages=(Message.user("hi"),))) is None
    assert requested_choices(choice_request(["a", "b"])) == ["a", "b"]
    with pytest.raises(ValueError):
        requested_choices(choice_request(["a", ""]))


def test_engine_answers_with_the_most_likely_choice(tiny_model_dir):
    engine = TransformersEngine(str(tiny_model_dir))
    choices = ["-1", "0", "1", "positive"]
    resp = engine.complete(choice_request(choices))
    loaded = engine.load()
    scores = score_choices(loaded, [{"role": "user", "content": "Item: x"},
                                    {"role": "assistant", "content": "Rationale: fine\nLabel:"}], choices)
    assert resp.message.text == choices[scores.index(max(scores))]
    assert resp.usage.output_tokens == 0 and resp.usage.input_tokens > 0


def test_prefill_continues_the_assistant_message(tiny_model_dir):
    loaded = TransformersEngine(str(tiny_model_dir)).load()
    user = [{"role": "user", "content": "Item: x"}]
    with_prefix = loaded.encode(user + [{"role": "assistant", "content": "Label:"}])
    plain = loaded.encode(user)
    assert with_prefix[: len(plain)] == plain  # the prompt, then the assistant's started answer
    assert loaded.tokenizer.decode(with_prefix[len(plain):]).strip().endswith("Label:")


def test_answer_prefix_per_adapter():
    Judge = load_object("signatures/judge.py:Judge", [], "x")
    plain = answer_prefix(make_adapter("plain"), Judge, {"rationale": "r"}, "label")
    chat = answer_prefix(make_adapter("chat"), Judge, {"rationale": "r"}, "label")
    assert plain == "Rationale: r\nLabel:"
    assert chat == "[[ ## rationale ## ]]\nr\n\n[[ ## label ## ]]\n"


def test_rater_falls_back_to_choice_only_on_capable_local_lms(tiny_model_dir):
    labels = LabelSet.of(["negative", "neutral", "positive"])
    Rater = load_object("programs/rater.py:Rater", [], "programs.rater")
    rater = Rater("Rate the sentiment.", labels)
    lm = build_lm(ModelConfig(name="tiny-choice", model=str(tiny_model_dir), max_tokens=6, cache=False))
    assert supports_choices(lm)
    with dspy.context(lm=lm, adapter=make_adapter("plain")):
        pred = rater(item="a lovely day")
    assert pred.label_source in ("output", "choice", None)
    if pred.label_source == "choice":
        assert pred.label in labels.labels
    other = dspy.LM("local/not-capable", engine=TransformersEngine(str(tiny_model_dir)), cache=False)
    assert not supports_choices(other)
    assert choose_field(other, None, rater.judge, {"item": "x"}, {}, "label", ["a", "b"]) is None
