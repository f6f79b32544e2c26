"""The run's budget: tokens and dollars spent on LM calls, counted as they are answered, and the stop when a limit
is reached.

Every answered call that reached a model (DSPy cache hits are free and are not counted) adds its input and
output tokens (the usage the provider or llama.cpp reported) and, for remote models, its cost: DSPy's estimate
from LiteLLM's price map, else ``litellm.cost_per_token`` for the model; a model the map does not know adds
tokens only and is counted as an unpriced call (a `max_usd` limit cannot see it; `--dry-run` says so). Local
models cost tokens only.

The count belongs to the run folder (``usage.json``, rewritten after every counted call), so it adds up over a
run and its resumes. Once ``budget.max_tokens`` or ``budget.max_usd`` is reached, no new call starts: the call
raises ``BudgetReached`` (an ``EndpointDown``), the stage stops the way it stops for an outage, everything
finished is in the journals, and the compile exits 5 with one line naming the limit and the resume command.
Calls already in flight finish and are journalled, so the spend can pass the limit by at most the calls in
flight. Raise the limit (or drop it) and resume: the budget section may change between a run and its resume.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from pydantic import Field

from thinktrace.config import Section
from thinktrace.errors import BudgetReached


class BudgetConfig(Section):
    """Limits on what one run (with all its resumes) may spend on LM calls. Reaching one stops the run cleanly:
    finished work is journalled and the compile exits 5 with the command that resumes it. May change between a
    run and its resume (raise it to continue)."""

    max_tokens: int | None = Field(
        None, ge=1, description="Most LM tokens (input + output, every model, DSPy cache hits not counted). "
        "Null: no limit.")
    max_usd: float | None = Field(
        None, gt=0, description="Most US dollars spent on remote models, priced with LiteLLM's price map (models it "
        "does not know are not counted; `--dry-run` names them). Null: no limit.")


def _usd(entry: dict, model: str, usage: dict) -> float | None:
    cost = entry.get("cost")
    if isinstance(cost, (int, float)):
        return float(cost)
    if model.startswith("local/"):
        return 0.0
    try:
        import litellm

        inp, out = litellm.cost_per_token(model=model, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                                          completion_tokens=int(usage.get("completion_tokens") or 0))
        return float(inp + out)
    except Exception:  # the price map does not know the model
        return None


class Meter:
    """What the run has spent, against its limits (thread-safe)."""

    def __init__(self, config: BudgetConfig | None = None, path: Path | None = None):
        self.config = config or BudgetConfig()
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self.spent = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "usd": 0.0, "unpriced_calls": 0}
        if self.path and self.path.exists():
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            self.spent.update({k: saved[k] for k in self.spent if k in saved})

    @property
    def tokens(self) -> int:
        return self.spent["input_tokens"] + self.spent["output_tokens"]

    def add(self, entry: dict, model: str) -> None:
        """Count one answered call from its DSPy history entry (a cache hit has no usage and counts nothing)."""
        usage = entry.get("usage") or {}
        if not usage:
            return
        usd = _usd(entry, model, usage)
        with self._lock:
            s = self.spent
            s["calls"] += 1
            s["input_tokens"] += int(usage.get("prompt_tokens") or 0)
            s["output_tokens"] += int(usage.get("completion_tokens") or 0)
            if usd is None:
                s["unpriced_calls"] += 1
            else:
                s["usd"] += usd
            self._save_locked()

    def _save_locked(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.spent, "usd": round(self.spent["usd"], 8)}), encoding="utf-8")
        os.replace(tmp, self.path)

    def reached(self) -> str | None:
        """Which limit is reached, in words; None while there is budget left."""
        c = self.config
        with self._lock:
            tokens, usd = self.tokens, self.spent["usd"]
        if c.max_tokens is not None and tokens >= c.max_tokens:
            return f"{tokens:,} tokens spent, budget.max_tokens is {c.max_tokens:,}"
        if c.max_usd is not None and usd >= c.max_usd:
            return f"${usd:.4f} spent, budget.max_usd is {c.max_usd:g}"
        return None

    def check(self) -> None:
        """Raise BudgetReached when a limit is reached (no new call starts then)."""
        if self.config.max_tokens is None and self.config.max_usd is None:
            return
        why = self.reached()
        if why:
            raise BudgetReached(why)

    def summary(self) -> dict:
        with self._lock:
            return {**self.spent, "usd": round(self.spent["usd"], 6),
                    "max_tokens": self.config.max_tokens, "max_usd": self.config.max_usd}


_meter = Meter()
_meter_lock = threading.Lock()


def start_budget(config: BudgetConfig | None, path: Path | None) -> Meter:
    """The run's meter from now on (its spend so far read from `path`, the run folder's usage.json)."""
    global _meter
    with _meter_lock:
        _meter = Meter(config, path)
        return _meter


def current_meter() -> Meter:
    return _meter
