"""A DSPy engine that batches concurrent requests for a local model.

DSPy runs one request per worker thread (``dspy.Parallel``, ``Evaluate``, the rejection sampler's pool). On a CPU,
decoding one sequence at a time leaves most of the matrix units idle: SmolLM2-135M makes ~20 tok/s at batch 1
and ~150 tok/s at batch 32 on 2 cores. ``BatchingEngine`` is a drop-in ``TransformersEngine`` whose ``complete``
hands the request to one decoding thread and waits:

- When idle, the decoder waits ``batch_window_s`` after the first request to gather others (up to
  ``max_batch_size``), then decodes them together. Requests arriving while it runs join at the next step, and
  finished rows leave at once (continuous batching), so one long answer never holds up the rest.
- Prompts sharing a prefix (the adapter's system prompt, the guideline, the same prompt sampled k times) share its
  prefill through the ``PrefixCache``: k samples of one prompt cost one prefill (plus one token each).
- Each request keeps its own temperature, top_p, top_k, max_tokens, stop strings and seed. A seeded request samples
  from its own ``torch.Generator``, so its text does not depend on what else is in the batch (up to floating point:
  see ``thinktrace.lm.local_engine``). Greedy requests give the same text batched or alone, up to the same caveat.
- A base model + LoRA adapter works as any model (the adapter is merged into a private copy of the base at load).

Several processes can share one loaded model through ``python -m thinktrace.serve`` (an OpenAI-compatible server
backed by this engine).
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from typing import Any

from thinktrace.lm.local_engine import DEFAULT_MAX_TOKENS, DecodeBatch, Row, TransformersEngine


class BatchingEngine(TransformersEngine):
    """``TransformersEngine`` that decodes concurrent requests together (see the module docstring).

    Args (besides ``TransformersEngine``'s):
        max_batch_size: most rows decoded together.
        batch_window_s: how long an idle decoder waits after the first request for others to arrive.
    """

    def __init__(
        self,
        model: str,
        adapter_path: str | None = None,
        *,
        num_threads: int | None = None,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        prefix_cache_tokens: int = 4096,
        max_batch_size: int = 32,
        batch_window_s: float = 0.02,
    ):
        super().__init__(
            model,
            adapter_path,
            num_threads=num_threads,
            default_max_tokens=default_max_tokens,
            prefix_cache_tokens=prefix_cache_tokens,
        )
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.max_batch_size = int(max_batch_size)
        self.batch_window_s = float(batch_window_s)
        self._cv = threading.Condition()
        self._pending: list[Row] = []
        self._jobs: list[_Job] = []  # other work for the decoder thread (choice scoring), run between steps
        self._thread: threading.Thread | None = None
        self._closing = False
        self._batch_stats = {"steps": 0, "row_steps": 0, "prefill_tokens": 0, "prefix_hit_tokens": 0, "max_rows": 0}
        _live.add(self)

    # -- engine protocol -----------------------------------------------------------------------------------
    def complete(self, request):
        from thinktrace.lm.choices import requested_choices

        choices = requested_choices(request)
        if choices:
            return self.choose(request, choices)
        row = self._prepare(request)
        t0 = time.perf_counter()
        self.submit(row)
        self.wait(row)
        return self._response(request, self._loaded, row, time.perf_counter() - t0)

    def _score(self, lm, ids: list[int], choices: list[str]) -> list[float]:
        """Choice scoring runs on the decoder thread, between steps: one thread owns the model and prefix cache."""
        job = _Job(lambda batch: batch.score(ids, choices))
        with self._cv:
            self._closing = False
            self._jobs.append(job)
            self._ensure_thread()
            self._cv.notify_all()
        while not job.event.wait(1.0):
            if self._thread is None or not self._thread.is_alive():
                raise RuntimeError("the batching engine's decoder thread stopped")
        if job.error is not None:
            raise job.error
        return job.result

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="thinktrace-batching", daemon=True)
            self._thread.start()

    def submit(self, row: Row) -> None:
        """Queue a prepared row for decoding (starts the decoder thread when needed)."""
        with self._cv:
            self._closing = False
            self._pending.append(row)
            self._ensure_thread()
            self._cv.notify_all()

    def wait(self, row: Row) -> Row:
        """Block until `row` is decoded; re-raises a decoding error in the caller's thread."""
        while not row.event.wait(1.0):
            if self._thread is None or not self._thread.is_alive():
                with self._cv:
                    if not row.event.is_set():
                        raise RuntimeError("the batching engine's decoder thread stopped")
        if row.error is not None:
            raise row.error
        return row

    def close(self) -> None:
        """Let the decoder thread exit once it has no work; it restarts on the next request."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()

    def dump_state(self) -> dict[str, Any]:
        return {**super().dump_state(), "max_batch_size": self.max_batch_size, "batch_window_s": self.batch_window_s}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> "BatchingEngine":
        return cls(state["model"], state.get("adapter_path"), **cls._state_kwargs(state),
                   max_batch_size=state.get("max_batch_size", 32), batch_window_s=state.get("batch_window_s", 0.02))

    def stats(self) -> dict[str, Any]:
        """``TransformersEngine.stats()`` plus decoding steps, mean rows per step, prefill tokens computed and
        prompt tokens served from the prefix cache."""
        out = super().stats()
        with self._stats_lock:
            b = dict(self._batch_stats)
        b["mean_rows"] = round(b["row_steps"] / b["steps"], 2) if b["steps"] else 0.0
        return {**out, **b}

    def __repr__(self) -> str:
        adapter = f", adapter_path={self.adapter_path!r}" if self.adapter_path else ""
        return f"BatchingEngine({self.model_name!r}{adapter}, max_batch_size={self.max_batch_size}, loaded={self.loaded})"

    # -- the decoder thread --------------------------------------------------------------------------------
    def _take(self, batch: DecodeBatch) -> tuple[list[Row], list["_Job"]] | None:
        """Rows to admit now ([] to just keep decoding) and jobs to run; None when the thread should exit."""
        with self._cv:
            if not batch.rows:
                while not self._pending and not self._jobs:
                    if self._closing:
                        self._thread = None
                        return None
                    self._cv.wait(timeout=5.0)
                deadline = time.perf_counter() + self.batch_window_s
                while self._pending and not self._jobs and len(self._pending) < self.max_batch_size:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    self._cv.wait(timeout=left)
            room = self.max_batch_size - len(batch.rows)
            take, self._pending = self._pending[:room], self._pending[room:]
            jobs, self._jobs = self._jobs, []
            return take, jobs

    def _loop(self) -> None:
        lm = self.load()
        batch = DecodeBatch(lm, self._prefix)
        while True:
            got = self._take(batch)
            if got is None:
                return
            take, jobs = got
            for job in jobs:
                try:
                    job.result = job.fn(batch)
                except BaseException as exc:
                    job.error = exc
                job.event.set()
            done: list[Row] = []
            try:
                if take:
                    done += batch.admit(take)
                if batch.rows:
                    batch.step()
                done += batch.reap()
            except BaseException as exc:  # fail every unfinished row in flight, keep serving later requests
                seen = {id(r) for r in done}
                for row in batch.rows + take:
                    if id(row) not in seen:
                        seen.add(id(row))
                        if not row.done:
                            row.error = exc
                        done.append(row)
                batch = DecodeBatch(lm, self._prefix)
            self._fold_stats(batch)
            for row in done:
                row.event.set()

    def _fold_stats(self, batch: DecodeBatch) -> None:
        with self._stats_lock:
            for key in ("steps", "row_steps", "prefill_tokens", "prefix_hit_tokens"):
                self._batch_stats[key] += batch.stats[key]
                batch.stats[key] = 0
            self._batch_stats["max_rows"] = max(self._batch_stats["max_rows"], len(batch.rows))


class _Job:
    """A function the decoder thread runs between steps, with its result or error for the waiting caller."""

    __slots__ = ("fn", "result", "error", "event")

    def __init__(self, fn):
        self.fn, self.result, self.error, self.event = fn, None, None, threading.Event()


_live: "weakref.WeakSet[BatchingEngine]" = weakref.WeakSet()


@atexit.register
def _stop_decoders(timeout_s: float = 2.0) -> None:
    """At interpreter exit, let idle decoder threads end instead of being frozen inside torch during shutdown."""
    engines = list(_live)
    for engine in engines:
        engine.close()
    deadline = time.monotonic() + timeout_s
    for engine in engines:
        thread = engine._thread
        if thread is not None and thread.is_alive():
            thread.join(max(0.0, deadline - time.monotonic()))
