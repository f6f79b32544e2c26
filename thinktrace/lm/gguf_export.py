"""Write llama.cpp GGUF files from Hugging Face checkpoints and PEFT LoRA adapters, with gguf-py only.

- ``export_checkpoint(hf_dir, dest)``: a LLaMA or Qwen2 causal-LM checkpoint -> an all-F32 GGUF, so llama.cpp
  computes with exactly the weights transformers holds; ``dtype="bfloat16"`` / ``"float16"``: the matrices as
  BF16 / F16 and the 1-D weights as F32 holding the same rounded values, i.e. exactly the weights transformers
  holds when it loads the checkpoint with ``dtype=torch.bfloat16`` / ``float16`` (how an adapter trained in bf16
  saw its base). The vocabulary is built from ``tokenizer.json`` (GPT-2
  style byte-level BPE) or copied from another GGUF (``vocab_from``).
- ``export_lora(adapter_dir, base_hf_dir, dest)``: a PEFT LoRA adapter -> a llama.cpp LoRA adapter GGUF.

This is a small re-implementation of what llama.cpp's ``convert_hf_to_gguf.py`` / ``convert_lora_to_gguf.py`` do
for these two architectures. Two details matter for getting the same numbers as transformers:

- llama.cpp's "llama" arch applies RoPE to interleaved pairs, HF LLaMA to the two halves of each head, so the
  rows of q/k (weights, biases, and LoRA ``B`` matrices) are permuted per head (``_permute``). Qwen2 uses the
  half-split ("neox") layout in llama.cpp too, so nothing is permuted there.
- llama.cpp scales a LoRA delta by ``alpha / rank`` (rank read from each tensor). PEFT does too, except with
  rsLoRA (``alpha / sqrt(rank)``); that difference is folded into ``B`` so the GGUF reproduces PEFT exactly.

Files are written to a temporary file beside ``dest`` and renamed into place: nothing half-written is ever at dest.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from thinktrace.errors import SpecError

# HF architecture -> gguf arch; whether q/k rows need the llama RoPE permutation.
ARCHS: dict[str, tuple[gguf.MODEL_ARCH, bool]] = {
    "LlamaForCausalLM": (gguf.MODEL_ARCH.LLAMA, True),
    "Qwen2ForCausalLM": (gguf.MODEL_ARCH.QWEN2, False),
}
LORA_TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")

# tokenizer.json Split regex (before a regex-less ByteLevel) -> llama.cpp `tokenizer.ggml.pre`; llama.cpp hard-codes
# the regex of each name. A plain ByteLevel pre-tokenizer (GPT-2's regex) is "gpt-2".
_HEAD = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_TAIL = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_PRE_BY_REGEX = {_HEAD + r"\p{N}" + _TAIL: "qwen2", _HEAD + r"\p{N}{1,3}" + _TAIL: "llama-bpe"}


def export_checkpoint(hf_dir: str | Path, dest: str | Path, *, vocab_from: str | Path | None = None,
                      dtype: str = "float32") -> Path:
    """Convert the HF causal-LM checkpoint in `hf_dir` (config.json, *.safetensors, tokenizer.json) to an F32 GGUF.

    `vocab_from`: a GGUF file whose ``tokenizer.*`` fields are copied verbatim instead of building the vocabulary
    from tokenizer.json (e.g. the GGUF the checkpoint was de-quantized from). Returns `dest` as a Path.
    Raises SpecError for an architecture or configuration llama.cpp would not compute the same way.
    """
    if dtype not in _FILE_TYPES:
        raise SpecError("model", f"cannot write a GGUF in {dtype!r} (allowed: {', '.join(_FILE_TYPES)})")
    hf_dir, dest = Path(hf_dir), Path(dest)
    config = _read_json(hf_dir / "config.json")
    arch, permute_qk = _arch(config, "model")
    n_head, n_kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    tied = bool(config.get("tie_word_embeddings", False))
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])

    def tensors() -> Iterator[tuple[str, np.ndarray]]:
        for hf_name, t in _load_safetensors(_weight_files(hf_dir)):
            if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
                continue
            name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise SpecError("model", f"{hf_dir}: tensor {hf_name} has no llama.cpp counterpart")
            if permute_qk and re.search(r"\.attn_[qk]\.", name):
                t = _permute(t, n_head if ".attn_q." in name else n_kv)
            yield name, t

    def write(w: gguf.GGUFWriter) -> None:
        w.add_name(config.get("_name_or_path") or hf_dir.name)
        w.add_type(gguf.GGUFType.MODEL)
        w.add_file_type(_FILE_TYPES[dtype][0])
        w.add_vocab_size(config["vocab_size"])
        w.add_context_length(config.get("max_position_embeddings", 2048))
        w.add_embedding_length(config["hidden_size"])
        w.add_block_count(config["num_hidden_layers"])
        w.add_feed_forward_length(config["intermediate_size"])
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        head_dim = config.get("head_dim") or config["hidden_size"] // n_head
        w.add_rope_dimension_count(head_dim)
        if head_dim != config["hidden_size"] // n_head:
            w.add_key_length(head_dim)
            w.add_value_length(head_dim)
        w.add_rope_freq_base(float(_rope(config)["rope_theta"]))
        w.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
        n_tokens = _copy_tokenizer_fields(Path(vocab_from), w) if vocab_from else _add_bpe_vocab(hf_dir, config, w)
        if n_tokens != config["vocab_size"]:  # llama.cpp sizes the vocabulary by the token list
            raise SpecError("model", f"{vocab_from or hf_dir}: {n_tokens} tokens, but the model has "
                                     f"vocab_size {config['vocab_size']}")
        for name, t in tensors():
            data, raw_dtype = _rounded(np.ascontiguousarray(t, dtype=np.float32), dtype)
            w.add_tensor(name, data, raw_dtype=raw_dtype)

    return _write_atomically(dest, arch, write)


_FILE_TYPES = {"float32": (gguf.LlamaFileType.ALL_F32, None),
               "bfloat16": (gguf.LlamaFileType.MOSTLY_BF16, gguf.GGMLQuantizationType.BF16),
               "float16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16)}


def _rounded(t: np.ndarray, dtype: str) -> tuple:
    """(array, raw_dtype) for GGUFWriter.add_tensor: matrices stored in `dtype`, 1-D tensors (norms, biases) as F32
    holding the `dtype`-rounded values (llama.cpp's converter keeps them F32 too). Rounding is round-to-nearest-even,
    as torch's ``.to(bfloat16 / float16)``."""
    qtype = _FILE_TYPES[dtype][1]
    if qtype is None:
        return t, None
    q = gguf.quants.quantize(t, qtype)
    if t.ndim >= 2:
        return q, qtype
    return np.ascontiguousarray(gguf.quants.dequantize(q, qtype), dtype=np.float32), None


def export_lora(adapter_dir: str | Path, base_hf_dir: str | Path, dest: str | Path) -> Path:
    """Convert the PEFT LoRA adapter in `adapter_dir` for the base checkpoint `base_hf_dir` to a llama.cpp LoRA GGUF.

    Only the base's config.json is read (architecture, head counts). Each adapted projection becomes
    ``blk.N.<proj>.weight.lora_a`` (rank x in_features, PEFT's ``lora_A``) and ``.lora_b`` (out_features x rank,
    PEFT's ``lora_B``), all F32; ``adapter.lora.alpha`` is ``lora_alpha`` (llama.cpp applies alpha / rank, as PEFT
    does). Returns `dest` as a Path. Raises SpecError for adapters llama.cpp cannot reproduce (other architectures,
    target modules other than the attention / MLP projections, DoRA, per-module alphas, extra saved modules).
    """
    adapter_dir, dest = Path(adapter_dir), Path(dest)
    config = _read_json(Path(base_hf_dir) / "config.json")
    arch, permute_qk = _arch(config, "adapter")
    lcfg = _read_json(adapter_dir / "adapter_config.json", "adapter")
    alpha, rslora = _check_lora_config(lcfg, adapter_dir)
    n_head, n_kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])

    pairs: dict[str, dict[str, np.ndarray]] = {}
    for hf_name, t in _load_safetensors([adapter_dir / "adapter_model.safetensors"]):
        m = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", hf_name)
        if m is None:
            raise SpecError("adapter", f"{adapter_dir}: tensor {hf_name} is not a LoRA A/B matrix; "
                                       "only plain LoRA on the attention and MLP projections can be exported")
        name = names.get_name(m.group(1) + ".weight", try_suffixes=(".weight",))
        if name is None or name.split(".")[-2] not in LORA_TARGETS:
            module = m.group(1).rsplit(".", 1)[-1]
            raise SpecError("adapter", f"{adapter_dir}: LoRA target module {module!r} is not supported for GGUF "
                                       "export (supported: q/k/v/o_proj, gate/up/down_proj)")
        pairs.setdefault(name, {})[m.group(2)] = t

    def write(w: gguf.GGUFWriter) -> None:
        w.add_name(adapter_dir.name)
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        w.add_file_type(gguf.LlamaFileType.ALL_F32)
        for name, ab in sorted(pairs.items()):
            if set(ab) != {"A", "B"}:
                raise SpecError("adapter", f"{adapter_dir}: {name} has lora_A without lora_B or vice versa")
            a, b = ab["A"], ab["B"]
            if rslora:  # PEFT scales by alpha / sqrt(r), llama.cpp by alpha / r: fold sqrt(r) into B
                b = b * math.sqrt(a.shape[0])
            if permute_qk and re.search(r"\.attn_[qk]\.", name):  # B's rows are q/k output rows
                b = _permute(b, n_head if ".attn_q." in name else n_kv)
            w.add_tensor(name + ".lora_a", np.ascontiguousarray(a, dtype=np.float32))
            w.add_tensor(name + ".lora_b", np.ascontiguousarray(b, dtype=np.float32))

    return _write_atomically(dest, arch, write)


