"""The `models.*` entries of an experiment spec: which LM plays a role (generator, rater, judge) and how to reach it."""

from __future__ import annotations

from urllib.parse import urlparse

from typing import Literal

from pydantic import Field, field_validator, model_validator

from thinktrace.config import Section

LOCAL = "local"


class LlamaSettings(Section):
    """How llama.cpp runs a local model (``provider: local``). Models that share a GGUF file share one server: the
    first entry that starts it sets these."""

    threads: int = Field(
        default=2, ge=1,
        description="CPU threads llama.cpp decodes with (not DSPy's `num_threads`, which is how many requests are "
        "sent at once).",
    )
    poll: int = Field(
        default=0, ge=0, le=100,
        description="Busy-wait polling level of llama.cpp's threads (0-100). 0 sleeps while waiting: measured on a "
        "shared 2-core machine, polling with 2 threads collapsed to < 1 tok/s as soon as another process was busy.",
    )
    slots: int = Field(
        default=4, ge=1, le=64,
        description="Requests llama.cpp decodes together (continuous batching); each slot gets `context` tokens.",
    )
    context: int = Field(
        default=2048, ge=256,
        description="Context window per slot in tokens (prompt + answer).",
    )
    cache_ram_mib: int = Field(
        default=0, ge=0,
        description="MiB of host memory llama.cpp may fill with saved prompt states of idle slots (its prompt "
        "cache across slots, on top of each slot's own cached prompt, which is always on). 0, the default, turns "
        "it off: at llama.cpp's own default (8192) it grew the process by ~0.7 GiB on a 200-item SmolLM2 "
        "evaluation, and a run's prompts share their prefix within a slot anyway.",
    )
    mmap: bool = Field(
        default=False,
        description="Map the GGUF file into memory instead of reading it. Off by default: llama.cpp repacks "
        "quantized weights (Q4_K, ...) into its faster CPU layout, and a mapped file then stays resident beside "
        "the repacked copy (Qwen2.5-Coder-1.5B Q4_K_M, 4 slots: 2.2 GiB resident mapped, 1.6 GiB read, no slower on 16 requests). Turn "
        "it on when several processes on one machine serve the same file (mapped pages are shared).",
    )
    share_prefix: bool = Field(
        default=False,
        description="Compute a prefix that many requests share (a variant's system text, guideline and demos) once "
        "and copy it to the other slots with llama.cpp's slot save/restore, instead of once per slot: each request "
        "is pinned to the slot that holds most of its prompt (thinktrace.lm.prefix). Off by default. Greedy answers "
        "differ with and without it on the quantized teacher, but neither way repeats its own answers across runs "
        "(llama.cpp's arithmetic depends on which requests are batched together), so it makes a run no less "
        "reproducible (`benchmarks/prefix.py`).",
    )


