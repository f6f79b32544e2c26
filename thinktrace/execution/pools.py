"""The seam every stage's parallel LM work goes through: a *task* (a picklable callable `task(lms, unit) ->
result`, `lms` being {name: dspy.LM}), *units* of work (an item to rate, a sampling slot) and a `handle(unit,
result)` callback in the compile process that journals each result and may return follow-up units (the next
sampling slot of an example). `drive` feeds units to a pool, at most `pool.capacity` at a time, follow-ups first
(an example is finished before new ones start, as a thread used to do); the pool is threads here
(`ThreadPool`) or Ray actors (`thinktrace.execution.on_ray`). Results only ever reach the journals through
`handle`, in this process.

Stopping: when a unit raises (EndpointDown, a budget reached) or the caller is interrupted, queued units are
dropped, in-flight ones are awaited and their results handled too (every finished call is journalled), then the
error propagates.
"""

from __future__ import annotations

import concurrent.futures as cf
import sys
from collections import deque
from typing import Any, Callable, Iterable, Mapping, Protocol

Task = Callable[[Mapping[str, Any], Any], Any]


class Pool(Protocol):
    capacity: int  #: units in flight at most

    def submit(self, unit: Any) -> None: ...

    def next(self) -> tuple[Any, Any]:
        """(unit, result) of a finished unit; raises what the unit raised."""

    def stop(self) -> list[tuple[Any, Any]]:
        """Drop nothing that finished: await in-flight units, return the (unit, result) pairs that succeeded."""

    def close(self) -> None: ...


class Executor(Protocol):
    def pool(self, task: Task, lms: Mapping[str, Any], threads: int) -> Pool: ...


def drive(pool: Pool, units: Iterable[Any], handle: Callable[[Any, Any], Iterable[Any] | None]) -> None:
    """Run `units` (and the follow-ups `handle` returns) through `pool`; see the module docstring."""
    queue = deque(units)
    inflight = 0
    try:
        try:
            while queue or inflight:
                while queue and inflight < pool.capacity:
                    pool.submit(queue.popleft())
                    inflight += 1
                unit, result = pool.next()
                inflight -= 1
                queue.extendleft(reversed(list(handle(unit, result) or ())))
        except BaseException as err:
            if isinstance(err, KeyboardInterrupt) and inflight:  # the wait can be long: say why nothing seems to stop
                print(f"stopping: waiting for the {inflight} calls in flight, whose results are kept",
                      file=sys.stderr, flush=True)
            for unit, result in pool.stop():  # calls that finished while the stage was stopping are kept too
                handle(unit, result)
            raise
    finally:
        pool.close()


class ThreadPool:
    """The local backend: `threads` threads in this process, all sharing the caller's LM objects."""

    def __init__(self, task: Task, lms: Mapping[str, Any], threads: int):
        self.task, self.lms, self.capacity = task, dict(lms), max(1, threads)
        self._pool = cf.ThreadPoolExecutor(max_workers=self.capacity)
        self._units: dict[cf.Future, Any] = {}
        self._ready: deque[cf.Future] = deque()

    def submit(self, unit: Any) -> None:
        self._units[self._pool.submit(self.task, self.lms, unit)] = unit

    def next(self) -> tuple[Any, Any]:
        if not self._ready:
            pending = [f for f in self._units if f not in self._ready]
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            self._ready.extend(f for f in pending if f in done)  # submission order among those done
        future = self._ready.popleft()
        unit = self._units.pop(future)
        return unit, future.result()

    def stop(self) -> list[tuple[Any, Any]]:
        self._pool.shutdown(wait=True, cancel_futures=True)
        out = [(self._units[f], f.result()) for f in self._units
               if f.done() and not f.cancelled() and f.exception() is None]
        self._units.clear()
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class LocalExecutor:
    """Threads in the compile process (the default)."""

    name = "local"

    def pool(self, task: Task, lms: Mapping[str, Any], threads: int) -> Pool:
        return ThreadPool(task, lms, threads)

    def close(self) -> None:
        pass
