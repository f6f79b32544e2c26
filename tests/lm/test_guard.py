"""The retry policy and the circuit breaker of thinktrace.lm.guard, on scripted engines (no network)."""

from __future__ import annotations

import threading
import time

import pytest
from dspy import lm15
from dspy.utils import exceptions as ex

from thinktrace.errors import EndpointDown
from thinktrace.journal import answered, begin_call, failed, latest_settled, settled, summary
from thinktrace.lm.guard import CallsConfig, Endpoint
from thinktrace.lm.guarded import GuardedLM
from thinktrace.lm.outcome import CONNECTION, FINAL, REJECTED, TRANSIENT, call_tally, classify
from thinktrace.lm.scripted import ScriptedEngine


class Script(ScriptedEngine):
    """Raises the queued exceptions (or returns queued strings) one per call, then answers 'ok'."""

    def __init__(self, *queue):
        super().__init__(self._next)
        self.queue = list(queue)

    def _next(self, inputs, request):
        if self.queue:
            item = self.queue.pop(0)
            if isinstance(item, BaseException):
                raise item
            return item
        return "ok"


def guarded(engine, **calls) -> GuardedLM:
    cfg = CallsConfig(**{"backoff_s": 0.0, "connect_pause_s": 0.0, **calls})
    return GuardedLM("local/t", engine=engine, cache=False, endpoint=Endpoint("t", "here", cfg))


@pytest.mark.parametrize("err, kind", [
    (ex.LMTransportError("refused"), CONNECTION),
    (ex.LMRateLimitError("slow down"), TRANSIENT),
    (ex.LMServerError("503"), TRANSIENT),
    (ex.LMTimeoutError("late"), TRANSIENT),
    (ex.LMAuthError("bad key"), REJECTED),
    (ex.LMInvalidRequestError("400"), FINAL),
    (ex.LMUnsupportedModelError("no such model"), FINAL),
    (ex.ContextWindowExceededError(), FINAL),
    (RuntimeError("engine bug"), FINAL),
    (ConnectionRefusedError(111, "refused"), CONNECTION),
    (TimeoutError("late"), TRANSIENT),
])
def test_classify(err, kind):
    assert classify(err) == kind


def test_classify_looks_under_an_unexpected_error():
    wrapped = ex.LMUnexpectedError("engine failed")
    wrapped.__cause__ = TimeoutError("read timed out")
    assert classify(wrapped) == TRANSIENT


def test_transient_errors_are_retried_inside_the_call_and_counted():
    engine = Script(lm15.ServerError("503", status=503), lm15.RateLimitError("429", status=429))
    lm = guarded(engine)
    begin_call()
    assert lm("hi") == ["ok"]
    assert engine.calls == 3 and call_tally()["retries"] == 2
    assert lm.endpoint.stats["retries"][TRANSIENT] == 2


def test_retry_budget_then_the_error_is_raised():
    engine = Script(*[lm15.ServerError("503", status=503)] * 5)
    with pytest.raises(ex.LMServerError):
        guarded(engine, retries=2)("hi")
    assert engine.calls == 3


def test_final_errors_are_not_retried():
    engine = Script(lm15.InvalidRequestError("400", status=400))
    with pytest.raises(ex.LMInvalidRequestError):
        guarded(engine)("hi")
    assert engine.calls == 1


def test_retry_after_is_honoured_and_capped():
    ep = Endpoint("t", "here", CallsConfig(backoff_s=1.0, max_backoff_s=5.0))
    assert ep.backoff(TRANSIENT, 0, ex.LMRateLimitError("429", retry_after=2.5)) == 2.5
    assert ep.backoff(TRANSIENT, 0, ex.LMRateLimitError("429", retry_after=900)) == 5.0
    assert 4.0 <= ep.backoff(TRANSIENT, 2, ex.LMServerError("503")) <= 5.0  # 1 * 2^2 plus jitter, capped
    assert ep.backoff(CONNECTION, 3, ex.LMTransportError("x")) == ep.calls.connect_pause_s  # not backed off


