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
import threading
from typing import Any

from thinktrace import _env  # noqa: F401  (before dspy)
from thinktrace.errors import SpecError
from thinktrace.lm.config import ModelConfig

_registry: dict[str, Any] = {}
_registry_lock = threading.Lock()
MAX_RUNNING_ENV = "THINKTRACE_MAX_RUNNING_MODELS"


def max_running() -> int:
    """How many llama.cpp servers may hold their model at once (``$THINKTRACE_MAX_RUNNING_MODELS``, default 1).
    Stages use their models one after another, and on a CPU two loaded models share the same cores, so one at a
    time costs a reload now and then (seconds) and keeps peak memory at the largest model's."""
    try:
        return max(1, int(os.environ.get(MAX_RUNNING_ENV, "1")))
    except ValueError:
        raise SpecError(MAX_RUNNING_ENV, f"must be a positive integer, got {os.environ[MAX_RUNNING_ENV]!r}") from None


def make_room(starting) -> None:
    """Before `starting` loads its model: stop idle servers beyond ``max_running() - 1`` (oldest
    first). A server with requests in flight is never stopped; it then runs beside the new one."""
    with _registry_lock:
        others = [s for s in _registry.values() if s is not starting and s.running]
    excess = len(others) - (max_running() - 1)
    for server in others:
        if excess <= 0:
            break
        if server.stop_if_idle():
            excess -= 1


def get_server(cfg: ModelConfig, field: str = "model"):
    """The process-wide llama.cpp server for cfg's weights (created on first request; weights load on first call).
    Resolving the weights validates paths now: a missing file or adapter is a SpecError naming `field`."""
    from thinktrace.lm.llamacpp import LlamaServer
    from thinktrace.lm.weights import prepare

    served = prepare(cfg.model, training_base=cfg.training_base or bool(cfg.adapter), field=f"{field}.model")
    key = str(served.gguf)
    with _registry_lock:
        server = _registry.get(key)
        if server is None:
            server = LlamaServer(served, cfg.llama, name=cfg.model)
            server.before_start = make_room
            server.tokenizer  # noqa: B018  (load it now, in the building thread)
            _registry[key] = server
        return server


def get_engine(cfg: ModelConfig, field: str = "model"):
    """A DSPy engine for a local model entry: its server, its LoRA adapter (as GGUF) and its sampling defaults."""
    from thinktrace.lm.llamacpp import LlamaCppEngine
    from thinktrace.lm.weights import adapter_gguf

    server = get_server(cfg, field)
    adapter = adapter_gguf(cfg.adapter, server.served, field=f"{field}.adapter") if cfg.adapter else None
    return LlamaCppEngine(server, adapter=adapter, name=cfg.name, default_max_tokens=cfg.max_tokens,
                          top_p=cfg.top_p, top_k=cfg.top_k, min_p=cfg.min_p, config=cfg)


def endpoint_of(cfg: ModelConfig, calls=None):
    """The circuit breaker shared by every LM that reaches the (first) server of `cfg` (see thinktrace.lm.guard)."""
    return fleet_of_config(cfg, calls).members[0][1]


def fleet_of_config(cfg: ModelConfig, calls=None):
    """The endpoint fleet of `cfg`: one breaker per server of its `api_base`, and its concurrency cap (see
    thinktrace.lm.fleet)."""
    from thinktrace.lm.fleet import fleet_of

    return fleet_of(cfg, calls or _default_calls())


_DEFAULT_CALLS = None


def _default_calls():
    global _DEFAULT_CALLS
    if _DEFAULT_CALLS is None:
        from thinktrace.lm.guard import CallsConfig

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
    from thinktrace.lm.custom import PYTHON, build_custom_lm
    from thinktrace.lm.guard import GuardedLM

    fleet = fleet_of_config(cfg, calls)
    if cfg.provider == PYTHON:
        return build_custom_lm(cfg, field, fleet)
    common = dict(temperature=cfg.temperature, max_tokens=cfg.max_tokens, cache=cfg.cache, fleet=fleet)
    if cfg.is_local:
        from thinktrace.lm.constrain import mark_constrainable

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


def engine_stats() -> dict[str, dict[str, Any]]:
    """Per llama.cpp server (keyed by model): calls, input/cached/output tokens, generate/load seconds, starts."""
    with _registry_lock:
        items = list(_registry.values())
    return {s.name if not s.adapters else f"{s.name}+{len(s.adapters)} adapters": s.stats() for s in items}


def lm_usage(lm) -> dict[str, int]:
    """Calls and token totals DSPy recorded in ``lm.history`` (works for any LM, local or remote)."""
    calls = prompt = completion = 0
    for entry in list(getattr(lm, "history", []) or []):
        calls += 1
        usage = entry.get("usage") or {}
        prompt += int(usage.get("prompt_tokens") or 0)
        completion += int(usage.get("completion_tokens") or 0)
    return {"calls": calls, "input_tokens": prompt, "output_tokens": completion}


def release_engines() -> None:
    """Stop every llama.cpp server (after in-flight requests): memory goes back until a request needs a model
    again. Engines and their statistics stay valid."""
    with _registry_lock:
        servers = list(_registry.values())
    for server in servers:
        server.stop()


def clear_engines() -> None:
    """Stop and forget all servers. For tests."""
    release_engines()
    with _registry_lock:
        _registry.clear()
