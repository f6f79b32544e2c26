"""Fake engines for fast tests: deterministic answers from the request, no model."""

from __future__ import annotations

import dspy

from thinktrace.lm.scripted import ScriptedEngine


def fake_lm(rule, name: str = "fake") -> tuple[dspy.LM, ScriptedEngine]:
    """A GuardedLM (thinktrace's retry policy, finish reasons) over a ScriptedEngine."""
    from thinktrace.lm.guard import CallsConfig, Endpoint
    from thinktrace.lm.guarded import GuardedLM

    engine = ScriptedEngine(rule)
    endpoint = Endpoint(name, "scripted", CallsConfig(backoff_s=0.0, connect_pause_s=0.0))
    return GuardedLM(f"local/{name}", engine=engine, cache=False, temperature=0.0, max_tokens=64,
                     endpoint=endpoint), engine


def seed_of(request) -> int:
    return request.config.seed or 0
