"""Local models on llama.cpp: a DSPy engine over an in-process llama.cpp server (the ``xllamacpp`` wheel).

Why the engine API and not llama.cpp's OpenAI endpoint through LiteLLM: the engine sends llama.cpp *token ids*
rendered by the same function fine-tuning trains on (``thinktrace.lm.prompt``), so a fine-tuned rater sees at
inference exactly the ids it was trained on; llama.cpp-only request fields (``min_p``, a GBNF ``grammar`` that
constrains the label, ``cache_prompt``, per-request LoRA selection) travel without a LiteLLM passthrough; and no
port or HTTP client is involved. ``python -m thinktrace.serve`` exposes the same server over HTTP for other tools.

- ``LlamaServer``: one llama.cpp server for one base GGUF file and the LoRA adapters registered on it (llama.cpp
  selects the adapter per request). Started on the first request, stopped by ``stop()`` (the factory stops every
  server between pipeline stages, so a model holds memory only while a stage uses it). Registering an adapter
  after start restarts it once no request is in flight.
- ``get_server(cfg)`` / ``get_engine(cfg)``: the process-wide servers, one per GGUF file, so two raters on the same
  model (or a base model and its LoRA adapters) load it once; ``release_engines()`` stops them all,
  ``engine_stats()`` counts their work (all importable from ``thinktrace.lm.factory`` too).
- ``LlamaCppEngine``: DSPy's engine contract (``complete(request) -> dspy.lm15.Response``) for one model entry:
  the server, an optional adapter and the entry's sampling defaults. Every request carries its sampling settings
  explicitly (temperature, top_p, top_k, min_p, seed, max_tokens, stop): llama.cpp's server defaults (top_k 40,
  top_p 0.95, min_p 0.05) never apply silently. A request's ``metadata["thinktrace_grammar"]`` (a GBNF grammar,
  see ``thinktrace.lm.grammar``) constrains the answer.

Reproducibility: the same seed, prompt and settings give the same text (llama.cpp samples each request from its own
seeded RNG); without a seed, llama.cpp draws one. Greedy decoding (temperature 0) needs no seed. Concurrent requests
share batches, which can change floating-point sums in the last bits (a token flips only at a near-tie).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from pathlib import Path
from typing import Any

import thinktrace._env  # noqa: F401  (before dspy)
from thinktrace.errors import SpecError
from thinktrace.lm.config import ModelConfig
from thinktrace.lm.grammar import GRAMMAR_KEY
from thinktrace.lm.weights import Served, adapter_gguf, prepare

MIN_P_KEY = "thinktrace_min_p"

#: called after every request a server answers, as ``recorder(server, payload, answer, started, ended)`` (perf
#: counter seconds); set by ``record_requests`` (benchmarks/pipeline.py replays what a run sent)
_recorder = None


def record_requests(recorder) -> None:
    """Call ``recorder(server, payload, answer, started, ended)`` after each request every server answers (None:
    stop). For measuring: the recorder runs on the request's thread and must be quick and thread-safe."""
    global _recorder
    _recorder = recorder


def server_params(served: Served, settings, adapters=(), slot_dir=None):
    """llama.cpp's parameters for serving `served` with `settings` (a LlamaSettings) and LoRA `adapters`;
    `slot_dir`: where slot states are saved (``share_prefix``; None: the slots endpoint is off)."""
    import xllamacpp

    s = settings
    p = xllamacpp.CommonParams()
    p.model.path = str(served.gguf)
    p.n_parallel = s.slots
    p.n_ctx = s.slots * s.context
    p.cont_batching = True
    p.cache_prompt = True
    p.cache_ram_mib = s.cache_ram_mib
    if not s.mmap:  # read, not mapped: repacked weights would otherwise sit in memory twice (LlamaSettings.mmap)
        p.load_mode = xllamacpp.llama_load_mode.LLAMA_LOAD_MODE_NONE
    for cpu in (p.cpuparams, p.cpuparams_batch):
        cpu.n_threads = s.threads
        cpu.poll = s.poll
    p.warmup = False
    p.verbosity = -1
    p.endpoint_slots = bool(slot_dir)  # slot save/restore (share_prefix), on the loopback listener only
    if slot_dir:
        p.slot_save_path = str(slot_dir).rstrip("/") + "/"
    if served.checkpoint is not None:  # the exact weights transformers trains: compute like it (flash attention
        # and an f16 KV cache each moved first-token probabilities by 1e-3 to 5e-3 against transformers)
        p.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
        p.cache_type_k = p.cache_type_v = xllamacpp.ggml_type.GGML_TYPE_F32
    if adapters:
        p.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(a), 1.0) for a in adapters]
        p.lora_init_without_apply = True  # a request without a lora list gets the base model
    return p


