"""LM access: the embedded model, the in-process transformers engine, remote providers through dspy.LM.

- ``ModelConfig``: a `models.*` spec entry (provider, model, adapter, sampling defaults, key by env-var name).
- ``build_lm(cfg)``: a ``dspy.LM`` for it; local models share one engine per (checkpoint, adapter).
- ``TransformersEngine``: the DSPy engine running a HF causal LM in this process, one request at a time.
- ``BatchingEngine``: the same, decoding concurrent requests together (what ``build_lm`` uses for local models).
- ``resolve_model_path(model)``: embedded name / local dir / hub id -> what ``from_pretrained`` loads.
"""

from thinktrace.lm.batching import BatchingEngine
from thinktrace.lm.config import ModelConfig
from thinktrace.lm.embedded import resolve_model_path
from thinktrace.lm.factory import build_lm, engine_stats, lm_usage
from thinktrace.lm.local_engine import TransformersEngine

__all__ = ["BatchingEngine", "ModelConfig", "TransformersEngine", "build_lm", "engine_stats", "lm_usage", "resolve_model_path"]
