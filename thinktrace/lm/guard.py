"""How LM calls fail, are retried and stop a stage: the one retry policy of every stage (sampling, guideline
scoring, evaluation) and every provider (remote, llama.cpp, `provider: python`).

- ``classify(err)`` (defined in ``thinktrace.lm.outcome``, importable from here) sorts an exception raised by an LM
  call:
  ``connection`` (refused, reset, DNS: the endpoint is not there), ``transient`` (429, 5xx, timeout: try again
  later), ``rejected`` (401/403 or a missing key: fix the setup, then resume) and ``final`` (any other 4xx, an
  unknown model, a request the server refuses, an engine bug: the same call fails the same way again).
- ``GuardedLM`` is a dspy.LM whose every call is retried inside the call, by class: ``transient`` with
  exponential backoff (a ``Retry-After`` hint wins), ``connection`` only ``calls.connect_retries`` times after a
  short pause (a refused connection is not backed off like a 429), ``rejected``/``final`` never. DSPy's own retry
  loop is off (``num_retries=0``) so that there is one policy and its counts are exact. An empty completion is
  asked again without the cache ``calls.empty_retries`` times.
- ``Endpoint`` is the circuit breaker all LMs of one server share: ``calls.down_after`` connection failures in a
  row, a rejected key, or more than ``calls.max_error_rate`` failed calls among the last ``calls.window`` open it;
  from then on every call (and every retry asleep in its backoff) raises ``EndpointDown`` at once, so a stage
  stops within seconds of an outage with everything done so far in its journal.
- A model served by several endpoints (``api_base`` a list) is a ``Fleet`` of breakers (``thinktrace.lm.fleet``):
  each try goes to a live endpoint, a failed try is retried on another one, and calls raise ``EndpointDown``
  only once every endpoint of the fleet is down. ``GuardedLM`` itself is in ``thinktrace.lm.guarded``.

Calls made by one thread are tallied in ``call_tally()`` (retries, empty answers; ``thinktrace.lm.outcome``), so a
journal record can carry the retries spent on it and the counts survive a resume.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from typing import Callable

from pydantic import Field

from thinktrace.config import Section
from thinktrace.errors import EndpointDown
from thinktrace.lm.outcome import (CONNECTION, FINAL, REJECTED, RETRYABLE, TRANSIENT, call_tally,  # noqa: F401
                                   classify, forget_finish, last_finish, one_line, reset_tally)


class CallsConfig(Section):
    """How LM calls are retried, when an endpoint counts as down, and how many failed calls a complete run may
    have. These settings may change between a run and its resume."""

    retries: int = Field(
        4, ge=0, le=20,
        description="Retries inside one call of a transient error (429, 5xx, timeout), with exponential backoff "
        "(a Retry-After hint wins).",
    )
    connect_retries: int = Field(
        1, ge=0, le=10,
        description="Retries inside one call of a refused or reset connection, after `connect_pause_s`.",
    )
    connect_pause_s: float = Field(
        0.2, ge=0.0, le=10.0,
        description="Pause before retrying a refused connection (not backed off: a server that is down stays down).",
    )
    backoff_s: float = Field(
        1.0, ge=0.0, le=60.0,
        description="First backoff of a transient error; doubled per retry, with up to 25 % jitter.",
    )
    max_backoff_s: float = Field(
        30.0, ge=0.0, le=600.0,
        description="Longest single backoff (also caps a server's Retry-After hint).",
    )
    empty_retries: int = Field(
        1, ge=0, le=10,
        description="Times an empty completion is asked again, bypassing the cache; then it is a final failure.",
    )
    down_after: int = Field(
        5, ge=1,
        description="Connection failures in a row (retries included) after which the endpoint is down and the "
        "stage stops.",
    )
    window: int = Field(
        20, ge=2,
        description="Recent calls per endpoint over which `max_error_rate` is measured.",
    )
    max_error_rate: float = Field(
        0.5, gt=0.0, le=1.0,
        description="The stage stops when more than this share of the last `window` calls to one endpoint "
        "failed (after retries).",
    )
    max_failed: float = Field(
        0.05, ge=0.0, le=1.0,
        description="A finished run exits 0 only if, in every stage, final failures (deterministic errors, empty "
        "answers) are at most this share of its calls.",
    )


class Endpoint:
    """The circuit breaker and counters of one server (all LM entries and copies that reach it share one)."""

    def __init__(self, name: str, where: str, calls: CallsConfig):
        self.name, self.where, self.calls = name, where, calls
        self._lock = threading.Lock()
        self._opened = threading.Event()
        self.reason: str | None = None
        self._streak = 0
        self._recent: deque = deque(maxlen=calls.window)
        self.stats = {"calls": 0, "failed": 0, "retries": {CONNECTION: 0, TRANSIENT: 0}, "empty_retries": 0}
        self.listeners: list = []  #: called (no arguments) once the breaker opens: the fleets it belongs to

    def __deepcopy__(self, memo):  # dspy.LM.copy deep-copies the LM: copies share their endpoint
        return self

    def __copy__(self):
        return self

    @property
    def down(self) -> bool:
        return self._opened.is_set()

    def error(self) -> EndpointDown:
        return EndpointDown(self.name, self.where, self.reason or "down")

    def check(self) -> None:
        if self._opened.is_set():
            raise self.error()

    def open(self, reason: str) -> None:
        with self._lock:
            if self._opened.is_set():
                return
            self.reason = reason
            self._opened.set()
        for listener in list(self.listeners):
            listener()

    def attempt_failed(self, kind: str, err: BaseException) -> None:
        """One try failed (before any retry)."""
        with self._lock:
            self._streak = self._streak + 1 if kind == CONNECTION else 0
            streak = self._streak
        if kind == CONNECTION and streak >= self.calls.down_after:
            self.open(f"{streak} connection failures in a row ({one_line(err)})")
        elif kind == REJECTED:
            self.open(f"the endpoint rejected the request's credentials ({one_line(err)})")

    def finished(self, ok: bool, err: BaseException | None = None) -> None:
        """One call ended (after its retries)."""
        with self._lock:
            self.stats["calls"] += 1
            self.stats["failed"] += not ok
            if ok:
                self._streak = 0
            self._recent.append(ok)
            full = len(self._recent) == self._recent.maxlen
            bad = self._recent.count(False)
        if full and bad / len(self._recent) > self.calls.max_error_rate:
            self.open(f"{bad} of the last {len(self._recent)} calls failed" + (f" ({one_line(err)})" if err else ""))

    def count_retry(self, kind: str) -> None:
        with self._lock:
            if kind == "empty":
                self.stats["empty_retries"] += 1
            else:
                self.stats["retries"][kind] += 1

    def wait(self, seconds: float) -> None:
        """Sleep, but wake (and raise EndpointDown) as soon as the breaker opens."""
        if seconds > 0 and self._opened.wait(seconds):
            raise self.error()
        self.check()

    def backoff(self, kind: str, retry: int, err: BaseException) -> float:
        c = self.calls
        if kind == CONNECTION:
            return c.connect_pause_s
        hint = getattr(err, "retry_after", None)
        if isinstance(hint, (int, float)) and hint >= 0:
            return min(float(hint), c.max_backoff_s)
        base = min(c.backoff_s * 2 ** retry, c.max_backoff_s)
        return base * (1 + 0.25 * random.random())


_endpoints: dict[str, Endpoint] = {}
_endpoints_lock = threading.Lock()


def endpoint_for(key: str, name: str, where: str, calls: CallsConfig) -> Endpoint:
    with _endpoints_lock:
        ep = _endpoints.get(key)
        if ep is None or ep.calls is not calls:
            ep = _endpoints[key] = Endpoint(name, where, calls)
        return ep


_on_reset: list[Callable[[], None]] = []


def on_reset(fn: Callable[[], None]) -> Callable[[], None]:
    """Call `fn` whenever the breakers are reset: what is built on them (``thinktrace.lm.fleet``'s fleets) forgets
    them too. Usable as a decorator."""
    _on_reset.append(fn)
    return fn


def reset_endpoints() -> None:
    """Close every breaker and forget the counters (a new run, or a resume, starts fresh)."""
    with _endpoints_lock:
        _endpoints.clear()
    for fn in list(_on_reset):
        fn()


def endpoint_stats() -> dict[str, dict]:
    """Counters per endpoint, keyed by model name (`name @ url` for the servers of a fleet)."""
    with _endpoints_lock:
        eps = list(_endpoints.values())
    names = [ep.name for ep in eps]
    return {(ep.name if names.count(ep.name) == 1 else f"{ep.name} @ {ep.where}"):
            {**ep.stats, "where": ep.where, "down": ep.reason} for ep in eps}