class LlamaServer:
    """One in-process llama.cpp server for a base GGUF and the LoRA adapters registered on it (thread-safe)."""

    def __init__(self, served: Served, settings, name: str = ""):
        self.served = served
        self.settings = settings  # thinktrace.lm.config.LlamaSettings
        self.name = name or served.gguf.stem
        self.adapters: list[Path] = []
        self._server = None
        self.before_start = None  # called (without locks held) before the server starts: see make_room
        self._cond = threading.Condition()
        self._inflight = 0
        self._slots = None  # thinktrace.lm.prefix.SlotTable while running with share_prefix
        self._slot_dir = None
        self._stats = {"calls": 0, "input_tokens": 0, "cached_tokens": 0, "output_tokens": 0, "generate_s": 0.0,
                       "load_s": 0.0, "starts": 0, "slot_saves": 0, "slot_restores": 0}

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def register_adapter(self, gguf: Path) -> int:
        """The per-request id of LoRA adapter `gguf` (registered once; a running server restarts to load it)."""
        gguf = Path(gguf).resolve()
        with self._cond:
            if gguf in self.adapters:
                return self.adapters.index(gguf)
            self.adapters.append(gguf)
            if self._server is not None:
                self._stop_locked()
            return len(self.adapters) - 1

    def _params(self):
        return server_params(self.served, self.settings, self.adapters, slot_dir=self._slot_dir)

    def _start_locked(self) -> None:
        import xllamacpp

        t0 = time.perf_counter()
        if getattr(self.settings, "share_prefix", False):
            import tempfile

            from thinktrace.lm.prefix import SlotTable

            self._slot_dir = tempfile.mkdtemp(prefix="thinktrace-slots-")
            self._slots = SlotTable(self.settings.slots, self._cond)
        try:
            self._server = xllamacpp.Server(self._params())
        except Exception as err:
            from thinktrace.errors import ThinktraceError

            raise ThinktraceError(f"llama.cpp could not load {self.served.gguf}: {type(err).__name__}: {err}") from err
        self._stats["load_s"] += time.perf_counter() - t0
        self._stats["starts"] += 1

    def _stop_locked(self) -> None:
        while self._inflight:
            self._cond.wait()
        self._server = None  # the server stops and frees its memory when the object goes
        self._forget_slots()

    def _forget_slots(self) -> None:
        """A stopped server's slots hold nothing: drop the table and the saved slot states."""
        if self._slot_dir is not None:
            import shutil

            shutil.rmtree(self._slot_dir, ignore_errors=True)
        self._slots = self._slot_dir = None

    def stop(self) -> None:
        """Stop the server once in-flight requests finish (the next request starts it again)."""
        with self._cond:
            self._stop_locked()

    def stop_if_idle(self) -> bool:
        """Stop the server now if no request is in flight; returns whether it is stopped."""
        with self._cond:
            if self._inflight == 0:
                self._server = None
                self._forget_slots()
            return self._server is None

    @property
    def exact(self) -> bool:
        """Serving the exact weights of a training checkpoint (an F32 GGUF): computed without lossy shortcuts."""
        return self.served.checkpoint is not None

    @property
    def running(self) -> bool:
        return self._server is not None

    @functools.cached_property
    def tokenizer(self):
        """The Hugging Face tokenizer prompts are rendered with. Loaded by the first caller; ``get_server`` loads
        it in the thread that builds the LM (transformers' lazy imports are not safe to race from worker threads).

        The tokenizer.json-backed class, not ``AutoTokenizer``: the same ids and chat template (every prepared
        tokenizer was compared), without ``AutoTokenizer``'s import of torch (~0.3 GiB resident in the run's own
        process, which never trains)."""
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(self.served.tokenizer))

    # -- requests ----------------------------------------------------------------------------------------------
    def complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one OpenAI-style completion payload (``prompt`` as token ids) and return llama.cpp's answer."""
        if self._server is None and self.before_start is not None:
            self.before_start(self)
        with self._cond:
            if self._server is None:
                self._start_locked()
            server, slots = self._server, self._slots
            self._inflight += 1
            plan = None
            if slots is not None:  # share_prefix: pinned to the slot holding most of the prompt (thinktrace.lm.prefix)
                key = tuple((a["id"], a["scale"]) for a in payload.get("lora") or ())
                plan = slots.acquire(key, payload["prompt"])
                payload = {**payload, "id_slot": plan.slot}
        t0 = time.perf_counter()
        ok = False
        try:
            if plan is not None and plan.restore is not None:
                self._restore(server, slots, plan)
            out = server.handle_completions(payload)
            ok = isinstance(out, dict) and not out.get("error")
        finally:
            if plan is not None:
                self._release(server, slots, plan.slot, ok)
            with self._cond:
                self._inflight -= 1
                self._cond.notify_all()
        if _recorder is not None:
            _recorder(self, payload, out, t0, time.perf_counter())
        _raise_for_error(out, context_hint=f"raise `llama.context` of the model entries on {self.name} (now "
                                           f"{self.settings.context} tokens per slot)")
        usage = out.get("usage") or {}
        with self._cond:
            self._stats["calls"] += 1
            self._stats["input_tokens"] += int(usage.get("prompt_tokens") or 0)
            self._stats["cached_tokens"] += int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
            self._stats["output_tokens"] += int(usage.get("completion_tokens") or 0)
            self._stats["generate_s"] += time.perf_counter() - t0
        return out

    # -- shared prefixes (share_prefix) ----------------------------------------------------------------------------
    def _slot_action(self, server, slot: int, action: str, filename: str) -> bool:
        """llama.cpp's own slot save / restore (``POST /slots/{id}?action=...``) on this server's loopback listener;
        False when it failed (the request then computes its prompt itself: slower, never different)."""
        import json
        import urllib.request

        req = urllib.request.Request(f"{server.listening_address}/slots/{slot}?action={action}",
                                     data=json.dumps({"filename": filename}).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                answer = json.loads(r.read() or b"{}")
        except (OSError, ValueError):
            return False
        return isinstance(answer, dict) and not answer.get("error")

    def _restore(self, server, slots, plan) -> None:
        done = self._slot_action(server, plan.slot, "restore", plan.restore.filename)
        with self._cond:
            self._stats["slot_restores"] += done
            if not done:
                slots.restore_failed(plan.restore)

    def _release(self, server, slots, slot: int, ok: bool) -> None:
        with self._cond:
            save = slots.release(slot, ok)
        if save:  # a waiting request shares this slot's prefix: save it once, it is restored into other slots
            name = f"slot{slot}.bin"
            done = self._slot_action(server, slot, "save", name)
            with self._cond:
                self._stats["slot_saves"] += done
                slots.saved(slot, name if done else None)

    def stats(self) -> dict[str, Any]:
        """Totals since creation: calls, prompt tokens (and how many came from llama.cpp's prompt cache), generated
        tokens, seconds generating and loading, server starts."""
        with self._cond:
            return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self._stats.items()}

    def __repr__(self) -> str:
        return f"LlamaServer({str(self.served.gguf)!r}, adapters={len(self.adapters)}, running={self.running})"