class ModelConfig(Section):
    """One language model. ``provider: local`` runs it in this process on llama.cpp (an embedded model, a GGUF
    file, a local Hugging Face checkpoint or a hub id); any other provider is reached through dspy.LM / LiteLLM (``openai``, ``anthropic``,
    ``ollama_chat``, ``hosted_vllm``, ...). API keys never appear in specs or run directories: name the
    environment variable that holds the key in ``api_key_env``."""

    name: str = Field(
        default="",
        description="Display name of this LM in reports and tables; defaults to `model`.",
    )
    provider: str = Field(
        default=LOCAL,
        description="`local` runs the model in-process on llama.cpp; anything else is a dspy.LM/LiteLLM "
        "provider prefix such as `openai`, `anthropic`, `ollama_chat` or `hosted_vllm`.",
    )
    model: str = Field(
        description="For `local`: an embedded name (`smollm2-135m`, alias `embedded`; `qwen2.5-coder-1.5b`), a "
        "GGUF file (`path/to/model.gguf`), a local Hugging Face checkpoint directory (LLaMA or Qwen2 architecture, "
        "converted to GGUF once), or a Hugging Face hub id (needs the hub or a filled HF cache). Otherwise the "
        "provider's model id, e.g. `gpt-4o-mini`.",
    )
    api_base: str | list[str] | None = Field(
        default=None,
        description="Base URL of the provider's API, e.g. an OpenAI-compatible server `http://127.0.0.1:8011/v1`, "
        "or a list of them serving the same model (a fleet, e.g. one vLLM replica per GPU): requests are spread "
        "over them, a request that fails on one is retried on another, and the run stops (resumable) only when "
        "all are down. A LoRA adapter on a vLLM fleet: start each replica with `--enable-lora --lora-modules "
        "NAME=PATH` and set `model: NAME`. Remote providers only; may change between a run and its resume.",
    )
    max_concurrency: int | None = Field(
        default=None, ge=1,
        description="Most requests in flight to this model at once, over all its endpoints and every stage "
        "thread and copy (null: only `num_threads` limits it). May change between a run and its resume.",
    )
    api_key_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the API key (the key itself is never written in a "
        "spec). Remote providers only; when unset the provider's own default variable applies.",
    )
    adapter: str | None = Field(
        default=None,
        description="Directory of a PEFT LoRA adapter applied on top of `model` (local provider only); "
        "llama.cpp serves it as a GGUF LoRA on the training base's weights.",
    )
    prompt_format: Literal["plain", "chat", "json"] | None = Field(
        default=None,
        description="This rater's prompt format (DSPy adapter), overriding `programs.adapter` for it: plain, chat "
        "or json. Null: the experiment's `programs.adapter`. Sampling and fine-tuning always use `programs.adapter` "
        "(fine-tuned raters are prompted in the format they were trained on).",
    )
    temperature: float = Field(
        default=0.0,
        ge=0.0,
        description="Sampling temperature; 0 is greedy decoding.",
    )
    max_tokens: int = Field(
        default=256,
        gt=0,
        description="Most tokens generated per call.",
    )
    top_p: float | None = Field(
        default=None, gt=0.0, le=1.0,
        description="Nucleus sampling. Null: no truncation for local models (llama.cpp's own default 0.95 is never "
        "applied silently), the provider's default for remote ones.",
    )
    top_k: int | None = Field(
        default=None, ge=0,
        description="Sample among the k most likely tokens (0: all). Null: 0 for local models, the provider's "
        "default for remote ones.",
    )
    min_p: float | None = Field(
        default=None, ge=0.0, lt=1.0,
        description="Drop tokens less likely than min_p x the top token's probability (local models only). Null: 0.",
    )
    llama: LlamaSettings = Field(
        default_factory=LlamaSettings,
        description="llama.cpp settings (CPU threads, polling, parallel slots, context) for local models; may change "
        "between a run and its resume (e.g. a larger context after a prompt did not fit).",
    )
    training_base: bool | Literal["float32", "bfloat16", "float16"] = Field(
        default=False,
        description="Serve this local model from the exact weights fine-tuning trains on (an F32 GGUF of the "
        "training checkpoint) instead of its shipped, quantized GGUF; a dtype name (bfloat16, float16) serves them "
        "in that dtype (a BF16/F16 GGUF), for adapters trained against bf16/fp16 base weights. Set automatically "
        "for the rater that a fine-tuned adapter is compared with, so that the paired difference measures the "
        "adapter alone.",
    )
    num_threads: int = Field(
        default=4,
        ge=1,
        description="Parallel DSPy workers calling this LM (for local models, llama.cpp decodes concurrent "
        "requests together in `llama.slots` slots).",
    )
    cache: bool = Field(
        default=True,
        description="Use DSPy's disk cache of LM calls (identical requests are answered from the cache).",
    )
    timeout_s: float | None = Field(
        default=None, gt=0,
        description="Remote providers: seconds one request may take before it fails as a timeout (retried as a "
        "transient error, see `calls`). Null: the provider client's default.",
    )

    @field_validator("provider")
    @classmethod
    def _provider(cls, v: str) -> str:
        v = v.strip()
        if not v or "/" in v or any(c.isspace() for c in v):
            raise ValueError("a provider is `local` or a LiteLLM provider prefix like `openai` (no `/`, no spaces)")
        return v

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("a model name or path is required")
        return v.strip()

    @field_validator("api_base")
    @classmethod
    def _api_base(cls, v: str | list[str] | None) -> str | list[str] | None:
        if v is None:
            return v
        urls = [v] if isinstance(v, str) else v
        if not urls:
            raise ValueError("api_base: give a URL or a non-empty list of URLs (or leave it out)")
        for url in urls:
            u = urlparse(url)
            if u.scheme not in ("http", "https") or not u.netloc:
                raise ValueError(f"api_base must be an http(s) URL or a list of them, got {url!r}")
        if len(set(urls)) < len(urls):
            raise ValueError(f"api_base lists a URL twice: {sorted(u for u in set(urls) if urls.count(u) > 1)}")
        return v[0] if isinstance(v, list) and len(v) == 1 else v

    @field_validator("api_key_env")
    @classmethod
    def _api_key_env(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.replace("_", "").isalnum() or v[0].isdigit():
            raise ValueError(
                "api_key_env is the NAME of an environment variable (like OPENAI_API_KEY), not the key itself"
            )
        return v

    @model_validator(mode="after")
    def _local_vs_remote(self) -> "ModelConfig":
        if not self.name:
            object.__setattr__(self, "name", self.model)
        if self.is_local:
            if self.api_base or self.api_key_env:
                raise ValueError("api_base / api_key_env apply to remote providers, not to provider `local`")
        elif self.adapter:
            raise ValueError("adapter (a LoRA directory) applies to provider `local` only")
        elif self.min_p is not None:
            raise ValueError("min_p applies to provider `local` only (LiteLLM cannot carry it)")
        elif self.training_base:
            raise ValueError("training_base applies to provider `local` only")
        if self.timeout_s is not None and self.provider in (LOCAL, "python"):
            raise ValueError("timeout_s applies to remote providers only")
        return self

    @property
    def is_local(self) -> bool:
        return self.provider == LOCAL

    @property
    def api_bases(self) -> list[str]:
        """The endpoints of this model: `api_base` as a list (empty: the provider's default)."""
        if self.api_base is None:
            return []
        return [self.api_base] if isinstance(self.api_base, str) else list(self.api_base)

    @property
    def dspy_model(self) -> str:
        """The model string dspy.LM receives: ``local/<name>`` or ``<provider>/<model>``."""
        return f"{LOCAL}/{self.name}" if self.is_local else f"{self.provider}/{self.model}"


#: fields of a model entry that may change between a run and its resume: where the model is served, how many
#: requests it takes at once and a local model's llama.cpp server settings (threads, slots, context per slot: e.g.
#: raised after a prompt did not fit) change no result (answers already made are journalled and cached)
RESUMABLE_MODEL_FIELDS = ("api_base", "max_concurrency", "llama")


def without_resumable_model_fields(value):
    """A resolved spec (or part of one) with every model entry's RESUMABLE_MODEL_FIELDS left out, for comparing
    a run folder's spec with the spec that resumes it."""
    if isinstance(value, list):
        return [without_resumable_model_fields(v) for v in value]
    if not isinstance(value, dict):
        return value
    is_model = "provider" in value and "model" in value
    return {k: without_resumable_model_fields(v) for k, v in value.items()
            if not (is_model and k in RESUMABLE_MODEL_FIELDS)}