# --- helpers -----------------------------------------------------------------------------------------------------


def _read_json(path: Path, field: str = "model") -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(field, f"{path} not found") from None


def _arch(config: dict[str, Any], field: str) -> tuple[gguf.MODEL_ARCH, bool]:
    """The gguf arch for `config` and whether q/k need permuting; SpecError when llama.cpp would compute differently."""
    hf_arch = (config.get("architectures") or ["<none>"])[0]
    if hf_arch not in ARCHS:
        raise SpecError(field, f"architecture {hf_arch} cannot be exported to GGUF (supported: {', '.join(ARCHS)})")
    if config.get("hidden_act", "silu") != "silu":
        raise SpecError(field, f"{hf_arch} with hidden_act {config['hidden_act']!r} cannot be exported to GGUF "
                               "(only silu)")
    rope_type = _rope(config).get("rope_type") or _rope(config).get("type") or "default"
    if rope_type != "default":
        raise SpecError(field, f"{hf_arch} with rope scaling {rope_type!r} cannot be exported to GGUF "
                               "(only default RoPE)")
    if config.get("use_sliding_window"):
        raise SpecError(field, f"{hf_arch} with sliding-window attention cannot be exported to GGUF")
    return ARCHS[hf_arch]


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings: transformers >= 5 writes `rope_parameters`, older versions `rope_theta` + `rope_scaling`."""
    return {"rope_theta": config.get("rope_theta", 10000.0), **(config.get("rope_scaling") or {}),
            **(config.get("rope_parameters") or {})}


def _check_lora_config(lcfg: dict[str, Any], adapter_dir: Path) -> tuple[float, bool]:
    """(lora_alpha, use_rslora) of a PEFT config llama.cpp can reproduce; SpecError otherwise."""
    def refuse(what: str) -> SpecError:
        return SpecError("adapter", f"{adapter_dir}: {what} cannot be exported to a llama.cpp LoRA GGUF")

    if lcfg.get("peft_type", "LORA") != "LORA":
        raise refuse(f"peft_type {lcfg['peft_type']}")
    if lcfg.get("use_dora"):
        raise refuse("a DoRA adapter (use_dora)")
    if lcfg.get("alpha_pattern"):
        raise refuse("a per-module lora_alpha (alpha_pattern)")
    if lcfg.get("modules_to_save"):
        raise refuse(f"fully trained modules (modules_to_save={lcfg['modules_to_save']})")
    if lcfg.get("lora_bias") or lcfg.get("bias", "none") != "none":
        raise refuse("an adapter with bias terms")
    if not lcfg.get("lora_alpha"):
        raise refuse("lora_alpha = 0")  # llama.cpp would read alpha 0 as "no scaling" (scale 1)
    return float(lcfg["lora_alpha"]), bool(lcfg.get("use_rslora"))


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the rows of each head from HF's half-split RoPE layout to llama.cpp's interleaved one.

    Same as convert_hf_to_gguf.py's LlamaModel.permute: within a head, rows (0..d/2, d/2..d) become
    (0, d/2, 1, d/2+1, ...). Works for weights (rows = outputs), biases and LoRA B matrices alike.
    """
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _weight_files(hf_dir: Path) -> list[Path]:
    """The checkpoint's safetensors files: the shards its index names, else model.safetensors."""
    index = hf_dir / "model.safetensors.index.json"
    if index.exists():
        return [hf_dir / f for f in sorted(set(_read_json(index)["weight_map"].values()))]
    return [hf_dir / "model.safetensors"]


