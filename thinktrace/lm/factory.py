"""Build a dspy.LM from a ModelConfig.

Local models share one ``BatchingEngine`` per (checkpoint, adapter) in this process, so two raters on the same model
load it once and their concurrent requests are decoded together. Accounting: ``engine_stats()`` reports, per local engine, the calls that reached the model and the tokens it
read and generated (DSPy cache hits never reach it). For remote LMs use ``lm_usage(lm)``, which sums the usage DSPy
records in ``lm.history`` (history is bounded by DSPy's ``max_history_size``; cached answers are included there).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from thinktrace import _env  # noqa: F401  (before dspy)
from thinktrace.errors import SpecError
from thinktrace.lm.config import ModelConfig

_registry: dict[tuple[str, str | None], Any] = {}
_registry_lock = threading.Lock()


def _engine_key(cfg: ModelConfig) -> tuple[str, str | None]:
    from pathlib import Path

    from thinktrace.lm.embedded import canonical_name

    model = canonical_name(cfg.model) or cfg.model
    if Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())
    adapter = str(Path(cfg.adapter).expanduser().resolve()) if cfg.adapter else None
    return model, adapter


def get_engine(cfg: ModelConfig, field: str = "model"):
    """The process-wide engine for cfg's (model, adapter), created on first request. Validates paths now (a
    missing checkpoint or adapter directory is a SpecError here) but loads weights only on the first call."""
    from pathlib import Path

    from thinktrace.lm.batching import BatchingEngine
    from thinktrace.lm.embedded import canonical_name, resolve_model_path

    if not canonical_name(cfg.model):
        resolve_model_path(cfg.model, field=f"{field}.model")  # checks local paths; hub ids pass through
    if cfg.adapter and not (Path(cfg.adapter).expanduser() / "adapter_config.json").is_file():
        raise SpecError(f"{field}.adapter", f"{cfg.adapter!r} is not a PEFT adapter directory (no adapter_config.json)")
    key = _engine_key(cfg)
    with _registry_lock:
        engine = _registry.get(key)
        if engine is None:
            engine = BatchingEngine(key[0], key[1], default_max_tokens=cfg.max_tokens)
            _registry[key] = engine
        return engine


def build_lm(cfg: ModelConfig, field: str = "model"):
    """A dspy.LM for `cfg`. `field` is the spec path of this entry (e.g. ``models.raters.0``) for error messages.

    Remote keys are read from ``os.environ[cfg.api_key_env]`` now; a missing variable is a SpecError naming it."""
    import dspy

    from thinktrace.lm.custom import PYTHON, build_custom_lm

    if cfg.provider == PYTHON:
        return build_custom_lm(cfg, field)
    common = dict(temperature=cfg.temperature, max_tokens=cfg.max_tokens, cache=cfg.cache)
    if cfg.is_local:
        from thinktrace.lm.choices import mark_capable

        mark_capable(cfg.dspy_model)
        return dspy.LM(cfg.dspy_model, engine=get_engine(cfg, field), **common)
    kwargs: dict[str, Any] = dict(common)
    if cfg.api_base:
        kwargs["api_base"] = cfg.api_base
    if cfg.api_key_env:
        key = os.environ.get(cfg.api_key_env)
        if not key:
            raise SpecError(
                f"{field}.api_key_env",
                f"environment variable {cfg.api_key_env} is not set (it should hold the API key for {cfg.provider})",
            )
        kwargs["api_key"] = key
    check_provider(cfg.provider, f"{field}.provider")
    return dspy.LM(cfg.dspy_model, **kwargs)


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


def engine_stats() -> dict[str, dict[str, Any]]:
    """Per local engine (keyed ``model`` or ``model+adapter``): calls, input/output tokens, generate/load seconds."""
    with _registry_lock:
        items = list(_registry.items())
    return {(m if a is None else f"{m}+{a}"): e.stats() for (m, a), e in items}


def lm_usage(lm) -> dict[str, int]:
    """Calls and token totals DSPy recorded in ``lm.history`` (works for any LM, local or remote)."""
    calls = prompt = completion = 0
    for entry in list(getattr(lm, "history", []) or []):
        calls += 1
        usage = entry.get("usage") or {}
        prompt += int(usage.get("prompt_tokens") or 0)
        completion += int(usage.get("completion_tokens") or 0)
    return {"calls": calls, "input_tokens": prompt, "output_tokens": completion}


def clear_engines() -> None:
    """Forget all shared engines (their models are freed once no LM refers to them). For tests."""
    with _registry_lock:
        _registry.clear()
