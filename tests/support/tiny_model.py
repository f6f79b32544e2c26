"""A tiny, randomly initialised Llama checkpoint with a ChatML tokenizer, built in seconds, so the local-engine and
fine-tuning code paths (chat template, generate, sampling, stop strings, LoRA, training) run fast without the real
model; a random LoRA adapter on it; fine-tuning rows and configs for it. The session fixtures `tiny_model_dir` and
`tiny_adapter_dir` (tests/conftest.py) build each once per test process.

`children_in_process`: thinktrace does fine-tuning and one-time model conversions in a spawned child process
(thinktrace._child: memory goes back to the system); the child imports torch, transformers and TRL afresh, seconds
each time. A test that is not about the child process runs that work in its own process instead (same results)."""

from __future__ import annotations

import contextlib
from pathlib import Path

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a rater reads the guideline and the item, then gives a label",
    "positive negative neutral answer question rationale label",
    "0 1 2 3 4 5 6 7 8 9 10 , . ! ? : [ ] # ## _ - ' \" ( ) / ` | = { } ; \\ \n\t",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz",
] * 20
SCALE = 30.0
LABELS = ["negative", "neutral", "positive"]


def build_tiny_checkpoint(dest: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=specials  # ASCII-only alphabet: every token decodes to clean text
        ),
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|im_end|>", bos_token="<|im_start|>",
        unk_token="<|endoftext|>", model_max_length=2048,
    )
    tok.chat_template = CHATML
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # sharpen the random logits so sampling at temperature 1 is not uniform noise
        model.lm_head.weight.mul_(SCALE)
    model.save_pretrained(str(dest))
    tok.save_pretrained(str(dest))
    return dest


def build_tiny_adapter(model_dir: Path, dest: Path) -> Path:
    """A LoRA adapter with random (non-zero) weights, so base and base+adapter give different logits."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    peft_model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(str(dest))
    return dest


def make_rows(n: int = 12, label_only: bool = False) -> list[dict]:
    """n fine-tuning rows (chat messages ending in the answer), labels in turn."""
    rows = []
    for i in range(n):
        label = LABELS[i % 3]
        answer = f"Label: {label}" if label_only else f"Rationale: the item {i} reads as {label}\nLabel: {label}"
        rows.append({"messages": [
            {"role": "system", "content": "Rate the item as negative, neutral or positive.\nAnswer: Label: <label>"},
            {"role": "user", "content": f"Item: a quick answer {i}"},
            {"role": "assistant", "content": answer}], "key": str(i), "item_id": str(i), "label": label})
    return rows


def tiny_cfg(model_dir: Path, **kw):
    """A FinetuneConfig for the tiny checkpoint (small LoRA, batch 4, a checkpoint every 2 steps)."""
    from thinktrace.finetune import FinetuneConfig

    base = dict(enabled=True, base=str(model_dir), batch_size=4, save_steps=2, epochs=1, max_length=128,
                lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    base.update(kw)
    return FinetuneConfig(**base)


def _in_process(fn, *args, **kwargs):
    return fn(*args, **kwargs)


@contextlib.contextmanager
def children_in_process():
    """Within the block, thinktrace._child.call_in_child runs its function in this process."""
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("thinktrace._child.call_in_child", _in_process)
        yield
