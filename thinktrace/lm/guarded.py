"""``GuardedLM``: a dspy.LM with thinktrace's retry policy (``thinktrace.lm.guard``), its model's endpoint fleet
(``thinktrace.lm.fleet``: which server each try goes to, the concurrency cap) and the run's budget
(``thinktrace.lm.budget``: every answered call's tokens and cost are counted; no call starts once it is spent).

"""

from __future__ import annotations

import dspy

from thinktrace.errors import EndpointDown
from thinktrace.lm.budget import current_meter
from thinktrace.lm.fleet import Fleet
from thinktrace.lm.guard import Endpoint
from thinktrace.lm.outcome import (CONNECTION, RETRYABLE, TRANSIENT, classify, count_empty, count_retry, forget_finish,
                                   note_finish)


def _empty(outputs) -> bool:
    if not isinstance(outputs, list) or not outputs:
        return False
    for out in outputs:
        text = out.get("text") if isinstance(out, dict) else out
        if isinstance(text, str) and text.strip():
            return False
        if not isinstance(text, (str, type(None))):
            return False
    return True


class GuardedLM(dspy.LM):
    """dspy.LM with thinktrace's retry policy and its endpoints' circuit breakers around every call. Give it
    `endpoint` (one server) or `fleet` (one or more, see thinktrace.lm.fleet)."""

    def __init__(self, *args, endpoint: Endpoint | None = None, fleet: Fleet | None = None, **kwargs):
        super().__init__(*args, num_retries=0, **kwargs)
        if fleet is None:
            if endpoint is None:
                raise TypeError("GuardedLM needs endpoint= or fleet=")
            fleet = Fleet(endpoint.name, [(None, endpoint)])
        self.fleet = fleet
        self.endpoint = fleet.members[0][1]  #: the (first) endpoint's breaker

    def update_history(self, entry):  # runs in the calling thread: the finish reason and the budget's count
        response = entry.get("response") if isinstance(entry, dict) else None
        finish = getattr(response, "finish_reason", None)
        if finish is None and getattr(response, "choices", None):
            finish = getattr(response.choices[0], "finish_reason", None)
        note_finish(str(finish) if finish is not None else None)
        if isinstance(entry, dict):
            current_meter().add(entry, self.model)
        super().update_history(entry)

    def __call__(self, prompt=None, *, messages=None, **kwargs):
        fleet, calls = self.fleet, self.fleet.calls
        meter = current_meter()
        forget_finish()
        retries = {CONNECTION: 0, TRANSIENT: 0}
        empty = 0
        failed: set[int] = set()  # endpoints this call failed on
        open_fail = None  # (endpoint, error): the last try failed there; that endpoint's call ends on a switch
        while True:
            fleet.check()
            meter.check()
            with fleet.slot(failed) as (url, ep):
                if open_fail is not None and open_fail[0] is not ep:
                    open_fail[0].finished(False, open_fail[1])  # tried elsewhere now: a failed call for it
                open_fail = None
                meter.check()
                try:
                    sent = {**kwargs, "api_base": url} if fleet.several else kwargs
                    outputs = super().__call__(prompt, messages=messages, **sent)
                except EndpointDown:
                    raise
                except Exception as err:
                    kind = classify(err)
                    ep.attempt_failed(kind, err)
                    budget = {CONNECTION: calls.connect_retries, TRANSIENT: calls.retries}.get(kind, 0)
                    if kind not in retries or retries[kind] >= budget or fleet.down:
                        ep.finished(False, err)
                        if fleet.down and kind in RETRYABLE:
                            raise fleet.error() from err
                        raise
                    failed.add(id(ep))
                    open_fail = (ep, err)
                    pause = 0.0 if fleet.untried(failed) else ep.backoff(kind, retries[kind], err)
                else:
                    pause = None
            if pause is not None:  # retry: at once on a replica this call has not failed on, else after a backoff
                fleet.wait(pause)
                retries[kind] += 1
                ep.count_retry(kind)
                count_retry()
                continue
            if _empty(outputs) and empty < calls.empty_retries:
                empty += 1
                ep.count_retry("empty")
                kwargs = {**kwargs, "cache": False}
                continue
            if _empty(outputs):
                count_empty()
            ep.finished(True)
            return outputs