def _load_safetensors(files: list[Path]) -> Iterator[tuple[str, np.ndarray]]:
    """(name, float32 array) for every tensor in `files` (through torch, so bf16 files load too)."""
    from safetensors import safe_open

    if not files or not all(f.exists() for f in files):
        raise SpecError("model", f"no safetensors weights found ({', '.join(map(str, files)) or 'none'})")
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                yield name, st.get_tensor(name).float().numpy()


def _add_bpe_vocab(hf_dir: Path, config: dict[str, Any], w: gguf.GGUFWriter) -> int:
    """Add a GPT-2 style byte-level BPE vocabulary from tokenizer.json (+ tokenizer_config.json, chat template).

    Returns the number of tokens written (ids beyond the tokenizer's, up to vocab_size, become unused "[PADn]").
    """
    tok = _read_json(hf_dir / "tokenizer.json")
    tcfg = _read_json(hf_dir / "tokenizer_config.json") if (hf_dir / "tokenizer_config.json").exists() else {}
    model = tok.get("model", {})
    if model.get("type") != "BPE":
        raise SpecError("model", f"{hf_dir}: tokenizer type {model.get('type')} cannot be exported (only BPE); "
                                 "pass vocab_from=<a GGUF with this vocabulary>")
    by_id = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in tok.get("added_tokens", [])}
    size = max(config["vocab_size"], max([*by_id, *added]) + 1)
    tokens, types = [], []
    for i in range(size):
        if i in added:  # like llama.cpp: special added tokens are CONTROL, other added tokens USER_DEFINED
            tokens.append(added[i]["content"])
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(_pre_tokenizer(tok.get("pre_tokenizer")))
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    ids = {t: i for i, t in enumerate(tokens)}
    for key, add in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id), ("pad", w.add_pad_token_id),
                     ("unk", w.add_unk_token_id)):
        value = tcfg.get(f"{key}_token")
        value = value.get("content") if isinstance(value, dict) else value
        token_id = ids.get(value) if value is not None else config.get(f"{key}_token_id")
        if isinstance(token_id, int):
            add(token_id)
    w.add_add_bos_token(bool(tcfg.get("add_bos_token", _post_processor_adds_bos(tok))))
    w.add_add_eos_token(bool(tcfg.get("add_eos_token", False)))
    template = tcfg.get("chat_template")
    if template is None and (hf_dir / "chat_template.jinja").exists():  # transformers >= 4.50 saves it apart
        template = (hf_dir / "chat_template.jinja").read_text(encoding="utf-8")
    if template:
        w.add_chat_template(template)
    return len(tokens)


