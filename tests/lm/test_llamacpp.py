"""The llama.cpp engine on a tiny random LLaMA (converted to GGUF by the test): sampling settings, seeds, grammars,
adapters, prompt ids, errors, server lifecycle."""

from __future__ import annotations

import threading

import dspy
import pytest
from dspy.lm15 import Config, Message, Request

from thinktrace.lm import LlamaCppEngine, ModelConfig, build_lm, engine_stats
from thinktrace.lm.factory import clear_engines, get_engine, get_server
from thinktrace.lm.grammar import GRAMMAR_KEY

PROMPT = (Message.user("the quick brown fox"),)


def req(max_tokens=12, temperature=0.0, seed=None, stop=(), grammar=None, top_k=None, top_p=None, text=None,
        messages=None):
    ext = {"metadata": {GRAMMAR_KEY: grammar}} if grammar else None
    return Request(model="local/tiny", system="be brief",
                   messages=messages or ((Message.user(text),) if text else PROMPT),
                   config=Config(max_tokens=max_tokens, temperature=temperature, seed=seed, stop=stop, top_k=top_k,
                                 top_p=top_p, extensions=ext))


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    clear_engines()
    engine = get_engine(ModelConfig(name="tiny", model=str(tiny_model_dir), llama={"threads": 1, "slots": 4,
                                                                                  "context": 512}))
    yield engine
    clear_engines()


def text(engine, request) -> str:
    return engine.complete(request).message.text


def test_greedy_is_deterministic_and_reports_usage(engine):
    a, b = engine.complete(req()), engine.complete(req())
    assert a.message.text == b.message.text and a.message.text
    assert a.usage.output_tokens == 12 and a.finish_reason == "length"
    assert a.usage.input_tokens == len(engine.payload(req())["prompt"])


def test_same_seed_same_sample_different_seeds_differ(engine):
    samples = [text(engine, req(temperature=1.0, seed=s)) for s in range(8)]
    again = [text(engine, req(temperature=1.0, seed=s)) for s in range(8)]
    assert samples == again
    assert len(set(samples)) >= 4  # different seeds explore


def test_every_sampling_setting_is_spelled_out(engine):
    """llama.cpp's server defaults (top_k 40, top_p 0.95, min_p 0.05) must never apply silently."""
    body = engine.payload(req(temperature=1.0))
    assert (body["top_k"], body["top_p"], body["min_p"], body["temperature"]) == (0, 1.0, 0.0, 1.0)
    assert body["cache_prompt"] is True and body["typical_p"] == 1.0 and body["repeat_penalty"] == 1.0
    assert engine.server.exact  # a checkpoint directory: its exact F32 weights, computed like transformers
    body = engine.payload(req(temperature=0.7, top_k=5, top_p=0.5))
    assert (body["top_k"], body["top_p"]) == (5, 0.5)


def test_server_defaults_do_not_leak_into_samples(engine):
    """Behaviour, not payload: the engine's samples equal llama.cpp's with plain settings, and differ from what the
    server's own truncating defaults give for the same seeds."""
    plain, defaults, ours = [], [], []
    for seed in range(12):
        body = engine.payload(req(temperature=1.5, seed=seed, max_tokens=16))
        ours.append(engine.server.complete(body)["choices"][0]["text"])
        plain.append(engine.server.complete(body)["choices"][0]["text"])
        trimmed = {k: v for k, v in body.items() if k not in ("top_k", "top_p", "min_p")}
        defaults.append(engine.server.complete(trimmed)["choices"][0]["text"])
    assert ours == plain
    assert ours != defaults


def test_top_k_one_is_greedy_at_any_temperature(engine):
    greedy = text(engine, req())
    assert all(text(engine, req(temperature=1.0, seed=s, top_k=1)) == greedy for s in range(4))


def test_stop_strings_and_max_tokens(engine):
    full = text(engine, req(max_tokens=20))
    stop = full[3:6]
    cut = engine.complete(req(max_tokens=20, stop=(stop,)))
    assert stop not in cut.message.text and full.startswith(cut.message.text) and cut.finish_reason == "stop"


def test_grammar_constrains_the_answer(engine):
    grammar = 'root ::= "Label: " ("-1" | "0" | "1")'
    answers = {text(engine, req(temperature=1.0, seed=s, grammar=grammar)) for s in range(10)}
    assert answers <= {"Label: -1", "Label: 0", "Label: 1"} and answers


