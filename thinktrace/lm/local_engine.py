"""A DSPy engine that runs a causal LM in this process with transformers.

Plugged in as ``dspy.LM("local/<name>", engine=TransformersEngine(...))`` (DSPy 3.4's engine contract,
``dspy.clients.engines.base.Engine``): DSPy owns caching, retries, history and callbacks; the engine turns one
``dspy.lm15.Request`` into one ``dspy.lm15.Response``.

Decoding is a small loop of our own (``DecodeBatch``) rather than ``model.generate``: it lets each row of a batch
keep its own sampling parameters and RNG, lets rows join and leave between steps, and reuses the key/value states
of earlier prompts that share a prefix (``PrefixCache``). This engine runs one request at a time through it; the
batching engine (``thinktrace.lm.batching``) runs many.

Reproducibility: a request with ``config.seed`` samples from its own ``torch.Generator`` seeded with that seed, so
the same seed, prompt and parameters give the same text, alone or batched with others. Temperature 0 (or None) is
greedy decoding and needs no seed. Without a seed, the request's generator is seeded from torch's global RNG. The
guarantee is up to floating point: batching, padding and prefix reuse change the shapes of the matrix products, so
logits can differ in the last bits, which flips a token only at a near-tie.
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
        """Prompt token ids. A final assistant message is a prefix the model continues (answer prefill)."""
        tok = self.tokenizer
        prefill = bool(messages) and messages[-1]["role"] == "assistant"
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(messages, add_generation_prompt=not prefill,
                                          continue_final_message=prefill, tokenize=True)
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
        prefix_cache_tokens: how many prompt tokens of key/value states to keep for reuse by later prompts that
            share a prefix (see ``PrefixCache``); 0 disables it. ~46 KB per token for SmolLM2-135M.

    Calls are serialized by a lock (one generate at a time); ``stats()`` reports calls and tokens so far.
    """

    def __init__(
        self,
        model: str,
        adapter_path: str | None = None,
        *,
        num_threads: int | None = None,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        prefix_cache_tokens: int = 4096,
    ):
        self.model_name = model
        self.prefix_cache_tokens = int(prefix_cache_tokens)
        self._prefix = PrefixCache(self.prefix_cache_tokens)
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
    def _prepare(self, request) -> "Row":
        """Validate and tokenize a request (in the caller's thread) into a Row ready to decode."""
        from dspy.clients.engines.base import validate_request

        validate_request(request)
        lm = self.load()
        params = SamplingParams.from_request(request, self.default_max_tokens)
        ids = lm.encode(request_messages(request))
        return Row(ids, self._fit_context(lm, ids, params))

    def choose(self, request, choices: list[str]):
        """Answer a choice request (see thinktrace.lm.choices) with the most likely choice, verbatim."""
        from dspy.clients.engines.base import validate_request
        from dspy.lm15 import Message, Response, TextPart, Usage

        validate_request(request)
        lm = self.load()
        ids = lm.encode(request_messages(request))
        t0 = time.perf_counter()
        scores = self._score(lm, ids, choices)
        best = max(range(len(choices)), key=lambda i: scores[i])
        n_in = len(ids)
        self._record(n_in, 0, time.perf_counter() - t0)
        return Response(id=None, model=request.model or self.model_name,
                        message=Message.assistant([TextPart(choices[best])]), finish_reason="stop",
                        usage=Usage(input_tokens=n_in, output_tokens=0))

    def _score(self, lm: LoadedModel, ids: list[int], choices: list[str]) -> list[float]:
        with self._gen_lock:
            return DecodeBatch(lm, self._prefix).score(ids, choices)

    def complete(self, request):
        from thinktrace.lm.choices import requested_choices

        choices = requested_choices(request)
        if choices:
            return self.choose(request, choices)
        row = self._prepare(request)
        lm = self._loaded
        t0 = time.perf_counter()
        with self._gen_lock:
            DecodeBatch(lm, self._prefix).run([row])
        return self._response(request, lm, row, time.perf_counter() - t0)

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
            "prefix_cache_tokens": self.prefix_cache_tokens,
        }

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> "TransformersEngine":
        return cls(state["model"], state.get("adapter_path"), **cls._state_kwargs(state))

    @staticmethod
    def _state_kwargs(state: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments of __init__ saved by dump_state (subclasses add theirs)."""
        return {"num_threads": state.get("num_threads"),
                "default_max_tokens": state.get("default_max_tokens", DEFAULT_MAX_TOKENS),
                "prefix_cache_tokens": state.get("prefix_cache_tokens", 4096)}

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

    def _response(self, request, lm: LoadedModel, row: "Row", seconds: float):
        from dspy.lm15 import Message, Response, TextPart, Usage

        text, _ = truncate_at_stop(lm.decode(row.out), row.params.stop)
        self._record(len(row.ids), len(row.out), seconds)
        return Response(
            id=None,
            model=request.model or self.model_name,
            message=Message.assistant([TextPart(text)]),
            finish_reason=row.finish,
            usage=Usage(input_tokens=len(row.ids), output_tokens=len(row.out)),
        )

    def __repr__(self) -> str:
        adapter = f", adapter_path={self.adapter_path!r}" if self.adapter_path else ""
        return f"TransformersEngine({self.model_name!r}{adapter}, loaded={self.loaded})"


class PrefixCache:
    """Key/value states of recent prompts, reused for any later prompt that shares a token prefix with them.

    DSPy prompts share long prefixes (the adapter's system prompt, the guideline, few-shot demos) and rejection
    sampling sends the same prompt k times, so most prefill work repeats. Entries hold one prompt's per-layer
    ``(keys, values)`` of shape ``[1, heads, length, head_dim]``; the total length held is bounded by
    ``max_tokens`` (least recently used entries go first; 0 disables the cache). Because attention is causal, the
    first n positions of an entry are valid for any prompt whose first n tokens match. Not thread-safe: one
    decoding thread owns it."""

    def __init__(self, max_tokens: int = 4096):
        from collections import OrderedDict

        self.max_tokens = int(max_tokens)
        self._entries: "OrderedDict[tuple[int, ...], list]" = OrderedDict()
        self._tokens = 0

    def longest(self, ids: list[int]) -> tuple[int, list | None]:
        """(n, kv): the longest reusable prefix, at most len(ids) - 1 tokens (the last token is always run, to
        get its logits)."""
        import os.path

        ids = tuple(ids)
        best, best_kv = 0, None
        for key, kv in self._entries.items():
            n = len(os.path.commonprefix([key, ids]))
            if n > best:
                best, best_kv, best_key = n, kv, key
        if best_kv is None:
            return 0, None
        self._entries.move_to_end(best_key)
        return min(best, len(ids) - 1), best_kv

    def put(self, ids: list[int], kv: list) -> None:
        if self.max_tokens <= 0 or len(ids) > self.max_tokens:
            return
        key = tuple(ids)
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        self._entries[key] = kv
        self._tokens += len(key)
        while self._tokens > self.max_tokens:
            old, _ = self._entries.popitem(last=False)
            self._tokens -= len(old)

    def __len__(self) -> int:
        return len(self._entries)


class Row:
    """One request being decoded: its prompt, sampling parameters, own RNG, generated ids and outcome."""

    __slots__ = ("ids", "params", "generator", "out", "done", "finish", "error", "event", "t_submit")

    def __init__(self, ids: list[int], params: SamplingParams):
        import torch

        self.ids = ids
        self.params = params
        self.generator = None
        if not params.greedy:
            # A seeded request samples from its own stream, whatever else shares its batch. An unseeded one
            # takes its stream's seed from torch's global RNG (reproducible only if the request order is).
            seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
            self.generator = torch.Generator().manual_seed(seed)
        self.out: list[int] = []
        self.done = False
        self.finish = "stop"
        self.error: BaseException | None = None
        self.event = threading.Event()
        self.t_submit = time.perf_counter()


def sample_rows(rows: list[Row], logits) -> list[int]:
    """Next token per row from last-position logits ``[B, vocab]``: argmax for greedy rows; temperature, top-k,
    top-p and the row's own generator for the others. Each row's choice depends only on its own logits and RNG."""
    import torch

    logits = logits.float()
    out = [0] * len(rows)
    greedy = [i for i, r in enumerate(rows) if r.params.greedy]
    if greedy:
        for i, t in zip(greedy, logits[greedy].argmax(-1).tolist()):
            out[i] = t
    sampled = [i for i, r in enumerate(rows) if not r.params.greedy]
    if not sampled:
        return out
    temps = torch.tensor([rows[i].params.temperature for i in sampled], dtype=logits.dtype)
    lg = logits[sampled] / temps[:, None]
    for j, i in enumerate(sampled):
        k = rows[i].params.top_k
        if 0 < k < lg.shape[-1]:
            kth = torch.topk(lg[j], k).values[-1]
            lg[j] = lg[j].masked_fill(lg[j] < kth, float("-inf"))
    top_p = torch.tensor([rows[i].params.top_p for i in sampled], dtype=logits.dtype)
    if bool((top_p < 1.0).any()):
        sorted_lg, order = torch.sort(lg, dim=-1, descending=True)
        probs = sorted_lg.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p[:, None]  # keep the smallest set reaching top_p (never empty)
        lg = lg.scatter(-1, order, sorted_lg.masked_fill(drop, float("-inf")))
    # inverse-CDF sampling: one uniform per row from the row's own generator, then one vectorized search
    cdf = lg.softmax(-1).cumsum(-1)
    u = torch.cat([torch.rand(1, generator=rows[i].generator, dtype=cdf.dtype) for i in sampled])
    picks = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).clamp_(max=cdf.shape[-1] - 1)[:, 0]
    for i, t in zip(sampled, picks.tolist()):
        out[i] = t
    return out


_BUFFERED_LAYER = None


def new_cache():
    """An empty KV cache whose layers append into spare capacity (``BufferedLayer``) instead of concatenating the
    whole cache at every step as transformers' ``DynamicLayer`` does (a copy of all keys and values per token)."""
    global _BUFFERED_LAYER
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if _BUFFERED_LAYER is None:

        class BufferedLayer(DynamicLayer):
            spare = 64  # columns allocated ahead; reallocated (one copy) when used up or after rows change

            def update(self, key_states, value_states, *args, **kwargs):
                if not self.is_initialized or self.keys is None or self.keys.numel() == 0:
                    self.lazy_initialization(key_states, value_states)
                    self.keys, self.values, self._kb, self._vb = key_states, value_states, None, None
                    return self.keys, self.values
                t, n = self.keys.shape[-2], key_states.shape[-2]
                kb = getattr(self, "_kb", None)
                if (kb is None or kb.data_ptr() != self.keys.data_ptr() or kb.shape[:2] != self.keys.shape[:2]
                        or kb.stride() != self.keys.stride() or t + n > kb.shape[-2]):
                    b, h, _, d = self.keys.shape
                    self._kb = self.keys.new_empty((b, h, t + n + self.spare, d))
                    self._vb = self.values.new_empty((b, self.values.shape[1], t + n + self.spare,
                                                      self.values.shape[3]))
                    self._kb[:, :, :t] = self.keys
                    self._vb[:, :, :t] = self.values
                self._kb[:, :, t : t + n] = key_states
                self._vb[:, :, t : t + n] = value_states
                self.keys, self.values = self._kb[:, :, : t + n], self._vb[:, :, : t + n]
                return self.keys, self.values

            def reserve(self, rows: int, t: int, like_k, like_v):
                """Replace the states by zeroed buffers for `rows` x `t` columns (plus spare) and return the
                ``[rows, H, t, D]`` views to fill. The old tensors are released as soon as the caller drops them."""
                self._kb = like_k.new_zeros((rows, like_k.shape[1], t + self.spare, like_k.shape[3]))
                self._vb = like_v.new_zeros((rows, like_v.shape[1], t + self.spare, like_v.shape[3]))
                self.device, self.is_initialized = like_k.device, True
                self.keys, self.values = self._kb[:, :, :t], self._vb[:, :, :t]
                return self.keys, self.values

        _BUFFERED_LAYER = BufferedLayer
    cache = DynamicCache()
    cache.layer_class_to_replicate = _BUFFERED_LAYER
    return cache


class DecodeBatch:
    """Rows decoding together over one left-padded KV cache; rows join (``admit``) and leave (``reap``) between
    steps, so a long generation never holds up the rest (continuous batching).

    Each admitted prompt is prefilled on its own, reusing the longest matching prefix from the ``PrefixCache``,
    then left-padded into the shared cache. Works for decoder-only models whose cache is all full-attention
    ``DynamicLayer`` (Llama, SmolLM2, Qwen2 without sliding windows, ...)."""

    def __init__(self, lm: LoadedModel, prefix: PrefixCache | None = None):
        self.lm = lm
        self.prefix = prefix if prefix is not None else PrefixCache(0)
        self.rows: list[Row] = []
        self.cache = None  # DynamicCache, keys [B, H, T, D]
        self.mask = None  # [B, T] long, 0 = left padding
        self.pos = None  # [B] position of the next token
        self.last = None  # [B] last sampled token, fed at the next step
        # prefill_tokens: prompt tokens run through the model; prefix_hit_tokens: prompt tokens served from the
        # prefix cache or shared with an identical prompt admitted at the same time
        self.stats = {"steps": 0, "row_steps": 0, "prefill_tokens": 0, "prefix_hit_tokens": 0}

    # -- joining -------------------------------------------------------------------------------------------
    def admit(self, rows: list[Row]) -> list[Row]:
        """Prefill `rows`, sample their first token and add the unfinished ones; returns rows already finished.

        Identical prompts are prefilled once. The distinct prompts are prefilled together in one forward: each
        reuses the longest cached prefix, except that all of them recompute the same number S of final tokens
        (S = the longest uncached tail among them), so the batch is plain left padding with no holes."""
        import torch
        from transformers.cache_utils import DynamicLayer

        groups: dict[tuple[int, ...], list[Row]] = {}
        for row in rows:
            groups.setdefault(tuple(row.ids), []).append(row)
        prompts = list(groups)
        found = [self.prefix.longest(list(ids)) for ids in prompts]
        window = max(len(ids) - (n if kv is not None else 0) for ids, (n, kv) in zip(prompts, found))
        reuse = [max(0, len(ids) - window) if kv is not None else 0 for ids, (_, kv) in zip(prompts, found)]
        width = max(reuse)
        u = len(prompts)
        cache = new_cache()
        mask = torch.zeros((u, width + window), dtype=torch.long)
        if width:
            ref = next(kv for (_, kv), r in zip(found, reuse) if r)
            for li, (k0, v0) in enumerate(ref):
                keys = k0.new_zeros((u, k0.shape[1], width, k0.shape[3]))
                values = v0.new_zeros((u, v0.shape[1], width, v0.shape[3]))
                for j, ((_, kv), r) in enumerate(zip(found, reuse)):
                    if r:
                        keys[j, :, width - r :] = kv[li][0][0, :, :r]
                        values[j, :, width - r :] = kv[li][1][0, :, :r]
                cache.update(keys, values, li)
        input_ids = torch.full((u, window), self.lm.pad_id, dtype=torch.long)
        positions = torch.zeros((u, window), dtype=torch.long)
        for j, (ids, r) in enumerate(zip(prompts, reuse)):
            tail = ids[r:]
            input_ids[j, window - len(tail) :] = torch.tensor(tail, dtype=torch.long)
            positions[j, window - len(tail) :] = torch.arange(r, len(ids), dtype=torch.long)
            mask[j, width - r : width] = 1
            mask[j, width + window - len(tail) :] = 1
        with torch.inference_mode():
            out = self.lm.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache,
                                use_cache=True, logits_to_keep=1)
        if not all(isinstance(layer, DynamicLayer) and not layer.is_sliding for layer in cache.layers):
            raise NotImplementedError("batched decoding needs a model whose KV cache is all full attention")
        for j, ids in enumerate(prompts):  # remember each prompt's states (copied: the group tensor is freed)
            n = len(ids)
            self.prefix.put(list(ids), [(layer.keys[j : j + 1, :, -n:].clone(), layer.values[j : j + 1, :, -n:].clone())
                                        for layer in cache.layers])
            self.stats["prefill_tokens"] += n - reuse[j]
            self.stats["prefix_hit_tokens"] += reuse[j] + n * (len(groups[ids]) - 1)  # duplicates cost nothing
        logits = out.logits[:, -1, :]
        finished, joined, index = [], [], []
        for j, ids in enumerate(prompts):
            members = groups[ids]
            firsts = sample_rows(members, logits[j : j + 1].expand(len(members), -1))
            for row, token in zip(members, firsts):
                if self._append(row, token):
                    finished.append(row)
                else:
                    joined.append(row)
                    index.append(j)
        if joined:
            idx = torch.tensor(index, dtype=torch.long)
            self._merge(joined, [(layer.keys[idx], layer.values[idx]) for layer in cache.layers], mask[idx])
        return finished

    def _merge(self, joined: list[Row], kv: list, mask) -> None:
        """Append rows whose prompt states are `kv` (per layer [n, H, t, D]) and `mask` [n, t] to the batch,
        left-padding whichever side is shorter."""
        import torch

        old_b = len(self.rows)
        old_t = 0 if self.mask is None else self.mask.shape[1]
        new_t = mask.shape[1]
        t = max(old_t, new_t)
        b = old_b + len(joined)
        merged_mask = torch.zeros((b, t), dtype=torch.long)
        merged_mask[old_b:, t - new_t :] = mask
        pos = torch.tensor([len(r.ids) for r in joined], dtype=torch.long)
        last = torch.tensor([r.out[-1] for r in joined], dtype=torch.long)
        if not old_b:
            self.cache = new_cache()
            self.cache.layers = [_BUFFERED_LAYER() for _ in kv]
        else:
            merged_mask[:old_b, t - old_t :] = self.mask
            pos, last = torch.cat([self.pos, pos]), torch.cat([self.last, last])
        for layer, (keys, values) in zip(self.cache.layers, kv):  # one layer at a time: little transient memory
            old_k, old_v = (layer.keys, layer.values) if old_b else (None, None)
            k_all, v_all = layer.reserve(b, t, keys, values)
            if old_b:
                k_all[:old_b, :, t - old_t :] = old_k
                v_all[:old_b, :, t - old_t :] = old_v
            k_all[old_b:, :, t - new_t :] = keys
            v_all[old_b:, :, t - new_t :] = values
            del old_k, old_v
        self.rows.extend(joined)
        self.mask, self.pos, self.last = merged_mask, pos, last

    # -- decoding ------------------------------------------------------------------------------------------
    def step(self) -> None:
        """Run one decoding step for every row."""
        import torch

        if not self.rows:
            return
        mask = torch.cat([self.mask, torch.ones((len(self.rows), 1), dtype=torch.long)], dim=1)
        with torch.inference_mode():
            out = self.lm.model(input_ids=self.last[:, None], attention_mask=mask, position_ids=self.pos[:, None],
                                cache=self.cache, use_cache=True, logits_to_keep=1)
        self.mask = mask
        self.pos = self.pos + 1
        tokens = sample_rows(self.rows, out.logits[:, -1, :])
        for row, token in zip(self.rows, tokens):
            self._append(row, token)
        self.last = torch.tensor(tokens, dtype=torch.long)
        self.stats["steps"] += 1
        self.stats["row_steps"] += len(self.rows)

    def _append(self, row: Row, token: int) -> bool:
        """Record a sampled token; decide whether the row is finished."""
        row.out.append(token)
        if token in self.lm.eos_ids:
            row.done, row.finish = True, "stop"
        elif row.params.stop and truncate_at_stop(self.lm.decode(row.out), row.params.stop)[1]:
            row.done, row.finish = True, "stop"
        elif len(row.out) >= row.params.max_tokens:
            row.done, row.finish = True, "length"
        return row.done

    def reap(self) -> list[Row]:
        """Remove finished rows (and cache columns no remaining row uses); returns them."""
        import torch

        done = [r for r in self.rows if r.done]
        if not done:
            return []
        keep = [i for i, r in enumerate(self.rows) if not r.done]
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.mask = self.pos = self.last = None
            return done
        idx = torch.tensor(keep, dtype=torch.long)
        mask = self.mask[idx]
        first = int(mask.any(0).long().argmax().item())  # leading columns that are padding for every row
        width = mask.shape[1] - first
        for layer in self.cache.layers:
            old_k, old_v = layer.keys, layer.values
            k, v = layer.reserve(len(keep), width, old_k, old_v)
            k.copy_(old_k[idx, :, first:])
            v.copy_(old_v[idx, :, first:])
            del old_k, old_v
        self.mask, self.pos, self.last = mask[:, first:], self.pos[idx], self.last[idx]
        return done

    def score(self, ids: list[int], choices: list[str]) -> list[float]:
        """Summed log-probability of each choice's tokens after prompt `ids` (the same quantity as
        ``thinktrace.lm.choices.score_choices``, same tokenization: a leading space unless the choice has one).

        The prompt is prefilled once, reusing the prefix cache (it usually extends a prompt just generated from),
        and the choices run as one small batch over its key/value states: logits only for the choice tokens.
        Independent of the rows being decoded."""
        import torch

        tok = self.lm.tokenizer
        conts = [tok.encode(c if c.startswith(" ") else " " + c, add_special_tokens=False) for c in choices]
        n, kv = self.prefix.longest(ids)
        cache = new_cache()
        if kv is not None and n > 0:
            for li, (k, v) in enumerate(kv):
                cache.update(k[:, :, :n], v[:, :, :n], li)
        else:
            n = 0
        with torch.inference_mode():
            out = self.lm.model(input_ids=torch.tensor([ids[n:]], dtype=torch.long),
                                position_ids=torch.arange(n, len(ids), dtype=torch.long)[None], cache=cache,
                                use_cache=True, logits_to_keep=1)
            self.prefix.put(ids, [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers])
            self.stats["prefill_tokens"] += len(ids) - n
            self.stats["prefix_hit_tokens"] += n
            first = torch.log_softmax(out.logits[0, -1].float(), -1)
            scores = [float(first[c[0]]) if c else 0.0 for c in conts]
            width = max(len(c) for c in conts)
            if width > 1:  # the later tokens of multi-token choices: one forward over the expanded prompt states
                rows = len(conts)
                expanded = new_cache()
                for li, layer in enumerate(cache.layers):
                    expanded.update(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1), li)
                inp = torch.full((rows, width - 1), self.lm.pad_id, dtype=torch.long)
                mask = torch.ones((rows, len(ids) + width - 1), dtype=torch.long)
                for i, c in enumerate(conts):
                    if len(c) > 1:
                        inp[i, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
                    mask[i, len(ids) + max(len(c) - 1, 0) :] = 0  # right padding, after the real tokens
                positions = torch.arange(len(ids), len(ids) + width - 1, dtype=torch.long)[None].expand(rows, -1)
                logits = self.lm.model(input_ids=inp, attention_mask=mask, position_ids=positions, cache=expanded,
                                       use_cache=True).logits
                logprobs = torch.log_softmax(logits.float(), -1)
                for i, c in enumerate(conts):
                    scores[i] += float(sum(logprobs[i, j, t] for j, t in enumerate(c[1:])))
        return scores

    def run(self, rows: list[Row]) -> list[Row]:
        """Decode `rows` to completion (no later arrivals); returns them."""
        self.admit(rows)
        while self.rows:
            self.step()
            self.reap()
        return rows
