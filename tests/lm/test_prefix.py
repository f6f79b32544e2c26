"""Shared prefixes across llama.cpp slots (llama.share_prefix): the slot table's choices (no llama.cpp), then on a
tiny random model: the same answers with and without it, and a shared prefix computed once then restored."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from dspy.lm15 import Config, Message, Request

from thinktrace.lm.prefix import SlotTable, common_prefix

PREFIX = list(range(1000, 1400))  # 400 shared tokens


def table(n=4, min_gain=128):
    return SlotTable(n, threading.Condition(), min_gain=min_gain)


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2 and common_prefix([], [1]) == 0 and common_prefix((1,), [1]) == 1


def test_a_shared_prefix_is_computed_once_then_copied_to_other_slots():
    t = table()
    with t.cond:
        first = t.acquire((), PREFIX + [1])
    assert first.restore is None
    got = []

    def second(suffix):
        with t.cond:
            got.append(t.acquire((), PREFIX + [suffix]))

    waiters = [threading.Thread(target=second, args=(s,)) for s in (2, 3)]
    for w in waiters:
        w.start()
    time.sleep(0.2)
    assert not got  # both wait for the slot computing their prefix instead of computing it in parallel
    with t.cond:
        assert t.release(first.slot) is True  # somebody wants it: the caller saves it, the slot stays busy
        t.saved(first.slot, "slot0.bin")
    for w in waiters:
        w.join(5)
    assert len(got) == 2
    same = [p for p in got if p.slot == first.slot]
    other = [p for p in got if p.slot != first.slot]
    assert len(same) == 1 and same[0].restore is None  # one takes the slot that holds the prefix
    assert len(other) == 1 and other[0].restore.filename == "slot0.bin"  # the other gets a copy of it
    assert t.stats["restored"] == 1 and t.stats["saved"] == 1 and t.stats["waited"] == 2


def test_no_waiting_for_a_short_common_prefix_or_another_adapter():
    t = table()
    with t.cond:
        a = t.acquire((), PREFIX + [1])
        b = t.acquire((), PREFIX[:50] + [9] * 300)  # shares 50 tokens < min_gain: runs at once, elsewhere
        c = t.acquire(((0, 1.0),), PREFIX + [2])  # same tokens under a LoRA adapter: another KV cache
    assert len({a.slot, b.slot, c.slot}) == 3 and not any(p.restore for p in (a, b, c))
    assert t.stats["waited"] == 0


def test_an_idle_slot_holding_the_prefix_is_preferred_and_a_failure_frees_waiters():
    t = table(n=2)
    with t.cond:
        a = t.acquire((), PREFIX + [1])
        assert t.release(a.slot) is False  # nobody waited: no save
        again = t.acquire((), PREFIX + [2])
    assert again.slot == a.slot and again.restore is None
    got = []
    waiter = threading.Thread(target=lambda: got.append(_acquire(t, PREFIX + [3])))
    waiter.start()
    time.sleep(0.2)
    assert not got
    with t.cond:
        assert t.release(again.slot, ok=False) is False  # it failed: nothing to copy, the waiter computes itself
    waiter.join(5)
    assert got and got[0].restore is None


def _acquire(t, ids):
    with t.cond:
        return t.acquire((), ids)


def test_every_slot_busy_waits_for_a_free_one():
    t = table(n=1)
    with t.cond:
        a = t.acquire((), [1, 2, 3])
    got = []
    waiter = threading.Thread(target=lambda: got.append(_acquire(t, [7, 8, 9])))
    waiter.start()
    time.sleep(0.1)
    assert not got
    with t.cond:
        t.release(a.slot)
    waiter.join(5)
    assert got and got[0].slot == 0


# -- on llama.cpp (a tiny random LLaMA, converted by the test) -------------------------------------------------------
def _requests():
    shared = "Rate the word. " + "context " * 40  # a prefix every request shares (> min_gain tokens)
    return [Request(model="local/tiny", system=shared, messages=(Message.user(f"word {w}"),),
                    config=Config(max_tokens=6, temperature=0.0)) for w in ("alpha", "beta", "gamma", "delta",
                                                                            "eps", "zeta", "eta", "theta")]


def _answers(tiny_model_dir, share: bool):
    from thinktrace.lm import ModelConfig
    from thinktrace.lm.factory import clear_engines, get_engine

    clear_engines()
    engine = get_engine(ModelConfig(name="tiny", model=str(tiny_model_dir),
                                    llama={"threads": 1, "slots": 4, "context": 512, "share_prefix": share}))
    try:
        with ThreadPoolExecutor(4) as pool:
            texts = list(pool.map(lambda r: engine.complete(r).message.text, _requests()))
        return texts, dict(engine.server.stats())
    finally:
        clear_engines()


@pytest.fixture(scope="module")
def both(tiny_model_dir):
    return _answers(tiny_model_dir, False), _answers(tiny_model_dir, True)


def test_the_same_answers_with_and_without_shared_prefixes(both):
    (plain, _), (shared, _) = both
    assert plain == shared and all(plain)


def test_the_shared_prefix_is_restored_not_recomputed(both):
    (_, plain), (_, shared) = both
    assert plain["slot_saves"] == plain["slot_restores"] == 0
    assert shared["slot_saves"] >= 1 and shared["slot_restores"] >= 1
    assert shared["input_tokens"] == plain["input_tokens"]
    assert shared["cached_tokens"] > plain["cached_tokens"]  # the copies count as cached prompt tokens
