"""What llama.cpp serves for a `provider: local` model entry: a GGUF file, the tokenizer prompts are rendered with,
and (for fine-tuning) the Hugging Face checkpoint those GGUF weights equal.

- an embedded name: its shipped GGUF (``smollm2-135m``: Q4_1, ``qwen2.5-coder-1.5b``: Q4_K_M), or with
  ``training_base`` a GGUF written from the checkpoint fine-tuning trains on, in the dtype it trains in (F32, or
  BF16 / F16 for an adapter trained against bf16 / fp16 weights: ``training_base: bfloat16``);
- a ``.gguf`` file: that file (it cannot be a fine-tuning base: there is no checkpoint to train);
- a local Hugging Face checkpoint directory (LLaMA or Qwen2): an F32 GGUF of it, written once into the cache;
- a hub id: downloaded by ``huggingface_hub`` (where the hub is reachable), then as a local directory.

Derived files (tokenizers, F32 GGUFs, LoRA GGUFs) are written to a temporary name and renamed into place, so a
killed run never leaves a half-written file that a later run would trust. Cache root: ``$THINKTRACE_CACHE`` or
``~/.cache/thinktrace``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from thinktrace.errors import SpecError
from thinktrace.lm.embedded import (_is_complete, cache_root, canonical_name, convert_embedded, embedded_cache_dir,
                                    embedded_names, gguf_path)

_lock = threading.Lock()
ADAPTER_GGUF = "adapter.gguf"  # written into a PEFT adapter directory beside adapter_model.safetensors
TRAINING_INFO = "thinktrace_training.json"  # written by fine-tuning into the adapter directory: base dtype, device
GGUF_DTYPES = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def base_dtype(training_base: bool | str) -> str | None:
    """The dtype a `training_base` setting asks for: None (False: the shipped file), float32 (True) or the name."""
    if training_base is False or training_base is None:
        return None
    if training_base is True:
        return "float32"
    if training_base not in GGUF_DTYPES:
        raise SpecError("training_base", f"unknown dtype {training_base!r} (allowed: true, false, "
                        f"{', '.join(GGUF_DTYPES)})")
    return str(training_base)


def adapter_dtype(adapter_dir: str | Path) -> str:
    """The dtype of the base weights an adapter was trained against (adapters without a record: float32)."""
    import json

    info = Path(adapter_dir) / TRAINING_INFO
    try:
        return str(json.loads(info.read_text(encoding="utf-8")).get("base_dtype") or "float32")
    except FileNotFoundError:
        return "float32"


@dataclass(frozen=True)
class Served:
    """The files behind one local model."""

    gguf: Path  #: what llama.cpp loads
    tokenizer: Path  #: directory of the Hugging Face tokenizer prompts are rendered with (fine-tuning uses it too)
    checkpoint: Path | None  #: the HF checkpoint whose weights the GGUF holds exactly (None: quantized/foreign file)
    dtype: str = "float32"  #: with a checkpoint: the dtype its weights are held in (float32, bfloat16, float16)


def _key(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def _fingerprint(path: Path) -> str:
    """Changes when the files of a checkpoint directory (or a file) change: names, sizes and mtimes."""
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return _key(*[(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()])


class NotPrepared(Exception):
    """A derived file is not in the cache yet (raised only with ``cached_only``)."""


def tokenizer_from_gguf(gguf: Path, field: str = "model", cached_only: bool = False) -> Path:
    """A Hugging Face tokenizer read from a GGUF file's metadata, saved once into the cache (reading it takes a few
    seconds, loading the saved copy a fraction of one)."""
    dest = cache_root() / "tokenizers" / _key(gguf.resolve(), _fingerprint(gguf))
    if (dest / "tokenizer_config.json").is_file():
        return dest
    if cached_only:
        raise NotPrepared(dest)
    with _lock:
        if (dest / "tokenizer_config.json").is_file():
            return dest
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except Exception as err:
            raise SpecError(field, f"cannot read a tokenizer from {gguf}: {type(err).__name__}: {err}") from err
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            tok.save_pretrained(str(tmp))
            try:
                os.replace(tmp, dest)
            except OSError:
                if not (dest / "tokenizer_config.json").is_file():  # another process won the race: theirs is used
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _f32_gguf(checkpoint: Path, name: str, vocab_from: Path | None, field: str, cached_only: bool = False,
              dtype: str = "float32") -> Path:
    """The checkpoint as a GGUF in `dtype` (F32: exact; BF16 / F16: the weights rounded as torch rounds them)."""
    from thinktrace.lm.gguf_export import export_checkpoint

    dest = cache_root() / "gguf" / name / f"training-base-{_fingerprint(checkpoint)}.{GGUF_DTYPES[dtype]}.gguf"
    if dest.is_file():
        return dest
    if cached_only:
        raise NotPrepared(dest)
    with _lock:
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            export_checkpoint(checkpoint, dest, vocab_from=vocab_from, dtype=dtype)
    return dest


def hub_checkpoint(repo_id: str, field: str) -> Path:
    """A hub model's local snapshot (downloaded where the hub is reachable, else from the HF cache)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception as err:
        raise SpecError(field, f"cannot get {repo_id!r} from the Hugging Face hub or its cache: "
                        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err


def served_model(model: str, training_base: bool | str = False, field: str = "model",
                 cached_only: bool = False) -> Served:
    """Resolve a local model entry to the files llama.cpp and the prompt renderer need (see the module doc).
    `training_base`: False, True (F32) or the dtype of the training weights (float32, bfloat16, float16).
    With `cached_only`, raise ``NotPrepared`` instead of converting anything (see ``prepare``)."""
    model = model.strip()
    dtype = base_dtype(training_base) or "float32"
    canon = canonical_name(model)
    if canon:
        shipped = gguf_path(canon, field)
        if not training_base:
            return Served(shipped, tokenizer_from_gguf(shipped, field, cached_only), None)
        if cached_only and not _is_complete(embedded_cache_dir(canon)):
            raise NotPrepared(embedded_cache_dir(canon))
        checkpoint = convert_embedded(canon, field=field)
        return Served(_f32_gguf(checkpoint, canon, shipped, field, cached_only, dtype), checkpoint, checkpoint,
                      dtype)
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise SpecError(field, f"GGUF file {model!r} does not exist")
        if training_base:
            raise SpecError(field, f"{model!r} is a GGUF file: fine-tuning needs a Hugging Face checkpoint directory "
                            f"or an embedded model ({', '.join(embedded_names())})")
        return Served(path.resolve(), tokenizer_from_gguf(path.resolve(), field, cached_only), None)
    if model.startswith((".", "/", "~")) or path.exists():
        if not path.exists():
            raise SpecError(field, f"model directory {model!r} does not exist")
        if not path.is_dir() or not (path / "config.json").is_file():
            raise SpecError(field, f"{model!r} is neither a GGUF file nor a Hugging Face checkpoint directory "
                            "(no config.json)")
        checkpoint = path.resolve()
    elif model.count("/") == 1 and all(model.split("/")):
        checkpoint = hub_checkpoint(model, field)
    else:
        raise SpecError(field, f"unknown model {model!r}: use an embedded name ({', '.join(embedded_names())}), a "
                        "GGUF file, a local Hugging Face checkpoint directory or a hub id like org/name")
    gguf = _f32_gguf(checkpoint, "local-" + _key(checkpoint), None, field, cached_only, dtype)
    return Served(gguf, checkpoint, checkpoint, dtype)


def prepare(model: str, training_base: bool | str = False, field: str = "model") -> Served:
    """``served_model``, with any one-time conversion (GGUF -> checkpoint, checkpoint -> F32 GGUF, tokenizer
    extraction) done in a child process: those steps hold a whole model or vocabulary in memory, and a process's
    heap does not shrink after them, so the compile process would carry that memory into every later stage."""
    try:
        return served_model(model, training_base, field, cached_only=True)
    except NotPrepared:
        pass
    from thinktrace._child import call_in_child

    call_in_child(served_model, model, training_base, field)
    return served_model(model, training_base, field, cached_only=True)


def adapter_gguf(adapter_dir: str | Path, served: Served, field: str = "model.adapter") -> Path:
    """The llama.cpp LoRA GGUF of a PEFT adapter directory, written beside it on first use. The adapter must have
    been trained on `served.checkpoint` (the weights llama.cpp serves it on)."""
    from thinktrace.lm.gguf_export import export_lora

    adapter_dir = Path(adapter_dir).expanduser().resolve()
    if not (adapter_dir / "adapter_config.json").is_file():
        raise SpecError(field, f"{str(adapter_dir)!r} is not a PEFT adapter directory (no adapter_config.json)")
    if served.checkpoint is None:
        raise SpecError(field, "a LoRA adapter needs the checkpoint it was trained on as its base: use an embedded "
                        "model name or a Hugging Face checkpoint directory as `model`, not a GGUF file")
    trained = adapter_dtype(adapter_dir)
    if trained != served.dtype:
        raise SpecError(field, f"{adapter_dir} was trained against {trained} base weights, but the base is served "
                        f"as {served.dtype}: set the model's training_base to {trained} so the adapter runs on the "
                        "weights it was trained on")
    dest = adapter_dir / ADAPTER_GGUF
    source = adapter_dir / "adapter_model.safetensors"
    if dest.is_file() and (not source.is_file() or dest.stat().st_mtime_ns >= source.stat().st_mtime_ns):
        return dest
    with _lock:
        export_lora(adapter_dir, served.checkpoint, dest)
    return dest
