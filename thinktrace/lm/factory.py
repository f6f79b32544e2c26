"""Build a dspy.LM from a ModelConfig.

Local models run on llama.cpp (``thinktrace.lm.llamacpp``): one ``LlamaServer`` per GGUF file in this process, so two
raters on the same model (or a base model and its LoRA adapters) load it once and llama.cpp batches their concurrent
requests. ``release_engines()`` stops every server (the pipeline calls it between stages: a model holds memory only
while a stage uses it; the next request starts it again). Accounting: ``engine_stats()`` reports, per server, the
calls that reached the model and the tokens it read and generated (DSPy cache hits never reach it). For remote LMs
use ``lm_usage(lm)``, which sums the usage DSPy records in ``lm.history``.
"""

from __future__ import annotations

import os
from typing import Any

import thinktrace._env  # noqa: F401  (before dspy)
from thinktrace.errors import SpecError
from thinktrace.lm.config import ModelConfig
from thinktrace.lm.custom import PYTHON, build_custom_lm
from thinktrace.lm.fleet import fleet_of
from thinktrace.lm.grammar import mark_constrainable
from thinktrace.lm.guard import CallsConfig
# the process-wide llama.cpp servers live with the server (thinktrace.lm.llamacpp); importable from here too
from thinktrace.lm.llamacpp import (MAX_RUNNING_ENV, clear_engines, engine_stats, get_engine,  # noqa: F401
                                    get_server, make_room, max_running, release_engines)


def fleet_of_config(cfg: ModelConfig, calls=None):
    """The endpoint fleet of `cfg`: one breaker per server of its `api_base`, and its concurrency cap (see
    thinktrace.lm.fleet)."""
    return fleet_of(cfg, calls or _default_calls())


_DEFAULT_CALLS = None


def _default_calls():
    global _DEFAULT_CALLS
    if _DEFAULT_CALLS is None:
        _DEFAULT_CALLS = CallsConfig()
    return _DEFAULT_CALLS


def build_lm(cfg: ModelConfig, field: str = "model", calls=None):
    """A dspy.LM for `cfg` (a ``GuardedLM``: retries and the endpoint's breaker from `calls`, a CallsConfig,
    default settings when None). `field` is the spec path of this entry (e.g. ``models.raters.0``) for error
    messages.

    Remote keys are read from ``os.environ[cfg.api_key_env]`` now; a missing variable is a SpecError naming it."""
    lm = _build_lm(cfg, field, calls)
    lm.thinktrace_model = (cfg, field, calls)  # how a Ray worker builds its own copy (thinktrace.execution)
    return lm


def _build_lm(cfg: ModelConfig, field: str, calls):
    from thinktrace.lm.guarded import GuardedLM  # imports dspy: only when an LM is built

    fleet = fleet_of_config(cfg, calls)
    if cfg.provider == PYTHON:
        return build_custom_lm(cfg, field, fleet)
    common = dict(temperature=cfg.temperature, max_tokens=cfg.max_tokens, cache=cfg.cache, fleet=fleet)
    if cfg.is_local:
        mark_constrainable(cfg.dspy_model)
        return GuardedLM(cfg.dspy_model, engine=get_engine(cfg, field), **common)
    kwargs: dict[str, Any] = dict(common)
    if cfg.top_p is not None:
        kwargs["top_p"] = cfg.top_p
    if cfg.top_k is not None:
        kwargs["top_k"] = cfg.top_k
    if cfg.api_bases:  # a fleet: the first server here, each try names the one it goes to
        kwargs["api_base"] = cfg.api_bases[0]
    if cfg.api_key_env:
        key = os.environ.get(cfg.api_key_env)
        if not key:
            raise SpecError(
                f"{field}.api_key_env",
                f"environment variable {cfg.api_key_env} is not set (it should hold the API key for {cfg.provider})",
            )
        kwargs["api_key"] = key
    if cfg.timeout_s is not None:
        kwargs["timeout"] = cfg.timeout_s
    check_provider(cfg.provider, f"{field}.provider")
    return GuardedLM(cfg.dspy_model, **kwargs)


def check_provider(provider: str, field: str) -> None:
    """A remote provider must be one LiteLLM knows (checked when the LM is built: importing litellm is slow, and
    only remote specs need it)."""
    import litellm

    known = {str(getattr(p, "value", p)) for p in litellm.provider_list}
    if provider not in known:
        close = sorted(k for k in known if k.startswith(provider[:3]))[:6]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise SpecError(field, f"unknown provider {provider!r}: use `local`, `python` or a LiteLLM provider such as "
                        f"openai, anthropic, ollama_chat, hosted_vllm{hint}")


def lm_usage(lm) -> dict[str, int]:
    """Calls and token totals DSPy recorded in ``lm.history`` (works for any LM, local or remote)."""
    calls = prompt = completion = 0
    for entry in list(getattr(lm, "history", []) or []):
        calls += 1
        usage = entry.get("usage") or {}
        prompt += int(usage.get("prompt_tokens") or 0)
        completion += int(usage.get("completion_tokens") or 0)
    return {"calls": calls, "input_tokens": prompt, "output_tokens": completion}
