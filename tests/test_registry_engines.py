"""Engines by name: a model entry with `provider: python` names an engine registered in
``thinktrace.registry.engines`` instead of a `file.py:callable` reference."""

from __future__ import annotations

import dspy
import pytest
from support.specs import toy_spec, write_spec

from thinktrace.errors import SpecError
from thinktrace.lm import build_lm
from thinktrace.lm.scripted import ScriptedEngine
from thinktrace.registry import engines
from thinktrace.spec import load_spec

NAME = "test-registry-echo"


@pytest.fixture
def registered():
    engines.register(NAME, lambda: ScriptedEngine(lambda inputs, request: {"answer": "from the registry"}))
    yield NAME
    engines.unregister(NAME)


def model_entry(tmp_path, model: str):
    spec = toy_spec(**{"models.raters": [{"name": "named", "provider": "python", "model": model, "cache": False}]})
    loaded = load_spec(write_spec(tmp_path, spec))
    return loaded.spec.models.raters[0]


def test_a_registered_engine_is_built_by_name(tmp_path, registered):
    lm = build_lm(model_entry(tmp_path, registered), "models.raters.0")
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        out = dspy.Predict("question -> answer")(question="who answers?")
    assert out.answer == "from the registry"


def test_an_unknown_engine_name_is_a_one_line_spec_error_listing_the_registered_names(tmp_path, registered):
    cfg = model_entry(tmp_path, "no-such-engine")
    with pytest.raises(SpecError) as err:
        build_lm(cfg, "models.raters.0")
    message = str(err.value)
    assert err.value.field == "models.raters.0.model"
    assert "\n" not in message
    assert message.startswith("models.raters.0.model: ") and "'no-such-engine'" in message
    assert registered in message
