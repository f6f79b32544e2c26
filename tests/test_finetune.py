"""LoRA fine-tuning (thinktrace.finetune): config validation, step planning, prompt masking that matches the
inference encoding, training that writes a loadable adapter, determinism, and resuming after an interruption (in
process and after SIGKILL). Fast tests use a tiny random Llama checkpoint; the real-model test is `integration`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pydantic import ValidationError
from support import ROOT, TESTS, read_jsonl
from support.tiny_model import make_rows, tiny_cfg

from thinktrace.errors import SpecError, ThinktraceError
from thinktrace.finetune import (FinetuneConfig, complete_checkpoints, encode_rows, plan_steps, prompt_ids,
                                 shared_prefix_loss, train_adapter)


# -- config ----------------------------------------------------------------------------------------------------------

def test_defaults_are_the_documented_ones():
    cfg = FinetuneConfig()
    assert (cfg.enabled, cfg.base, cfg.epochs, cfg.learning_rate, cfg.batch_size, cfg.max_length) == (
        False, "smollm2-135m", 1.0, 2e-4, 8, 384)
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules) == (16, 32, 0.05, "all-linear")
    assert cfg.seed is None and cfg.max_steps is None and cfg.ablation_label_only
    for name, field in {**FinetuneConfig.model_fields, **type(cfg.lora).model_fields}.items():
        assert field.description, f"{name} has no description (it is the YAML documentation)"


@pytest.mark.parametrize("bad, where, words", [
    ({"epochs": 0}, "epochs", "greater than 0"),
    ({"batch_size": 0}, "batch_size", "greater than or equal to 1"),
    ({"max_length": 4}, "max_length", "greater than or equal to 16"),
    ({"learning_rate": 0}, "learning_rate", "greater than 0"),
    ({"base": "  "}, "base", "base model is required"),
    ({"save_steps": 0}, "save_steps", "greater than or equal to 1"),
    ({"lora": {"target_modules": "attention"}}, "lora.target_modules", "'all-linear' or a list"),
    ({"lora": {"target_modules": []}}, "lora.target_modules", "empty"),
    ({"lora": {"dropout": 1.0}}, "lora.dropout", "less than 1"),
    ({"lora": {"r": 0}}, "lora.r", "greater than or equal to 1"),
    ({"epoch": 2}, "epoch", "Extra inputs are not permitted"),
])
def test_invalid_settings_name_the_field(bad, where, words):
    with pytest.raises(ValidationError) as err:
        FinetuneConfig(**bad)
    e = err.value.errors()[0]
    assert ".".join(str(p) for p in e["loc"]).startswith(where)
    assert words in e["msg"]


def test_plan_steps_matches_the_trainer_arithmetic():
    cfg = FinetuneConfig(batch_size=8)
    assert plan_steps(cfg, 40) == 5 and plan_steps(cfg, 41) == 6 and plan_steps(cfg, 0) == 0
    assert plan_steps(cfg.model_copy(update={"epochs": 2.5}), 40) == 13
    assert plan_steps(cfg.model_copy(update={"grad_accum": 2}), 40) == 3  # 5 batches -> 2 full + 1 partial
    assert plan_steps(cfg.model_copy(update={"max_rows": 16}), 40) == 2
    assert plan_steps(cfg.model_copy(update={"max_steps": 7}), 40) == 7


# -- tokenization ----------------------------------------------------------------------------------------------------

def test_prompt_tokens_are_masked_and_match_the_inference_encoding(tiny_model_dir):
    from transformers import AutoTokenizer

    from dspy.lm15 import Config, Message, Request

    from thinktrace.lm import ModelConfig
    from thinktrace.lm.factory import get_engine

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    engine = get_engine(ModelConfig(model=str(tiny_model_dir)))
    rows = make_rows(3)
    examples, stats = encode_rows(tok, rows, max_length=512)
    assert stats["rows"] == 3 and stats["truncated_rows"] == 0
    for row, ex in zip(rows, examples):
        # the prompt is exactly the token ids the llama.cpp engine sends at inference
        system, user = row["messages"][0]["content"], row["messages"][1]["content"]
        inference_ids = engine.payload(Request(model="local/x", system=system, messages=(Message.user(user),),
                                               config=Config()))["prompt"]
        assert inference_ids == prompt_ids(tok, row["messages"][:-1])
        n = len(inference_ids)
        assert ex["input_ids"][:n] == inference_ids
        assert ex["labels"][:n] == [-100] * n  # no loss on system + user turns
        answer = ex["labels"][n:]
        assert answer == ex["input_ids"][n:] and -100 not in answer  # loss on every answer token ...
        assert answer[-1] == tok.eos_token_id  # ... including the end-of-turn token that stops generation
        assert tok.decode(answer[:-1]) == row["messages"][-1]["content"]


def test_long_rows_are_truncated_and_counted(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    rows = make_rows(3)
    lengths = [len(e["input_ids"]) for e in encode_rows(tok, rows, 512)[0]]
    n_prompt = len(prompt_ids(tok, rows[0]["messages"][:-1]))
    examples, stats = encode_rows(tok, rows, max_length=n_prompt + 2)
    assert stats["truncated_rows"] == 3 and stats["dropped_rows"] == 0
    assert all(len(e["input_ids"]) == n_prompt + 2 and e["labels"][-2:] != [-100, -100] for e in examples)
    assert stats["tokens"]["max"] == max(lengths)
    _, stats = encode_rows(tok, rows, max_length=16)  # the prompt alone is longer: nothing left to learn
    assert stats["rows"] == 0 and stats["dropped_rows"] == 3
    with pytest.raises(ThinktraceError, match="row 0"):
        encode_rows(tok, [{"messages": [{"role": "user", "content": "x"}]}], 64)


def test_shared_prefix_loss_equals_the_plain_batch_loss(tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    rows = make_rows(5)
    for i, row in enumerate(rows):  # rows of different lengths: right padding is exercised
        row["messages"][1]["content"] += " and more" * i
    examples, _ = encode_rows(tok, rows, 512)
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(examples)
    assert (batch["attention_mask"] == 0).any()
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    model.train()

    def grads():
        g = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        return g

    plain = model(**batch, use_cache=False).loss
    plain.backward()
    g_plain = grads()
    loss, n_tokens, _ = shared_prefix_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    loss.backward()
    g_shared = grads()
    assert loss.item() == pytest.approx(plain.item(), rel=1e-5)
    assert n_tokens == int((batch["labels"][:, 1:] != -100).sum())
    assert g_plain.keys() == g_shared.keys() and len(g_plain) == 2 * 3 * 2  # A and B, 3 modules, 2 layers
    for k in g_plain:
        assert torch.allclose(g_plain[k], g_shared[k], rtol=1e-3, atol=1e-5 * g_plain[k].abs().max()), k
    # not applicable: a single row, or rows that share no prompt prefix
    one = {k: v[:1] for k, v in batch.items()}
    assert shared_prefix_loss(model, one["input_ids"], one["attention_mask"], one["labels"]) is None
    rows[1]["messages"][0]["content"] = "Different " + rows[1]["messages"][0]["content"]
    mixed = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(encode_rows(tok, rows, 512)[0])
    assert shared_prefix_loss(model, mixed["input_ids"], mixed["attention_mask"], mixed["labels"]) is None


# -- training --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """One uninterrupted run (12 rows, batch 4, 2 epochs = 6 steps), recording every training batch the loss sees."""
    import thinktrace.finetune.loss as ft

    seen = []
    original = ft.shared_prefix_loss

    def spy(model, input_ids, attention_mask, labels, *a, **kw):
        out = original(model, input_ids, attention_mask, labels, *a, **kw)
        seen.append((input_ids.clone(), labels.clone(), out is not None))
        return out

    ft.shared_prefix_loss = spy
    try:
        out = tmp_path_factory.mktemp("ft-ref")
        result = train_adapter(tiny_cfg(tiny_model_dir, epochs=2), make_rows(12), out, seed=3, name="trace",
                               progress=False)
    finally:
        ft.shared_prefix_loss = original
    return out, result, seen


def test_training_writes_a_loadable_adapter_log_and_plot(trained, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from thinktrace.lm import ModelConfig, build_lm
    from thinktrace.lm.factory import clear_engines

    out, result, _ = trained
    assert result["steps"] == 6 == plan_steps(tiny_cfg(tiny_model_dir, epochs=2), 12)
    assert result["rows"] == 12 and result["truncated_rows"] == 0 and result["resumed_from"] is None
    assert result["final_loss"] > 0 and result["train_seconds"] > 0 and result["seed"] == 3
    records = read_jsonl(out / "train_log.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all({"loss", "lr", "epoch", "elapsed"} <= set(r) for r in records)
    assert records[-1]["loss"] == result["final_loss"] and records[-1]["epoch"] == pytest.approx(2.0)
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "checkpoints").exists()  # optimizer states are dropped once the adapter is written

    adapter = Path(result["adapter_dir"])
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model = PeftModel.from_pretrained(base, str(adapter))
    lora = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values())  # B starts at zero: training moved it
    # llama.cpp serves it (converted to a GGUF LoRA) on the exact base it was trained on
    lm = build_lm(ModelConfig(name="tuned", model=str(tiny_model_dir), adapter=str(adapter), max_tokens=4, cache=False))
    assert isinstance(lm("hi")[0], str) and (adapter / "adapter.gguf").is_file()
    clear_engines()


def test_trainer_batches_carry_loss_on_the_answer_only(trained, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    _, _, seen = trained
    assert len(seen) == 6 and all(used for _, _, used in seen)  # every batch took the shared-prefix path
    n_prompt = {len(prompt_ids(tok, r["messages"][:-1])) for r in make_rows(12)}
    input_ids, labels, _ = seen[0]
    for ids, lab in zip(input_ids.tolist(), labels.tolist()):
        first = next(i for i, v in enumerate(lab) if v != -100)
        assert first in n_prompt  # everything before the answer is masked
        assert all(v == t for v, t in zip(lab[first:], ids[first:]) if v != -100)


def test_a_finished_run_returns_at_once_and_other_settings_are_refused(trained, tiny_model_dir, monkeypatch):
    import trl

    out, result, _ = trained
    monkeypatch.setattr(trl, "SFTTrainer", None)  # any training attempt would fail
    assert train_adapter(tiny_cfg(tiny_model_dir, epochs=2, num_threads=None), make_rows(12), out, seed=3,
                         name="trace", progress=False) == result
    with pytest.raises(ThinktraceError, match="other config"):
        train_adapter(tiny_cfg(tiny_model_dir, epochs=2, learning_rate=1e-3), make_rows(12), out, seed=3,
                      name="trace", progress=False)
    with pytest.raises(ThinktraceError, match="rows"):
        train_adapter(tiny_cfg(tiny_model_dir, epochs=2), make_rows(12, label_only=True), out, seed=3,
                      name="trace", progress=False)


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_from_last_checkpoint_and_matches(trained, tiny_model_dir, tmp_path):
    from transformers import TrainerCallback

    ref_out, ref, _ = trained

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:  # checkpoint-2 is complete; step 3 is lost
                raise Interrupt

    cfg = tiny_cfg(tiny_model_dir, epochs=2)
    with pytest.raises(Interrupt):
        train_adapter(cfg, make_rows(12), tmp_path, seed=3, name="trace", progress=False, callbacks=[Crash()])
    assert [p.name for p in complete_checkpoints(tmp_path / "checkpoints")] == ["checkpoint-2"]
    assert not (tmp_path / "result.json").exists()
    result = train_adapter(cfg, make_rows(12), tmp_path, seed=3, name="trace", progress=False)
    assert result["resumed_from"].endswith("checkpoint-2") and result["steps"] == ref["steps"] == 6
    records = read_jsonl(tmp_path / "train_log.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]  # step 3 logged once, not twice
    # same seed, same data order, restored RNG: the resumed run reproduces the uninterrupted one
    ref_losses = [r["loss"] for r in read_jsonl(ref_out / "train_log.jsonl")]
    assert [r["loss"] for r in records] == pytest.approx(ref_losses, rel=1e-4)


def test_same_seed_same_adapter(trained, tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    ref_out, ref, _ = trained
    cfg = tiny_cfg(tiny_model_dir, epochs=2)
    result = train_adapter(cfg, make_rows(12), tmp_path, seed=3, name="trace", progress=False)
    a = load_file(str(Path(ref["adapter_dir"]) / "adapter_model.safetensors"))
    b = load_file(str(Path(result["adapter_dir"]) / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-6 for k in a)
    # another seed, TRL's own loss (no shared prefix): trains too, from another LoRA initialization
    other = train_adapter(cfg.model_copy(update={"max_steps": 1, "shared_prefix": False}), make_rows(12),
                          tmp_path / "s4", seed=4, name="trace", progress=False)
    assert other["steps"] == 1 and other["final_loss"] > 0
    c = load_file(str(Path(other["adapter_dir"]) / "adapter_model.safetensors"))
    assert any((a[k] - c[k]).abs().max() > 1e-6 for k in a)


KILLED_RUN = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import thinktrace
    from pathlib import Path
    from transformers import TrainerCallback
    from support.tiny_model import make_rows, tiny_cfg
    from thinktrace.finetune import train_adapter

    class Slow(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            time.sleep(0.4)

    train_adapter(tiny_cfg(Path({model!r}), max_steps=8), make_rows(12), Path({out!r}), seed=0, name="trace",
                  progress=False, callbacks=[Slow()])
""")


