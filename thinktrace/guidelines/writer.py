"""The guideline writer's LM for one candidate: its rollout seed, its budgets and its context."""

from __future__ import annotations

import hashlib

import dspy


from thinktrace.guidelines.config import GuidelinesConfig


def rollout_seed(seed: int, optimizer: str, round_: int, index: int) -> int:
    """A stable 31-bit rollout id / seed per candidate (distinct samples, the same on resume)."""
    digest = hashlib.sha1(f"{seed}|guideline|{optimizer}|{round_}|{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def writer_copy(lm: dspy.LM, rollout: int, temperature: float, max_tokens: int = 768) -> dspy.LM:
    """The writer LM for one candidate: a writer-sized token budget (at least `max_tokens`), its own rollout id
    (its own cache entries) and, for in-process engines (`local/...`), its own sampling seed. Remote providers get
    no seed (some reject it)."""
    budget = max(int(lm.kwargs.get("max_tokens") or 0), int(max_tokens))
    if temperature == 0:
        return lm.copy(temperature=0.0, max_tokens=budget)
    kwargs = {"rollout_id": rollout, "temperature": temperature, "max_tokens": budget}
    if str(getattr(lm, "model", "")).startswith("local/"):
        kwargs["seed"] = rollout
    return lm.copy(**kwargs)


def writer_limits(lm: dspy.LM, cfg: GuidelinesConfig) -> dict:
    """How the writer program sizes its calls for this LM: the first budget, the cap of a retry, the context
    window and a token counter (a local model's own tokenizer; else about 3 characters per token)."""
    engine = getattr(lm, "_engine_spec", None)
    server = getattr(engine, "server", None)
    count = None
    context = cfg.writer_context
    if server is not None and hasattr(server, "settings"):
        context = context or int(server.settings.context)
        count = _token_counter(server.tokenizer)
    context = context or 8192
    first = min(cfg.writer_max_tokens, context // 2)
    return {"max_tokens": first, "max_tokens_cap": max(first, min(4 * first, context - 256)),
            "context_tokens": context, "count_tokens": count}


def _token_counter(tokenizer):
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return count