def test_prompt_ids_are_the_fine_tuning_ids(engine, tiny_model_dir):
    """The token ids llama.cpp gets for a rater's prompt are the ids fine-tuning trains on."""
    from transformers import AutoTokenizer

    from thinktrace.finetune import encode_rows

    messages = [{"role": "system", "content": "rate it"}, {"role": "user", "content": "Item: fox"},
                {"role": "assistant", "content": "Label: 1"}]
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    (row,), _ = encode_rows(tok, [{"messages": messages}], max_length=512)
    request = Request(model="local/tiny", system="rate it", messages=(Message.user("Item: fox"),), config=Config())
    ids = engine.payload(request)["prompt"]
    assert row["input_ids"][: len(ids)] == ids and row["labels"][: len(ids)] == [-100] * len(ids)
    assert row["labels"][len(ids)] != -100  # the answer starts right after


def test_prefill_continues_the_assistant_message(engine):
    messages = (Message.user("the quick brown fox"), Message.assistant("Label:"))
    ids = engine.payload(req(messages=messages))["prompt"]
    plain = engine.payload(req())["prompt"]
    assert ids[: len(plain)] == plain[: len(ids)] or len(ids) != len(plain)
    tok = engine.server.tokenizer
    assert tok.decode(ids).rstrip().endswith("Label:")


