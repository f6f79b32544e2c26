"""The batching engine on a tiny random checkpoint: batched == unbatched, per-request parameters, failures."""

from __future__ import annotations

import threading

import dspy
import pytest
from dspy.lm15 import Config, Message, Request

from thinktrace.lm import BatchingEngine, TransformersEngine
from thinktrace.lm.local_engine import DecodeBatch, PrefixCache, Row, SamplingParams

PROMPTS = ["rate this item", "the quick brown fox", "a rater reads the guideline", "label: positive", "0 1 2 3",
           "rate this item"]  # a repeated prompt shares its prefill


def req(text, **config) -> Request:
    return Request(model="local/tiny", messages=(Message.user(text),), system="you are a rater",
                   config=Config(**config))


def concurrently(engine, requests):
    """Send all requests from separate threads at once (as dspy.Parallel does); results in order."""
    out: list = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def run(i):
        start.wait()
        out[i] = engine.complete(requests[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return out


@pytest.fixture(scope="module")
def single(tiny_model_dir):
    return TransformersEngine(str(tiny_model_dir), prefix_cache_tokens=0)


@pytest.fixture()
def batching(tiny_model_dir, single):
    engine = BatchingEngine(str(tiny_model_dir), max_batch_size=8, batch_window_s=0.05)
    engine._loaded = single.load()  # share the weights; the engine's own state stays separate
    yield engine
    engine.close()


def test_batched_greedy_equals_unbatched(single, batching):
    requests = [req(p, max_tokens=4 + 3 * i) for i, p in enumerate(PROMPTS)]  # rows leave at different steps
    alone = [single.complete(r) for r in requests]
    together = concurrently(batching, requests)
    assert [r.text for r in together] == [r.text for r in alone]
    assert [r.usage.output_tokens for r in together] == [r.usage.output_tokens for r in alone]
    assert [r.finish_reason for r in together] == [r.finish_reason for r in alone]
    stats = batching.stats()
    assert stats["max_rows"] > 1 and stats["mean_rows"] > 1  # it really batched
    assert stats["prefix_hit_tokens"] > 0  # the shared system prompt / repeated prompt were not prefilled again


def test_per_request_parameters_are_honoured(single, batching):
    requests = [
        req("rate this item", max_tokens=3),
        req("rate this item", max_tokens=9, temperature=1.0, seed=11),
        req("rate this item", max_tokens=9, temperature=1.0, seed=12),
        req("rate this item", max_tokens=9, temperature=0.8, top_p=0.5, top_k=5, seed=11),
        req("the quick brown fox", max_tokens=12),
    ]
    together = concurrently(batching, requests)
    alone = [single.complete(r) for r in requests]
    assert [r.text for r in together] == [r.text for r in alone]  # seeds: same sample batched or alone
    assert together[0].usage.output_tokens == 3 and together[0].finish_reason == "length"
    assert together[1].text != together[2].text  # different seeds, same prompt
    # a stop string taken from the greedy text cuts it there
    full = together[4].text
    stop = full[2:4]
    cut = batching.complete(req("the quick brown fox", max_tokens=12, stop=(stop,)))
    assert cut.text == full[: full.find(stop)] and cut.finish_reason == "stop"


def test_joining_mid_batch_equals_alone(single, batching):
    """A request arriving while a batch decodes joins it at the next step."""
    long = req("the quick brown fox", max_tokens=40)
    late = req("label: positive", max_tokens=6, temperature=1.0, seed=3)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("long", batching.complete(long)))
    t.start()
    import time

    deadline = time.monotonic() + 30
    while batching.stats()["steps"] < 2 and time.monotonic() < deadline:  # the long one is decoding
        time.sleep(0.001)
    box["late"] = batching.complete(late)
    t.join()
    assert box["long"].text == single.complete(long).text
    assert box["late"].text == single.complete(late).text


def test_through_dspy_lm_from_threads(batching):
    lm = dspy.LM("local/tiny", engine=batching, temperature=0.0, max_tokens=5, cache=False)
    results = [None] * len(PROMPTS)

    def call(i):
        results[i] = lm(PROMPTS[i])[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(PROMPTS))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results[0] == results[-1] and all(isinstance(r, str) for r in results)
    assert sum(h["usage"]["completion_tokens"] for h in lm.history) == batching.stats()["output_tokens"]


def test_adapter_under_batching(tiny_model_dir, tiny_adapter_dir):
    tuned_alone = TransformersEngine(str(tiny_model_dir), adapter_path=str(tiny_adapter_dir))
    tuned = BatchingEngine(str(tiny_model_dir), adapter_path=str(tiny_adapter_dir), batch_window_s=0.05)
    requests = [req(p, max_tokens=6) for p in PROMPTS[:3]]
    assert [r.text for r in concurrently(tuned, requests)] == [tuned_alone.complete(r).text for r in requests]
    tuned.close()


def test_a_failing_batch_fails_its_callers_and_the_engine_recovers(batching, monkeypatch):
    calls = {"n": 0}
    real_step = DecodeBatch.step

    def broken_step(self):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real_step(self)

    monkeypatch.setattr(DecodeBatch, "step", broken_step)
    with pytest.raises(RuntimeError, match="boom"):
        batching.complete(req("rate this item", max_tokens=5))
    assert batching.complete(req("rate this item", max_tokens=5)).usage.output_tokens >= 1


def test_prefix_cache_reuse_and_eviction():
    cache = PrefixCache(max_tokens=10)
    cache.put([1, 2, 3, 4], "kv-a")
    cache.put([1, 2, 9], "kv-b")
    assert cache.longest([1, 2, 3, 4, 5]) == (4, "kv-a")
    assert cache.longest([1, 2, 3, 4]) == (3, "kv-a")  # the last token is always recomputed
    assert cache.longest([7]) == (0, None)
    cache.put([5, 6, 7, 8, 9], "kv-c")  # 12 tokens > 10: the least recently used entry goes
    assert len(cache) == 2


def test_row_seeds_are_independent_of_the_global_rng():
    import torch

    params = SamplingParams(max_tokens=4, temperature=1.0, seed=42)
    torch.manual_seed(0)
    a = torch.rand(5, generator=Row([1], params).generator)
    torch.manual_seed(1)
    b = torch.rand(5, generator=Row([1], params).generator)
    assert torch.equal(a, b)
    assert Row([1], SamplingParams()).generator is None  # greedy rows draw nothing


def test_choice_scores_match_a_full_forward_and_run_beside_generation(single, batching):
    from thinktrace.lm.choices import CHOICES_KEY, score_choices

    messages = [{"role": "system", "content": "you are a rater"}, {"role": "user", "content": "rate this item"},
                {"role": "assistant", "content": "Rationale: fine\nLabel:"}]
    choices = ["-1", "0", "1", "positive", "neutral answer"]
    lm = single.load()
    reference = score_choices(lm, messages, choices)
    fast = DecodeBatch(lm, PrefixCache(4096)).score(lm.encode(messages), choices)
    assert fast == pytest.approx(reference, abs=1e-3)
    request = Request(model="local/tiny", system="you are a rater",
                      messages=(Message.user("rate this item"), Message.assistant("Rationale: fine\nLabel:")),
                      config=Config(extensions={"metadata": {CHOICES_KEY: choices}}))
    answers = concurrently(batching, [request, req("the quick brown fox", max_tokens=20), request])
    best = choices[reference.index(max(reference))]
    assert answers[0].text == answers[2].text == best
    assert answers[1].usage.output_tokens >= 1