def _raise_for_error(out: Any, context_hint: str = "") -> None:
    """llama.cpp answers errors with an ``error`` object: raise DSPy's matching error (never a result). A prompt
    longer than a slot's context says which spec field to raise (`context_hint`)."""
    from dspy.lm15 import ContextLengthError, InvalidRequestError, ServerError

    if not isinstance(out, dict):
        raise ServerError(f"llama.cpp returned {type(out).__name__}, not a completion")
    err = out.get("error")
    if not err:
        if not out.get("choices"):
            raise ServerError("llama.cpp returned no choices")
        return
    message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    kind = (err.get("type") if isinstance(err, dict) else "") or ""
    if "context" in message.lower() or kind == "exceed_context_size_error":
        raise ContextLengthError(f"{message}; {context_hint}" if context_hint else message)
    code = int(err.get("code") or 500) if isinstance(err, dict) else 500
    raise (InvalidRequestError if 400 <= code < 500 else ServerError)(message)


def check_room(body: dict[str, Any], context: int, name: str) -> None:
    """Refuse a request whose prompt and `max_tokens` together exceed a slot's context: llama.cpp would stop the
    answer where the context ends (or, for a prompt that fills it, answer nothing), not where `max_tokens` does,
    and a cut answer read as a result is a silent wrong answer. DSPy's ContextLengthError (a final failure, never a
    result) names the spec field to raise and the size that would hold this request."""
    n, m = len(body["prompt"]), int(body["max_tokens"])
    if n + m > context:
        from dspy.lm15 import ContextLengthError

        need = -(-(n + m) // 256) * 256
        raise ContextLengthError(f"prompt ({n} tokens) + max_tokens ({m}) exceed a slot's context ({context} tokens) "
                                 f"on {name}: raise `llama.context` of the model entries on {name} to {need} or more")


class LlamaCppEngine:
    """DSPy engine for one local model entry on a shared ``LlamaServer`` (thread-safe; see the module doc)."""

    def __init__(self, server: LlamaServer, *, adapter: Path | None = None, name: str = "",
                 default_max_tokens: int = 256, top_p: float | None = None, top_k: int | None = None,
                 min_p: float | None = None, config=None):
        self.server = server
        self.config = config  # the ModelConfig this engine was built from (saved with a program)
        self.adapter = Path(adapter) if adapter else None
        self.adapter_id = server.register_adapter(self.adapter) if self.adapter else None
        self.name = name or server.name
        self.default_max_tokens = int(default_max_tokens)
        self.top_p, self.top_k, self.min_p = top_p, top_k, min_p

    def payload(self, request) -> dict[str, Any]:
        """The llama.cpp request for a DSPy request: token ids and every sampling setting spelled out."""
        from dspy.clients.engines.base import validate_request

        from thinktrace.lm.prompt import prompt_ids, request_messages

        validate_request(request)
        c = request.config
        meta = (c.extensions or {}).get("metadata") or {}
        meta = meta if isinstance(meta, dict) else {}
        min_p = meta.get(MIN_P_KEY, self.min_p)
        body: dict[str, Any] = {
            "prompt": prompt_ids(self.server.tokenizer, request_messages(request)),
            "max_tokens": int(c.max_tokens or self.default_max_tokens),
            "temperature": float(c.temperature or 0.0),
            "top_p": float(c.top_p if c.top_p is not None else (self.top_p if self.top_p is not None else 1.0)),
            "top_k": int(c.top_k if c.top_k is not None else (self.top_k or 0)),
            "min_p": float(min_p or 0.0),
            "typical_p": 1.0,
            "repeat_penalty": 1.0,
            "cache_prompt": True,
            "stop": [s for s in (c.stop or ()) if s],
        }
        if c.seed is not None:
            body["seed"] = int(c.seed) & 0xFFFFFFFF
        if meta.get(GRAMMAR_KEY):
            body["grammar"] = str(meta[GRAMMAR_KEY])
        if self.server.adapters:  # name every adapter, this entry's at scale 1, the others off: llama.cpp then
            # reuses a slot's cached prefix only if it was computed with the same adapters (checked in a test)
            body["lora"] = [{"id": i, "scale": 1.0 if i == self.adapter_id else 0.0}
                            for i in range(len(self.server.adapters))]
        return body

    def complete(self, request):
        from dspy.lm15 import Message, Response, TextPart, Usage

        body = self.payload(request)
        check_room(body, self.server.settings.context, self.server.name)
        out = self.server.complete(body)
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        finish = choice.get("finish_reason") or "stop"
        return Response(id=out.get("id"), model=request.model or self.name,
                        message=Message.assistant([TextPart(choice.get("text") or "")]),
                        finish_reason="length" if finish == "length" else "stop",
                        usage=Usage(input_tokens=int(usage.get("prompt_tokens") or len(body["prompt"])),
                                    output_tokens=int(usage.get("completion_tokens") or 0)))

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        """Nothing per engine: the shared server is stopped by ``release_engines``."""

    def stats(self) -> dict[str, Any]:
        return self.server.stats()

    # -- serialization (DSPy saves a program's custom engine through these) ------------------------------------
    def dump_state(self) -> dict[str, Any]:
        """The model entry that rebuilds this engine (local models hold no secrets; no weights)."""
        if self.config is None:
            raise TypeError("this engine was built without a ModelConfig; build it with thinktrace.lm.build_lm")
        return {"config": self.config.model_dump(mode="json")}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> "LlamaCppEngine":
        return get_engine(ModelConfig(**state["config"]))

    def __repr__(self) -> str:
        adapter = f", adapter={str(self.adapter)!r}" if self.adapter else ""
        return f"LlamaCppEngine({self.name!r}{adapter})"


# -- the process-wide servers: one per GGUF file -------------------------------------------------------------
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
    server = get_server(cfg, field)
    adapter = adapter_gguf(cfg.adapter, server.served, field=f"{field}.adapter") if cfg.adapter else None
    return LlamaCppEngine(server, adapter=adapter, name=cfg.name, default_max_tokens=cfg.max_tokens,
                          top_p=cfg.top_p, top_k=cfg.top_k, min_p=cfg.min_p, config=cfg)


def engine_stats() -> dict[str, dict[str, Any]]:
    """Per llama.cpp server (keyed by model): calls, input/cached/output tokens, generate/load seconds, starts."""
    with _registry_lock:
        items = list(_registry.values())
    return {s.name if not s.adapters else f"{s.name}+{len(s.adapters)} adapters": s.stats() for s in items}


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
