"""Endpoint fleets: one model served by several OpenAI-compatible servers (for example one vLLM replica per GPU),
and the per-model concurrency cap.

A ``Fleet`` is the list of ``Endpoint`` circuit breakers (``thinktrace.lm.guard``) of one model entry, one per
URL of its ``api_base``, plus a semaphore for ``max_concurrency``. ``GuardedLM`` asks it, for every try of a
call, which endpoint to send to (``pick``): an endpoint whose breaker is closed, the least busy one (fewest
requests in flight, then fewest sent), and not one that already failed this call while another is left. So
requests spread over the replicas, a request that failed on one replica is retried on another at once (the
backoff only starts once every live replica has failed it), a replica that goes down takes no more traffic, and
**the fleet is down only when all its endpoints are**: only then does a call raise ``EndpointDown`` and the
stage stop (exit 3, resumable). A one-URL model is a fleet of one and behaves exactly as before.

Why not LiteLLM's Router for the picking: DSPy 3.4 sends OpenAI-compatible calls through its own engine, and a
Router call owns the whole request (its own client, its own retries and cooldowns), so the per-endpoint breaker,
the retry counts in the journal and DSPy's cache and usage records would all be bypassed; its synchronous path
re-picks a failed request at random (it may land on the replica that just failed it; weighted failover is async
only). What is used from LiteLLM: the error classes DSPy maps its failures to (``classify``), and the price map
for budgets and dry-run estimates (``thinktrace.lm.budget``, ``thinktrace.lm.estimate``).

Serving a fine-tuned LoRA adapter on a fleet: start every vLLM replica with the adapter registered, e.g.
``vllm serve BASE --enable-lora --lora-modules trace-sft=/path/to/adapter --port 8001`` (one per GPU), and name
the adapter as the model: ``{provider: hosted_vllm, model: trace-sft, api_base: [http://gpu0:8001/v1,
http://gpu1:8001/v1]}``. vLLM applies the adapter per request, so the base and its adapters share one fleet.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from thinktrace.errors import EndpointDown
from thinktrace.lm.guard import CallsConfig, Endpoint, endpoint_for, on_reset


class Fleet:
    """The endpoints (``(url, Endpoint)``; url None for a local or custom engine) of one model and its cap on
    requests in flight. Shared by every copy of the model's LM (``dspy.LM.copy`` deep-copies: copies keep it)."""

    def __init__(self, name: str, members: list[tuple[str | None, Endpoint]], max_concurrency: int | None = None):
        if not members:
            raise ValueError("a fleet needs at least one endpoint")
        self.name, self.members = name, members
        self.calls: CallsConfig = members[0][1].calls
        self._cap = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None
        self.max_concurrency = max_concurrency
        self._lock = threading.Lock()
        self._inflight = {id(ep): 0 for _, ep in members}
        self._sent = {id(ep): 0 for _, ep in members}
        self._all_down = threading.Event()
        for _, ep in members:
            ep.listeners.append(self._member_opened)
            if ep.down:
                self._member_opened()

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    @property
    def several(self) -> bool:
        return len(self.members) > 1

    @property
    def down(self) -> bool:
        return self._all_down.is_set()

    def _member_opened(self) -> None:
        if all(ep.down for _, ep in self.members):
            self._all_down.set()

    def error(self) -> EndpointDown:
        if not self.several:
            return self.members[0][1].error()
        reasons = "; ".join(f"{url}: {ep.reason}" for url, ep in self.members)
        return EndpointDown(self.name, "fleet " + ", ".join(str(u) for u, _ in self.members),
                            f"all {len(self.members)} endpoints down ({reasons})")

    def check(self) -> None:
        if self._all_down.is_set():
            raise self.error()

    def wait(self, seconds: float) -> None:
        """Sleep (a backoff), but wake and raise EndpointDown as soon as every endpoint is down."""
        if seconds > 0 and self._all_down.wait(seconds):
            raise self.error()
        self.check()

    def untried(self, failed: set[int]) -> bool:
        """Whether a live endpoint is left that has not failed this call (ids in `failed`)."""
        return any(not ep.down and id(ep) not in failed for _, ep in self.members)

    @contextmanager
    def slot(self, failed: set[int] = frozenset()):
        """Hold one of the model's `max_concurrency` slots and one request in flight on the endpoint picked for
        this try; yields (url, endpoint)."""
        if self._cap is not None:
            self._cap.acquire()
        try:
            self.check()
            url, ep = self._pick(failed)
            try:
                yield url, ep
            finally:
                with self._lock:
                    self._inflight[id(ep)] -= 1
        finally:
            if self._cap is not None:
                self._cap.release()

    def _pick(self, failed: set[int]) -> tuple[str | None, Endpoint]:
        with self._lock:
            live = [(u, ep) for u, ep in self.members if not ep.down] or self.members
            fresh = [(u, ep) for u, ep in live if id(ep) not in failed] or live
            url, ep = min(fresh, key=lambda m: (self._inflight[id(m[1])], self._sent[id(m[1])]))
            self._inflight[id(ep)] += 1
            self._sent[id(ep)] += 1
            return url, ep

    def stats(self) -> dict[str, int]:
        """Requests sent per endpoint URL (every try, retries included)."""
        with self._lock:
            return {str(u): self._sent[id(ep)] for u, ep in self.members}


_fleets: dict[str, Fleet] = {}
_fleets_lock = threading.Lock()


def fleet_of(cfg, calls: CallsConfig) -> Fleet:
    """The fleet of a model entry: one shared ``Endpoint`` breaker per server, the same ``Fleet`` for every LM
    built from an entry with the same provider, model, endpoints and cap."""
    if cfg.is_local or cfg.provider == "python":
        urls: list[str | None] = [None]
        keys = [f"{cfg.provider}/{cfg.model}"]
        wheres = keys
    else:
        urls = list(cfg.api_bases) or [None]
        keys = [f"{cfg.provider}|{u or ''}|{cfg.model}" for u in urls]
        wheres = [u or f"{cfg.provider} API" for u in urls]
    members = [(u, endpoint_for(k, cfg.name, w, calls)) for u, k, w in zip(urls, keys, wheres)]
    key = f"{cfg.name}|{'|'.join(keys)}|{cfg.max_concurrency}"
    with _fleets_lock:
        fleet = _fleets.get(key)
        if fleet is None or fleet.calls is not calls or any(a is not b for (_, a), (_, b) in
                                                             zip(fleet.members, members)):
            fleet = _fleets[key] = Fleet(cfg.name, members, cfg.max_concurrency)
        return fleet


@on_reset  # thinktrace.lm.guard.reset_endpoints: fleets are built on the breakers it forgets
def reset_fleets() -> None:
    with _fleets_lock:
        _fleets.clear()


def fleet_stats() -> dict[str, dict[str, int]]:
    """{model name: {endpoint URL: requests sent}} for models served by more than one endpoint."""
    with _fleets_lock:
        return {f.name: f.stats() for f in _fleets.values() if f.several}