def test_refused_connections_in_a_row_open_the_breaker():
    engine = Script(*[lm15.TransportError("refused")] * 10)
    lm = guarded(engine, connect_retries=1, down_after=4)
    with pytest.raises(ex.LMTransportError):
        lm("a")  # 2 refusals: the call fails, the endpoint is not down yet
    with pytest.raises(EndpointDown) as info:
        lm("b")  # 2 more: 4 in a row
    assert "4 connection failures in a row" in str(info.value) and "here" in str(info.value)
    calls = engine.calls
    with pytest.raises(EndpointDown):
        lm("c")
    assert engine.calls == calls  # an open breaker sends nothing


def test_a_success_resets_the_streak():
    engine = Script(lm15.TransportError("x"), "ok", lm15.TransportError("x"), "ok")
    lm = guarded(engine, connect_retries=0, down_after=2)
    with pytest.raises(ex.LMTransportError):
        lm("a")
    assert lm("b") == ["ok"]
    with pytest.raises(ex.LMTransportError):
        lm("c")
    assert not lm.endpoint.down


def test_error_rate_window_opens_the_breaker():
    engine = Script(*[lm15.InvalidRequestError("400", status=400)] * 3)
    lm = guarded(engine, window=4, max_error_rate=0.5)
    for _ in range(3):
        try:
            lm("x")
        except (ex.LMInvalidRequestError, EndpointDown):
            pass
    assert lm("y") == ["ok"]
    assert lm.endpoint.down and "3 of the last 4 calls failed" in lm.endpoint.reason


def test_rejected_credentials_stop_at_once():
    engine = Script(lm15.AuthError("401 bad key", status=401))
    lm = guarded(engine)
    with pytest.raises(EndpointDown, match="rejected"):
        lm("x")
    assert engine.calls == 1


def test_an_open_breaker_wakes_a_call_asleep_in_its_backoff():
    engine = Script(lm15.ServerError("503", status=503))
    lm = guarded(engine, backoff_s=30.0, max_backoff_s=30.0)
    caught = []

    def call():
        try:
            lm("x")
        except EndpointDown as err:
            caught.append(err)

    t = threading.Thread(target=call)
    start = time.monotonic()
    t.start()
    time.sleep(0.2)
    lm.endpoint.open("test")
    t.join(5)
    assert caught and time.monotonic() - start < 5


def test_an_empty_answer_is_asked_again_without_cache_then_final():
    engine = Script("", "", "")
    lm = guarded(engine, empty_retries=1)
    begin_call()
    assert lm("x") == [""]
    assert engine.calls == 2 and call_tally()["empty"] == 1
    record = answered({"label": None, "rationale": None})
    assert record["error"].startswith("EmptyAnswer") and record["error_kind"] == FINAL and settled(record)
    engine2 = Script("", "fine")
    begin_call()
    assert guarded(engine2)("x") == ["fine"] and call_tally()["empty"] == 0


def test_journal_settles_answers_and_final_failures_only():
    rows = [failed({"k": 1}, ex.LMTransportError("refused")),
            {"k": 1, "error": None, "label": "a"},
            failed({"k": 2}, ex.LMInvalidRequestError("400")),
            failed({"k": 3}, ex.LMServerError("503")),
            {"k": 4, "error": "RuntimeError: from an old run"}]  # before error_kind existed: settled
    assert [settled(r) for r in rows] == [False, True, True, False, True]
    done = latest_settled(rows, lambda r: r["k"])
    assert set(done) == {1, 2, 4}
    s = summary(rows, lambda r: r["k"])
    assert (s["units"], s["settled"], s["pending"], s["final_failures"], s["retryable_failures"]) == (4, 3, 1, 2, 2)
    assert s["retryable_by_kind"] == {CONNECTION: 1, TRANSIENT: 1}


def test_copies_share_the_endpoint():
    lm = guarded(Script())
    assert lm.copy(temperature=0.5).endpoint is lm.endpoint
