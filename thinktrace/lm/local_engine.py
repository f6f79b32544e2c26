"""A DSPy engine that runs a causal LM in this process with transformers.

Plugged in as ``dspy.LM("local/<name>", engine=TransformersEngine(...))`` (DSPy 3.4's engine contract,
``dspy.clients.engines.base.Engine``): DSPy owns caching, retries, history and callbacks; the engine turns one
``dspy.lm15.Request`` into one ``dspy.lm15.Response``.

Reproducibility: a request with ``config.seed`` samples from its own RNG seeded with that seed, so the same seed,
prompt and parameters give the same text (on the same machine and torch build). Temperature 0 (or None) is greedy
decoding and needs no seed. Without a seed, sampling draws from torch's global RNG.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from thinktrace import _env  # noqa: F401  (before dspy)

DEFAULT_MAX_TOKENS = 256


@dataclass(frozen=True)
class SamplingParams:
    """What a request asks of decoding. temperature 0 means greedy; top_p 1.0 / top_k 0 mean no truncation."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @classmethod
    def from_request(cls, request, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> "SamplingParams":
        c = request.config
        return cls(
            max_tokens=int(c.max_tokens) if c.max_tokens else int(default_max_tokens),
            temperature=float(c.temperature or 0.0),
            top_p=float(c.top_p) if c.top_p is not None else 1.0,
            top_k=int(c.top_k or 0),
            seed=None if c.seed is None else int(c.seed),
            stop=tuple(s for s in (c.stop or ()) if s),
        )


def request_messages(request) -> list[dict[str, str]]:
    """The request's system prompt and messages as chat-template dicts; non-text content is refused."""
    from dspy.lm15 import InvalidRequestError, TextPart

    out: list[dict[str, str]] = []
    if request.system is not None:
        if isinstance(request.system, str):
            system = request.system
        else:
            system = "".join(getattr(p, "text", "") or "" for p in request.system)
        out.append({"role": "system", "content": system})
    for m in request.messages:
        if not all(isinstance(p, TextPart) for p in m.parts):
            kinds = sorted({type(p).__name__ for p in m.parts if not isinstance(p, TextPart)})
            raise InvalidRequestError(f"the local engine handles text only; got {', '.join(kinds)}")
        role = m.role if m.role in ("system", "user", "assistant") else "user"
        out.append({"role": role, "content": m.text or ""})
    return out


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; returns (text, whether a stop string was found)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class LoadedModel:
    """A model + tokenizer pair loaded once, with the prompt encoding every local engine shares."""

    def __init__(self, model, tokenizer, path: str, adapter_path: str | None):
        self.model = model
        self.tokenizer = tokenizer
        self.path = path
        self.adapter_path = adapter_path
        self.context_length = int(getattr(model.config, "max_position_embeddings", 0) or 8192)
        eos = tokenizer.eos_token_id
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids = {i for i in ([eos] + (gen_eos if isinstance(gen_eos, list) else [gen_eos])) if i is not None}
        self.eos_ids = sorted(ids)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.eos_ids or [0])[0]

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return list(ids)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return tok(text, add_special_tokens=True)["input_ids"]

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def load_model(path: str, adapter_path: str | None = None, *, merge_adapter: bool = True) -> LoadedModel:
    """Load a HF checkpoint directory (or hub id) in fp32 on CPU, eval mode, optionally with a PEFT LoRA adapter.

    With `merge_adapter` the LoRA weights are merged into the base (faster decoding; the base loaded here is a
    private copy, so nothing else sees the change)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path)
        if merge_adapter:
            model = model.merge_and_unload()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return LoadedModel(model, tok, path, adapter_path)


class TransformersEngine:
    """DSPy engine running a local HF causal LM; one model per engine, loaded on first use (thread-safe).

    Args:
        model: an embedded name (``smollm2-135m``), a local checkpoint directory, or a hub id
            (see ``thinktrace.lm.embedded.resolve_model_path``).
        adapter_path: optional PEFT LoRA directory applied on top of the base model.
        num_threads: torch intra-op threads to use (process-wide setting, applied at load); None keeps torch's default.
        default_max_tokens: generation budget when a request does not set max_tokens.

    Calls are serialized by a lock (one generate at a time); ``stats()`` reports calls and tokens so far.
    """

    def __init__(
        self,
        model: str,
        adapter_path: str | None = None,
        *,
        num_threads: int | None = None,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
    ):
        self.model_name = model
        self.adapter_path = adapter_path
        self.num_threads = num_threads
        self.default_max_tokens = int(default_max_tokens)
        self._loaded: LoadedModel | None = None
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "generate_s": 0.0, "load_s": 0.0}

    # -- loading -------------------------------------------------------------------------------------------
    def load(self) -> LoadedModel:
        """Load (once) and return the model; later calls return the same object."""
        if self._loaded is None:
            with self._load_lock:
                if self._loaded is None:
                    from thinktrace.lm.embedded import resolve_model_path

                    t0 = time.perf_counter()
                    if self.num_threads:
                        import torch

                        torch.set_num_threads(int(self.num_threads))
                    path = resolve_model_path(self.model_name)
                    self._loaded = load_model(path, self.adapter_path)
                    self._stats["load_s"] = round(time.perf_counter() - t0, 3)
        return self._loaded

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    # -- engine protocol -----------------------------------------------------------------------------------
    def complete(self, request):
        from dspy.clients.engines.base import validate_request

        validate_request(request)
        lm = self.load()
        params = SamplingParams.from_request(request, self.default_max_tokens)
        ids = lm.encode(request_messages(request))
        params = self._fit_context(lm, ids, params)
        t0 = time.perf_counter()
        with self._gen_lock:
            out_ids = generate_one(lm, ids, params)
        return self._response(request, lm, ids, out_ids, params, time.perf_counter() - t0)

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        """Nothing to release per call; the model stays loaded until the engine is dropped (see ``unload``)."""

    def unload(self) -> None:
        """Drop the loaded model (the next call loads it again)."""
        with self._load_lock:
            self._loaded = None

    # -- serialization (dspy saves custom engines through these) -----------------------------------------
    def dump_state(self) -> dict[str, Any]:
        """What rebuilds this engine: model name/path and options. Holds no secrets and no weights."""
        return {
            "model": self.model_name,
            "adapter_path": self.adapter_path,
            "num_threads": self.num_threads,
            "default_max_tokens": self.default_max_tokens,
        }

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> "TransformersEngine":
        return cls(
            state["model"],
            state.get("adapter_path"),
            num_threads=state.get("num_threads"),
            default_max_tokens=state.get("default_max_tokens", DEFAULT_MAX_TOKENS),
        )

    # -- accounting --------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Totals since creation: calls, input/output tokens, seconds spent generating and loading."""
        with self._stats_lock:
            return dict(self._stats)

    def _record(self, n_in: int, n_out: int, seconds: float) -> None:
        with self._stats_lock:
            self._stats["calls"] += 1
            self._stats["input_tokens"] += n_in
            self._stats["output_tokens"] += n_out
            self._stats["generate_s"] += seconds

    def _fit_context(self, lm: LoadedModel, ids: list[int], params: SamplingParams) -> SamplingParams:
        from dspy.lm15 import ContextLengthError

        room = lm.context_length - len(ids)
        if room < 1:
            raise ContextLengthError(f"prompt has {len(ids)} tokens; the model's context is {lm.context_length}")
        if params.max_tokens > room:
            params = SamplingParams(room, params.temperature, params.top_p, params.top_k, params.seed, params.stop)
        return params

    def _response(self, request, lm: LoadedModel, ids, out_ids, params: SamplingParams, seconds: float):
        from dspy.lm15 import Message, Response, TextPart, Usage

        text = lm.decode(out_ids)
        text, stopped = truncate_at_stop(text, params.stop)
        ended_eos = bool(out_ids) and out_ids[-1] in lm.eos_ids
        finish = "stop" if (stopped or ended_eos or len(out_ids) < params.max_tokens) else "length"
        self._record(len(ids), len(out_ids), seconds)
        return Response(
            id=None,
            model=request.model or self.model_name,
            message=Message.assistant([TextPart(text)]),
            finish_reason=finish,
            usage=Usage(input_tokens=len(ids), output_tokens=len(out_ids)),
        )

    def __repr__(self) -> str:
        adapter = f", adapter_path={self.adapter_path!r}" if self.adapter_path else ""
        return f"TransformersEngine({self.model_name!r}{adapter}, loaded={self.loaded})"


def generate_one(lm: LoadedModel, ids: list[int], params: SamplingParams) -> list[int]:
    """Generate for one prompt with HF ``generate``; returns the new token ids (without padding).

    A seeded request runs inside ``torch.random.fork_rng`` so it neither reads nor disturbs the global RNG."""
    import torch

    kwargs: dict[str, Any] = dict(
        max_new_tokens=params.max_tokens,
        pad_token_id=lm.pad_id,
        eos_token_id=lm.eos_ids or None,
    )
    if params.greedy:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
    if params.stop:
        kwargs.update(stop_strings=list(params.stop), tokenizer=lm.tokenizer)
    input_ids = torch.tensor([ids], dtype=torch.long)
    attention = torch.ones_like(input_ids)
    with torch.inference_mode():
        if params.seed is not None and not params.greedy:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(params.seed)
                out = lm.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        else:
            out = lm.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
    new = out[0, len(ids) :].tolist()
    # generate pads finished rows; a single row stops at eos, but strip defensively
    while new and new[-1] == lm.pad_id and lm.pad_id not in lm.eos_ids:
        new.pop()
    return new
