"""Run one call in a spawned child process that dies with its parent.

Used for work whose memory should go back to the system when it ends (fine-tuning, one-time model conversions):
a process's heap does not shrink after a large allocation pattern, so doing it in the compile process would carry
that memory into every later stage. Spawned (no threads or llama.cpp state inherited); on Linux the kernel kills
the child the moment its parent dies (a killed compile must not leave work running behind it: its resume would
write into the same folder). Errors raised in the child are raised in the caller.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable


def _guard(parent: int) -> None:
    import signal
    import threading

    try:  # Linux: PR_SET_PDEATHSIG
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch():  # elsewhere: poll
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="thinktrace-parent-watch", daemon=True).start()


def _run(parent: int, fn: Callable, args: tuple, kwargs: dict) -> Any:
    _guard(parent)
    return fn(*args, **kwargs)


def call_in_child(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a spawned child process (fn and arguments must be picklable)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_run, os.getpid(), fn, args, kwargs).result()
