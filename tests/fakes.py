"""Fake engines for fast tests: deterministic answers from the request, no model."""

from __future__ import annotations

import dspy

from thinktrace.lm.scripted import ScriptedEngine


def fake_lm(rule, name: str = "fake") -> tuple[dspy.LM, ScriptedEngine]:
    engine = ScriptedEngine(rule)
    return dspy.LM(f"local/{name}", engine=engine, cache=False, temperature=0.0, max_tokens=64), engine


def seed_of(request) -> int:
    return request.config.seed or 0