def _pre_tokenizer(pre: dict[str, Any] | None) -> str:
    """llama.cpp's name for a tokenizer.json pre-tokenizer: gpt-2 / qwen2 / llama-bpe, else "default"."""
    if pre is None:
        return "default"
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if (len(steps) == 2 and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel"
            and not steps[1].get("use_regex", True)):
        return _PRE_BY_REGEX.get(steps[0].get("pattern", {}).get("Regex"), "default")
    return "default"


def _post_processor_adds_bos(tok: dict[str, Any]) -> bool:
    single = (tok.get("post_processor") or {}).get("single") or []
    return bool(single) and "SpecialToken" in single[0]


def _copy_tokenizer_fields(src: Path, w: gguf.GGUFWriter) -> int:
    """Copy every ``tokenizer.*`` key of the GGUF `src` into `w`, value types (arrays included) unchanged.

    Returns the number of tokens in the copied vocabulary.
    """
    if not src.is_file():
        raise SpecError("model", f"vocab_from: {src} not found")
    reader = gguf.GGUFReader(src)
    if "tokenizer.ggml.tokens" not in reader.fields:
        raise SpecError("model", f"vocab_from: {src} has no tokenizer.ggml.tokens")
    for field in reader.fields.values():
        if not field.name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    return len(reader.fields["tokenizer.ggml.tokens"].data)


def _write_atomically(dest: Path, arch: gguf.MODEL_ARCH, fill: Callable[[gguf.GGUFWriter], None]) -> Path:
    """Run `fill` on a GGUFWriter for a temp file beside `dest`, write it out, and rename it to `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
        try:
            fill(writer)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest
