"""LM access: local models on llama.cpp, remote providers through dspy.LM.

- ``ModelConfig``: a `models.*` spec entry (provider, model, adapter, sampling settings, key by env-var name).
- ``build_lm(cfg)``: a ``dspy.LM`` for it; local models share one llama.cpp server per GGUF file.
- ``LlamaCppEngine`` / ``LlamaServer``: the DSPy engine for local models and the in-process llama.cpp server under it.
- ``served_model(model)``: embedded name / GGUF file / local checkpoint / hub id -> the files llama.cpp serves.
- ``resolve_model_path(model)``: the Hugging Face checkpoint fine-tuning trains (embedded GGUF converted once).
"""

from thinktrace.lm.config import LlamaSettings, ModelConfig
from thinktrace.lm.embedded import resolve_model_path
from thinktrace.lm.factory import build_lm, engine_stats, lm_usage, release_engines
from thinktrace.lm.llamacpp import LlamaCppEngine, LlamaServer
from thinktrace.lm.weights import served_model

__all__ = ["LlamaCppEngine", "LlamaServer", "LlamaSettings", "ModelConfig", "build_lm", "engine_stats", "lm_usage",
           "release_engines", "resolve_model_path", "served_model"]
