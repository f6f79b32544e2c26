"""Where the parallel LM work of a run happens: threads in the compile process (`local`) or Ray actors (`ray`),
behind one seam (`thinktrace.execution.pools`: a task, units, and a callback that journals each result in the
compile process). `use_execution(cfg)` sets the run's executor; `rate_items`, `RejectionSampling.sample` and the
guideline scoring (through `rate_items`) take `current_executor()` unless given one."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from thinktrace.execution.config import ExecutionConfig
from thinktrace.execution.pools import Executor, LocalExecutor, Pool, ThreadPool, drive

__all__ = ["ExecutionConfig", "Executor", "LocalExecutor", "Pool", "ThreadPool", "current_executor", "drive",
           "make_executor", "use_execution"]

_current: Executor = LocalExecutor()


def make_executor(cfg: ExecutionConfig | None) -> Executor:
    if cfg is None or cfg.backend == "local":
        return LocalExecutor()
    from thinktrace.execution.on_ray import RayExecutor, import_ray

    import_ray()  # a missing package is a one-line spec error before any work
    return RayExecutor(cfg)


def current_executor() -> Executor:
    return _current


@contextmanager
def use_execution(cfg: ExecutionConfig | Executor | None) -> Iterator[Executor]:
    """Run the enclosed work on `cfg`'s backend (an ExecutionConfig, or an executor); its actors stop after."""
    global _current
    executor = cfg if hasattr(cfg, "pool") else make_executor(cfg)
    previous, _current = _current, executor
    try:
        yield executor
    finally:
        _current = previous
        executor.close()