@pytest.mark.slow  # a training child process, killed and resumed
def test_run_killed_with_sigkill_resumes(tiny_model_dir, tmp_path):
    out = tmp_path / "killed"
    script = KILLED_RUN.format(tests=str(TESTS), model=str(tiny_model_dir), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=str(ROOT), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while not complete_checkpoints(out / "checkpoints") and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"training subprocess ended early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        assert complete_checkpoints(out / "checkpoints"), "no checkpoint within 90 s"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "result.json").exists()
    result = train_adapter(tiny_cfg(tiny_model_dir, max_steps=8), make_rows(12), out, seed=0, name="trace",
                           progress=False)
    assert result["resumed_from"] and result["steps"] == 8
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == list(range(1, 9))


def test_no_rows_and_bad_base_are_clear_errors(tiny_model_dir, tmp_path):
    with pytest.raises(ThinktraceError, match="no training rows"):
        train_adapter(tiny_cfg(tiny_model_dir), [], tmp_path / "a", seed=0, name="trace")
    with pytest.raises(SpecError, match="finetune.base"):
        train_adapter(tiny_cfg(tmp_path / "missing"), make_rows(2), tmp_path / "b", seed=0, name="trace")
    with pytest.raises(ThinktraceError, match="max_length"):
        train_adapter(tiny_cfg(tiny_model_dir, max_length=16), make_rows(2), tmp_path / "c", seed=0, name="trace")


# -- the real model --------------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_embedded_model_trains_a_few_steps(tmp_path):
    import torch

    from thinktrace.lm import ModelConfig, build_lm
    from thinktrace.lm.embedded import resolve_model_path
    from thinktrace.lm.factory import clear_engines

    try:
        resolve_model_path("smollm2-135m")
    except SpecError as err:
        pytest.skip(str(err))
    threads = torch.get_num_threads()
    # one thread: on a busy 2-core machine two threads wait on each other (several times slower)
    cfg = FinetuneConfig(enabled=True, batch_size=4, max_steps=2, save_steps=2, max_length=256, num_threads=1)
    result = train_adapter(cfg, make_rows(8), tmp_path, seed=0, name="trace", progress=False)
    assert torch.get_num_threads() == threads  # the thread setting is restored after training
    assert result["steps"] == 2 and 0 < result["final_loss"] < 10 and result["truncated_rows"] == 0
    lm = build_lm(ModelConfig(name="tuned", model="smollm2-135m", adapter=result["adapter_dir"], max_tokens=8,
                              cache=False))
    assert lm.engine.server.served.checkpoint is not None  # served on the F32 training base, not the Q4_1 file
    assert isinstance(lm("Say hi.")[0], str)
    clear_engines()
