"""Fleets, the concurrency cap and the budget meter of thinktrace.lm (scripted engines and spec checks; the
tests against real HTTP servers are tests/test_fleet_http.py)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from support.specs import toy_spec, write_spec

from thinktrace.errors import BudgetReached, EndpointDown, SpecError
from thinktrace.lm.budget import BudgetConfig, Meter, start_budget
from thinktrace.lm.config import ModelConfig, without_resumable_model_fields
from thinktrace.lm.fleet import Fleet
from thinktrace.lm.guard import CallsConfig, Endpoint
from thinktrace.lm.guarded import GuardedLM
from thinktrace.lm.scripted import ScriptedEngine
from thinktrace.spec import load_spec


class Slow(ScriptedEngine):
    """Answers after a pause and records the most calls it ever had in flight."""

    def __init__(self):
        super().__init__(self._rule)
        self.inflight = self.most = 0
        self.mu = threading.Lock()

    def _rule(self, inputs, request):
        with self.mu:
            self.inflight += 1
            self.most = max(self.most, self.inflight)
        time.sleep(0.02)
        with self.mu:
            self.inflight -= 1
        return "ok"


def test_max_concurrency_caps_calls_in_flight_over_copies_and_threads():
    engine = Slow()
    ep = Endpoint("m", "here", CallsConfig())
    lm = GuardedLM("local/m", engine=engine, cache=False, fleet=Fleet("m", [(None, ep)], max_concurrency=2))
    copies = [lm.copy(temperature=0.5, rollout_id=i) for i in range(3)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: copies[i % 3](f"q {i}"), range(24)))
    assert engine.calls == 24 and engine.most == 2
    assert all(c.fleet is lm.fleet for c in copies)


def test_fleet_is_down_only_when_every_endpoint_is():
    calls = CallsConfig()
    a, b = Endpoint("m", "http://a", calls), Endpoint("m", "http://b", calls)
    fleet = Fleet("m", [("http://a", a), ("http://b", b)])
    a.open("gone")
    fleet.check()  # one down: the fleet still answers
    with fleet.slot() as (url, ep):
        assert url == "http://b"
    b.open("gone too")
    with pytest.raises(EndpointDown, match="all 2 endpoints down"):
        fleet.check()


def test_picks_the_least_busy_endpoint_and_avoids_the_one_that_failed():
    calls = CallsConfig()
    a, b = Endpoint("m", "http://a", calls), Endpoint("m", "http://b", calls)
    fleet = Fleet("m", [("http://a", a), ("http://b", b)])
    with fleet.slot() as first, fleet.slot() as second:
        assert {first[0], second[0]} == {"http://a", "http://b"}
    with fleet.slot(failed={id(a)}) as (url, _):
        assert url == "http://b"
    with fleet.slot(failed={id(a), id(b)}) as (url, _):  # every one failed this call: any live one
        assert url in ("http://a", "http://b")


def test_a_sleeping_retry_wakes_when_the_whole_fleet_goes_down():
    calls = CallsConfig()
    a, b = Endpoint("m", "http://a", calls), Endpoint("m", "http://b", calls)
    fleet = Fleet("m", [("http://a", a), ("http://b", b)])
    a.open("gone")
    threading.Timer(0.05, lambda: b.open("gone")).start()
    start = time.monotonic()
    with pytest.raises(EndpointDown):
        fleet.wait(10)
    assert time.monotonic() - start < 2


def test_meter_counts_answered_calls_not_cache_hits_and_stops_at_the_limit(tmp_path):
    meter = Meter(BudgetConfig(max_tokens=40), tmp_path / "usage.json")
    meter.add({"usage": {"prompt_tokens": 10, "completion_tokens": 5}, "cost": 1e-5}, "openai/gpt-4o-mini")
    meter.add({"usage": {}, "cost": 1e-5}, "openai/gpt-4o-mini")  # a cache hit: no usage, nothing spent
    meter.add({"usage": {"prompt_tokens": 10, "completion_tokens": 5}, "cost": None}, "openai/judge-1")
    assert meter.spent["calls"] == 2 and meter.tokens == 30 and meter.spent["unpriced_calls"] == 1
    assert meter.spent["usd"] == pytest.approx(1e-5)
    meter.check()
    meter.add({"usage": {"prompt_tokens": 10, "completion_tokens": 0}, "cost": None}, "local/smollm2")
    with pytest.raises(BudgetReached, match="40 tokens spent, budget.max_tokens is 40"):
        meter.check()
    # the run folder keeps the count: a resume starts from it
    again = start_budget(BudgetConfig(max_tokens=1000), tmp_path / "usage.json")
    assert again.tokens == 40 and again.spent["unpriced_calls"] == 1
    again.check()
    start_budget(None, None)


def test_meter_prices_with_litellm_when_dspy_gave_no_cost():
    meter = Meter()
    meter.add({"usage": {"prompt_tokens": 1000, "completion_tokens": 100}}, "openai/gpt-4o-mini")
    assert meter.spent["usd"] == pytest.approx(1000 * 0.15e-6 + 100 * 0.6e-6)


def test_budget_reached_stops_a_call_before_it_is_sent(tmp_path):
    engine = ScriptedEngine(lambda inputs, request: "an answer of four tokens")
    lm = GuardedLM("local/m", engine=engine, cache=False, endpoint=Endpoint("m", "here", CallsConfig()))
    start_budget(BudgetConfig(max_tokens=1), tmp_path / "usage.json")
    try:
        lm("first")  # counted after it is answered
        with pytest.raises(BudgetReached):
            lm("second")
        assert engine.calls == 1
    finally:
        start_budget(None, None)


@pytest.mark.parametrize("api_base, message", [
    ([], "non-empty list"),
    (["http://a:1/v1", "ftp://b/v1"], "http(s) URL"),
    (["http://a:1/v1", "http://a:1/v1"], "lists a URL twice"),
])
def test_bad_fleets_name_the_field(tmp_path, api_base, message):
    spec = toy_spec(**{"models.raters": [{"name": "r", "provider": "openai", "model": "m", "api_base": api_base}]})
    with pytest.raises(SpecError) as err:
        load_spec(write_spec(tmp_path, spec))
    assert "models.raters.0.api_base" in str(err.value) and message in str(err.value)
    assert str(tmp_path / "spec.yaml") in str(err.value)


def test_one_url_list_is_a_url_and_api_bases_lists_them():
    assert ModelConfig(provider="openai", model="m", api_base=["http://a/v1"]).api_base == "http://a/v1"
    cfg = ModelConfig(provider="openai", model="m", api_base=["http://a/v1", "http://b/v1"], max_concurrency=8)
    assert cfg.api_bases == ["http://a/v1", "http://b/v1"]


def test_fleet_concurrency_and_llama_serving_may_change_on_resume_the_model_may_not():
    spec = yaml.safe_load(yaml.safe_dump(toy_spec()))
    rater = {"name": "r", "provider": "openai", "model": "m", "api_base": "http://a/v1"}
    one = {**spec, "models": {"raters": [rater]}}
    two = {**spec, "models": {"raters": [{**rater, "api_base": ["http://a/v1", "http://b/v1"],
                                          "max_concurrency": 4}]}}
    other = {**spec, "models": {"raters": [{**rater, "model": "m2"}]}}
    assert without_resumable_model_fields(one) == without_resumable_model_fields(two)
    assert without_resumable_model_fields(one) != without_resumable_model_fields(other)
    local = {"name": "l", "provider": "local", "model": "smollm2-135m", "llama": {"context": 1024}}
    bigger = {**local, "llama": {"context": 2048, "slots": 2}}  # e.g. after a prompt did not fit a slot
    assert without_resumable_model_fields({**spec, "models": {"raters": [local]}}) == \
        without_resumable_model_fields({**spec, "models": {"raters": [bigger]}})
    assert without_resumable_model_fields({**spec, "models": {"raters": [local]}}) != \
        without_resumable_model_fields({**spec, "models": {"raters": [{**local, "max_tokens": 9}]}})
