"""How one LM call ended, shared by the retry policy (``thinktrace.lm.guard``, ``thinktrace.lm.guarded``) and the
journal records of every stage (``thinktrace.journal``). A leaf module: it imports nothing else of thinktrace's LM
layer, so both sides may import it.

- the failure kinds and ``classify(err)``: ``connection`` (refused, reset, DNS: the endpoint is not there),
  ``transient`` (429, 5xx, timeout: try again later), ``rejected`` (401/403 or a missing key: fix the setup, then
  resume) and ``final`` (any other 4xx, an unknown model, a request the server refuses, an engine bug: the same call
  fails the same way again). ``one_line(err)``: the error as a journal record writes it.
- the per-thread tally of what the guard did for the record this thread is making (in-call retries, empty answers
  given up on, the last answer's finish reason), so a journal record can carry the retries spent on it and the
  counts survive a resume.
"""

from __future__ import annotations

import threading

from thinktrace.errors import EndpointDown

#: how a call failed: the endpoint is not there / try later / fix the credentials, then resume / the same call
#: fails the same way again
CONNECTION, TRANSIENT, REJECTED, FINAL = "connection", "transient", "rejected", "final"
#: failures whose journal records are not results: the call is made again on resume
RETRYABLE = (CONNECTION, TRANSIENT, REJECTED)


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def classify(err: BaseException) -> str:
    """connection | transient | rejected | final (see the module doc)."""
    from dspy.utils import exceptions as ex

    if isinstance(err, EndpointDown):
        return CONNECTION
    if isinstance(err, ex.LMTransportError):
        return CONNECTION
    if isinstance(err, (ex.LMRateLimitError, ex.LMTimeoutError, ex.LMServerError, ex.LMLockTimeoutError)):
        return TRANSIENT
    if isinstance(err, (ex.LMAuthError, ex.LMBillingError, ex.LMNotConfiguredError)):
        return REJECTED
    for e in _chain(err):  # engines of our own and plain HTTP clients: look at what was raised underneath
        status = getattr(e, "status", None) or getattr(e, "status_code", None)
        if isinstance(status, int):
            if status == 429 or status >= 500 or status == 408:
                return TRANSIENT
            if status in (401, 403):
                return REJECTED
            if 400 <= status < 500:
                return FINAL
        if isinstance(e, (TimeoutError,)) or type(e).__name__ in ("Timeout", "ReadTimeout", "ConnectTimeout"):
            return TRANSIENT
        if isinstance(e, ConnectionError) or type(e).__name__ in ("ConnectError", "RemoteProtocolError",
                                                                   "ReadError", "APIConnectionError"):
            return CONNECTION
    return FINAL


def one_line(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}"[:300]


# -- per-thread tally of what the guard did for the record being made ------------------------------------------
_tally = threading.local()


def reset_tally() -> None:
    _tally.retries = 0
    _tally.empty = 0


def call_tally() -> dict:
    """{"retries": in-call retries, "empty": empty completions given up on} since this thread's last reset."""
    return {"retries": getattr(_tally, "retries", 0), "empty": getattr(_tally, "empty", 0)}


def count_retry() -> None:
    """The guard retried a call inside it."""
    _tally.retries = getattr(_tally, "retries", 0) + 1


def count_empty() -> None:
    """The guard gave up on an empty completion."""
    _tally.empty = getattr(_tally, "empty", 0) + 1


def note_finish(finish: str | None) -> None:
    """Record the finish reason of this thread's last answered LM call."""
    _tally.finish = finish


def last_finish() -> str | None:
    """Finish reason of this thread's last answered LM call ("stop", "length", ...; None when unknown)."""
    return getattr(_tally, "finish", None)


def forget_finish() -> None:
    _tally.finish = None