def test_concurrent_requests_equal_sequential(engine):
    requests = [req(text=t, max_tokens=10) for t in ("a rater reads", "the lazy dog", "positive negative", "0 1 2")]
    alone = [text(engine, r) for r in requests]
    box: dict[int, str] = {}
    threads = [threading.Thread(target=lambda i=i, r=r: box.__setitem__(i, text(engine, r)))
               for i, r in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [box[i] for i in range(len(requests))] == alone


def test_errors_are_raised_never_returned(engine):
    from dspy.lm15 import LM15Error

    with pytest.raises(LM15Error):
        engine.complete(req(text="fox " * 600))  # longer than the 512-token slot (context 512)
    with pytest.raises(LM15Error):
        engine.complete(req(grammar="root ::= ("))  # not a grammar
    assert text(engine, req())  # the server keeps serving


def test_adapters_share_the_base_server_and_are_selected_per_request(tiny_model_dir, tiny_adapter_dir):
    clear_engines()
    base_cfg = ModelConfig(name="base", model=str(tiny_model_dir), training_base=True,
                           llama={"threads": 1, "slots": 1})  # one slot: every request could reuse the last
    base = get_engine(base_cfg)
    tuned = get_engine(base_cfg.model_copy(update={"name": "tuned", "adapter": str(tiny_adapter_dir)}))
    assert tuned.server is base.server and base.adapter_id is None and tuned.adapter_id == 0
    assert (tiny_adapter_dir / "adapter.gguf").is_file()
    b, t = text(base, req(max_tokens=16)), text(tuned, req(max_tokens=16))
    assert b != t  # the random adapter changes the logits
    # mixed concurrently: each request gets its own adapter
    box: dict[str, str] = {}
    threads = [threading.Thread(target=lambda n=n, e=e: box.__setitem__(n, text(e, req(max_tokens=16))))
               for n, e in (("b", base), ("t", tuned), ("b2", base), ("t2", tuned))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert box == {"b": b, "t": t, "b2": b, "t2": t}
    # the adapter's answer does not depend on what the server computed before: equal to a fresh server's
    clear_engines()
    fresh = get_engine(base_cfg.model_copy(update={"name": "tuned", "adapter": str(tiny_adapter_dir)}))
    assert text(fresh, req(max_tokens=16)) == t
    clear_engines()


def test_release_stops_the_server_and_the_next_call_restarts_it(tiny_model_dir):
    from thinktrace.lm import release_engines

    clear_engines()
    lm = build_lm(ModelConfig(name="r", model=str(tiny_model_dir), max_tokens=4, cache=False, llama={"threads": 1}))
    first = lm("hi")[0]
    server = get_server(ModelConfig(model=str(tiny_model_dir)))
    assert server.running
    release_engines()
    assert not server.running
    assert lm("hi")[0] == first and server.running and server.stats()["starts"] == 2
    assert sum(s["calls"] for s in engine_stats().values()) == 2
    clear_engines()


def test_local_rater_labels_always_in_the_label_set(tiny_model_dir):
    """A random model rates through the Rater program in every prompt format: every label is in the label set;
    answers cut by max_tokens are completed under the label grammar."""
    from thinktrace.prompt_formats import make_prompt_format
    from thinktrace.labels import LabelSet
    from thinktrace.loader import load_object

    Rater = load_object("thinktrace.programs.rater:Rater", [], "programs.rater")
    LabelOnlyRater = load_object("thinktrace.programs.rater:LabelOnlyRater", [], "programs.rater")
    clear_engines()
    labels = LabelSet.of([-2, -1, 0, 1, 2], "ordinal")
    items = ["the quick brown fox", "a lazy dog", "positive answer", "neutral question", "0 1 2"]
    for fmt in ("plain", "chat", "json"):
        # label only: the grammar admits nothing but a label; a rationale cut by max_tokens: completed under it
        for cls, max_tokens, sources in ((LabelOnlyRater, 20, {"output"}), (Rater, 3, {"choice"}),
                                         (Rater, 40, {"output", "choice"})):
            lm = build_lm(ModelConfig(name=f"t-{fmt}-{max_tokens}", model=str(tiny_model_dir), temperature=1.0,
                                      max_tokens=max_tokens, cache=False, llama={"threads": 1}))
            rater = cls("Rate the sentiment.", labels)
            with dspy.context(lm=lm, adapter=make_prompt_format(fmt)):
                preds = [rater(item=i) for i in items]
            assert all(p.label in labels.labels for p in preds), (fmt, [p.raw for p in preds])
            assert {p.label_source for p in preds} <= sources, (fmt, cls.__name__, max_tokens)
    clear_engines()


def test_engine_is_a_dspy_engine(engine):
    assert isinstance(engine, LlamaCppEngine)
    lm = dspy.LM("local/tiny", engine=engine, temperature=0.0, max_tokens=5, cache=False)
    out = lm("hello")
    assert isinstance(out[0], str) and lm.history[-1]["usage"]["completion_tokens"] <= 5


def test_one_model_holds_memory_at_a_time_unless_configured(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    from thinktrace.lm.factory import MAX_RUNNING_ENV
    from thinktrace.lm.weights import served_model

    clear_engines()
    copy = tmp_path / "copy.gguf"
    shutil.copy(served_model(str(tiny_model_dir)).gguf, copy)
    a = get_engine(ModelConfig(name="a", model=str(tiny_model_dir), llama={"threads": 1}))
    b = get_engine(ModelConfig(name="b", model=str(copy), llama={"threads": 1}))
    assert a.server is not b.server
    text(a, req(max_tokens=2))
    text(b, req(max_tokens=2))
    assert b.server.running and not a.server.running  # a was idle: stopped before b loaded
    monkeypatch.setenv(MAX_RUNNING_ENV, "2")
    text(a, req(max_tokens=2))
    assert a.server.running and b.server.running
    clear_engines()


def test_a_prompt_over_the_context_names_the_spec_field_to_raise():
    """llama.cpp's context error becomes DSPy's ContextLengthError (a final failure, never a result) that says
    which spec setting to raise; other errors keep their own class."""
    from dspy.lm15 import ContextLengthError, InvalidRequestError

    from thinktrace.lm.llamacpp import _raise_for_error

    over = {"error": {"code": 400, "type": "exceed_context_size_error",
                      "message": "request (1440 tokens) exceeds the available context size (1024 tokens)"}}
    with pytest.raises(ContextLengthError, match=r"1440 tokens.*raise `llama.context` of .*smollm2-135m"):
        _raise_for_error(over, context_hint="raise `llama.context` of the model entries on smollm2-135m")
    with pytest.raises(InvalidRequestError, match="bad grammar"):
        _raise_for_error({"error": {"code": 400, "message": "bad grammar"}}, context_hint="unused")


def test_a_prompt_and_its_budget_over_the_context_fail_before_sending(engine):
    """A prompt that fits a slot but leaves less room than max_tokens would be answered up to the context's end (or
    not at all), a cut answer nobody asked for: refused before it is sent, naming the field and a size that holds
    it. The same prompt with a budget that fits is answered."""
    from dspy.lm15 import ContextLengthError

    words = "fox " * 200
    n = len(engine.payload(req(text=words))["prompt"])
    assert n < 512 - 12  # the prompt itself fits the 512-token slot
    with pytest.raises(ContextLengthError, match=rf"prompt \({n} tokens\) \+ max_tokens \(400\).*raise "
                                                 r"`llama.context` of the model entries on .* to \d+ or more"):
        engine.complete(req(text=words, max_tokens=400))
    assert engine.complete(req(text=words, max_tokens=8)).usage.output_tokens <= 8
