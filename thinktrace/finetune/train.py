"""Use 1 of the traces: LoRA fine-tuning of an open LLM rater (TRL `SFTTrainer` + PEFT) on chat rows in exactly the
inference prompt format, on CPU or an accelerator, in one process or several (DDP), resumable.

- ``FinetuneConfig``: the `finetune:` spec section.
- ``train_adapter(cfg, rows, out_dir, seed=..., name=...)``: trains one LoRA adapter on `rows` (chat `messages`
  rows from ``thinktrace.traces.sft_rows``) and writes ``out_dir/adapter/`` (``peft.PeftModel.from_pretrained``
  load it; ``thinktrace.lm.weights.adapter_gguf`` converts it for llama.cpp), ``train_log.jsonl`` and ``loss.png``.
  The caller trains the trace SFT and the label-only ablation with two calls (different rows, same cfg and seed).
- ``plan_steps(cfg, n_rows)``: optimizer steps a run will take, for dry-run planning.

Training matches inference token for token: each row is tokenized here, the prompt (system + user turns) with the
tokenizer's chat template and ``add_generation_prompt=True`` (``thinktrace.lm.prompt.prompt_ids``, the very function
the llama.cpp engine renders prompts with: it sends llama.cpp these token ids) - and
the completion as the assistant text followed by the end-of-sequence token (what stops generation). The loss is on
the completion only: prompt tokens get label -100. (TRL's ``assistant_only_loss`` would need ``{% generation %}``
markers in the chat template, which SmolLM2's lacks; building prompt/completion ids ourselves is the exact
equivalent of TRL's ``completion_only_loss`` and lets us count truncated rows.)

Resuming: checkpoints go to ``out_dir/checkpoints/checkpoint-<step>`` every ``save_steps`` steps; a checkpoint is
trusted only once a marker file was written into it after the trainer finished saving it. A rerun (same cfg, rows
and seed) resumes from the last complete checkpoint, and a finished run (``out_dir/result.json``, written last)
returns at once. Rerunning in a folder that holds state from other settings or rows is an error, never a silent mix.

Devices and processes: ``finetune.device`` / ``precision`` are resolved by ``thinktrace.finetune.device.choose``
(the base is loaded in that dtype; it is recorded in ``adapter/thinktrace_training.json`` and evaluation serves the
base in the same dtype). Under ``accelerate launch`` / ``torchrun`` (``python -m thinktrace.finetune``) each process
trains on its share of the rows and rank 0 alone writes (``thinktrace.finetune.dist``).

Speed on CPU: the rows of a rater's SFT set share a long prompt prefix (the adapter's system prompt with the
guideline; ~200 of ~280 tokens for the quickstart) and only the answer is trained, so by default
(``shared_prefix``) a batch runs that prefix once and the output head only on answer tokens - same loss and
gradients, measured 5x faster per step on SmolLM2-135M. Measured on 2 shared cores: 1 torch thread was 3-5x faster
than 2 (``num_threads``).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence


from thinktrace.lm.prompt import prompt_ids  # the one prompt renderer of training and inference
from thinktrace.lm.weights import TRAINING_INFO
from thinktrace.errors import ThinktraceError
from thinktrace.rundir import JsonlLog, json_safe, write_atomic

from thinktrace.finetune.config import FinetuneConfig
from thinktrace.finetune import dist, loss as _loss
from thinktrace.finetune.device import Placement, choose, detect

RESULT = "result.json"  # written last: the run is complete
FINGERPRINT = "fingerprint.json"  # what the state in out_dir was trained from
_CKPT_DONE = "thinktrace_complete"  # written into a checkpoint after the trainer saved it completely
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def encode_rows(tokenizer, rows: Sequence[dict], max_length: int) -> tuple[list[dict], dict]:
    """Rows (`messages` ending with the assistant turn) -> [{input_ids, labels}] with labels -100 on the prompt,
    plus token statistics. Rows longer than `max_length` are cut at the end (`truncated_rows`); rows whose prompt
    alone leaves no answer token are dropped (`dropped_rows`)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ThinktraceError("finetune: the tokenizer has no end-of-sequence token, so the model cannot learn to stop")
    examples, lengths, prompt_lens, completion_lens = [], [], [], []
    truncated = dropped = 0
    for n, row in enumerate(rows):
        messages = row.get("messages") if isinstance(row, dict) else None
        if not messages or messages[-1].get("role") != "assistant" or len(messages) < 2:
            raise ThinktraceError(f"finetune: row {n} is not a chat row ending with an assistant turn")
        p = prompt_ids(tokenizer, messages[:-1])
        c = list(tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]) + [eos]
        ids, labels = p + c, [-100] * len(p) + c
        lengths.append(len(ids))
        prompt_lens.append(len(p))
        completion_lens.append(len(c))
        if len(ids) > max_length:
            truncated += 1
            if len(p) >= max_length:
                dropped += 1
                continue
            ids, labels = ids[:max_length], labels[:max_length]
        examples.append({"input_ids": ids, "labels": labels})

    def mean(xs):
        return round(sum(xs) / len(xs), 1) if xs else 0

    stats = {"rows": len(examples), "truncated_rows": truncated, "dropped_rows": dropped,
             "tokens": {"mean": mean(lengths), "max": max(lengths, default=0), "prompt_mean": mean(prompt_lens),
                        "completion_mean": mean(completion_lens),
                        "trained": sum(len(e["input_ids"]) for e in examples)}}
    return examples, stats


# -- resumable state -----------------------------------------------------------------------------------------------

def _fingerprint(cfg: FinetuneConfig, rows: Sequence[dict], seed: int, dtype: str = "float32",
                 processes: int = 1) -> dict:
    """What determines the trained adapter (not: threads, checkpoint frequency, enabled flags, device, launcher).
    The base dtype and the process count (it sets the effective batch) are added only when they differ from the
    one-process fp32 run, so folders trained before they existed still resume."""
    keep = cfg.model_dump(exclude={"enabled", "save_steps", "num_threads", "ablation_label_only", "seed",
                                   "shared_prefix", "device", "precision", "gradient_checkpointing", "launcher",
                                   "ablation_shuffled", "format", "ablation_label_all"})
    if dtype != "float32":
        keep["base_dtype"] = dtype
    if processes != 1:
        keep["processes"] = processes
    digest = hashlib.sha256()
    for r in rows:
        digest.update(json.dumps(r["messages"], ensure_ascii=False, sort_keys=True).encode())
        digest.update(b"\n")
    return {"config": keep, "seed": seed, "rows": len(rows), "rows_sha256": digest.hexdigest()}


def _check_fingerprint(out_dir: Path, fp: dict, write: bool = True) -> None:
    path = out_dir / FINGERPRINT
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = None
        if old is not None and old != fp:
            changed = sorted(k for k in fp if old.get(k) != fp[k])
            raise ThinktraceError(f"finetune: {out_dir} holds training state from other {'/'.join(changed)} "
                                  "(config, seed or rows); delete it or train into another folder")
    if write:
        write_atomic(path, json.dumps(fp, indent=1))


def complete_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoints the trainer finished saving, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir()
             if (m := _CKPT_RE.match(p.name)) and (p / _CKPT_DONE).is_file()]
    return [p for _, p in sorted(found)]


def _drop_incomplete_checkpoints(ckpt_dir: Path) -> None:
    if ckpt_dir.is_dir():
        for p in ckpt_dir.iterdir():
            if _CKPT_RE.match(p.name) and not (p / _CKPT_DONE).is_file():
                shutil.rmtree(p, ignore_errors=True)


def _trim_log(log: JsonlLog, last_step: int) -> float:
    """Keep log records up to `last_step` (steps after the checkpoint are redone); return their elapsed time."""
    kept = [r for r in log.read() if r.get("step", 0) <= last_step]
    write_atomic(log.path, "".join(json.dumps(json_safe(r), ensure_ascii=False) + "\n" for r in kept))
    return float(kept[-1].get("elapsed", 0.0)) if kept else 0.0


# -- plot ----------------------------------------------------------------------------------------------------------

def plot_loss(records: Sequence[dict], path: Path, title: str = "") -> None:
    """This adapter's training loss per step as a PNG (the report's loss chart, one curve), written atomically."""
    from thinktrace._plots import loss_curves

    pts = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    tmp = path.with_name(f".{path.name}.tmp.png")
    tmp.write_bytes(loss_curves({path.parent.name: pts} if pts else {}, title or "training loss"))
    tmp.replace(path)


def _load_base(base: str, dtype: str = "float32"):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from thinktrace.lm.embedded import clear_quantizer_marks, resolve_model_path

    path = resolve_model_path(base, field="finetune.base")
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    qc = getattr(model.config, "quantization_config", None)
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    if str(getattr(method, "value", method)).lower() == "gguf":
        clear_quantizer_marks(model)  # de-quantized fp32 weights carrying GGUF marks that stop training
    model.config.use_cache = False
    return path, tok, model


def _journal(log: JsonlLog, elapsed_offset: float):
    from transformers import TrainerCallback

    class Journal(TrainerCallback):
        """Appends one record per logged step; marks checkpoints complete after the trainer saved them."""

        def __init__(self):
            self.t0 = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and state.is_world_process_zero:
                log.append({"step": state.global_step, "loss": logs["loss"], "lr": logs.get("learning_rate"),
                            "epoch": round(state.epoch or 0.0, 4), "grad_norm": logs.get("grad_norm"),
                            "token_accuracy": logs.get("mean_token_accuracy"),
                            "elapsed": round(elapsed_offset + time.perf_counter() - self.t0, 2)})

        def on_save(self, args, state, control, **kwargs):
            dist.barrier()  # every rank has written its part (its RNG state) before the checkpoint counts
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir() and state.is_world_process_zero:
                write_atomic(ckpt / _CKPT_DONE, json.dumps({"step": state.global_step}))

    return Journal()


def train_adapter(cfg: FinetuneConfig, rows: list[dict], out_dir: Path, *, seed: int, name: str,
                  progress: bool = True, callbacks: Sequence[Any] = ()) -> dict:
    """Train one LoRA adapter on chat rows; resumable, deterministic under `seed` (``cfg.seed`` wins when set).

    Args:
        cfg: the `finetune` section.
        rows: chat rows (`messages`: system/user turns ending with the assistant answer), e.g. from
            ``thinktrace.traces.sft_rows``; the first ``cfg.max_rows`` are used.
        out_dir: this adapter's folder; holds ``adapter/``, ``train_log.jsonl``, ``loss.png``, ``checkpoints/``
            while training, and ``result.json`` once complete.
        seed: the spec seed (used when ``cfg.seed`` is None).
        name: what this adapter is (e.g. ``trace`` or ``label_only``), for the plot and the result.
        progress: show the trainer's progress bar.
        callbacks: extra ``transformers.TrainerCallback``s.

    Returns: {"name", "adapter_dir", "base", "rows", "truncated_rows", "dropped_rows", "tokens", "steps",
    "train_seconds" (this call's training time), "total_train_seconds" (over resumes), "load_seconds",
    "final_loss" (the last step's loss), "resumed_from" (checkpoint path or None), "seed", "device",
    "base_dtype", "processes", "shared_prefix" (batches that used it, and why it stepped aside if it did)}.

    Under a launcher every process calls this; rank 0 alone writes, and every rank returns the same result.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = cfg.seed if cfg.seed is not None else int(seed)
    rows = list(rows[: cfg.max_rows] if cfg.max_rows else rows)
    if not rows:
        raise ThinktraceError(f"finetune {name}: no training rows (no accepted traces?)")
    placement = choose(cfg.device, cfg.precision, detect())
    fp = _fingerprint(cfg, rows, seed, placement.dtype, dist.world_size())
    _check_fingerprint(out_dir, fp, write=dist.is_main())
    result_path, adapter_dir = out_dir / RESULT, out_dir / "adapter"
    if result_path.is_file() and (adapter_dir / "adapter_config.json").is_file():
        return json.loads(result_path.read_text(encoding="utf-8"))

    import torch

    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _train(cfg, rows, out_dir, seed=seed, name=name, progress=progress, callbacks=callbacks,
                      result_path=result_path, adapter_dir=adapter_dir, placement=placement)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: FinetuneConfig, rows: list[dict], out_dir: Path, *, seed: int, name: str, progress: bool,
           callbacks: Sequence[Any], result_path: Path, adapter_dir: Path, placement: Placement) -> dict:
    from datasets import Dataset
    from peft import LoraConfig as PeftLoraConfig
    from transformers import PrinterCallback, ProgressCallback
    from trl import SFTConfig

    t0 = time.perf_counter()
    path, tok, model = _load_base(cfg.base, placement.dtype)
    load_seconds = time.perf_counter() - t0
    examples, stats = encode_rows(tok, rows, cfg.max_length)
    if not examples:
        raise ThinktraceError(f"finetune {name}: every row's prompt is longer than finetune.max_length "
                              f"({cfg.max_length} tokens; mean row {stats['tokens']['mean']}); raise max_length")

    ckpt_dir = out_dir / "checkpoints"
    args = SFTConfig(
        output_dir=str(ckpt_dir), seed=seed, data_seed=seed,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate, lr_scheduler_type="linear", warmup_steps=0,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        max_length=cfg.max_length, dataset_kwargs={"skip_prepare_dataset": True}, remove_unused_columns=False,
        # TRL turns bf16 autocast and gradient checkpointing on unless told: both follow the spec here
        **placement.trainer_args(), **_activation_checkpointing(SFTConfig, cfg.gradient_checkpointing),
        ddp_find_unused_parameters=False,  # every LoRA matrix is used in every step
        logging_steps=1, save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2,
        save_only_model=False, report_to="none", disable_tqdm=not progress,
        dataloader_num_workers=0, dataloader_pin_memory=False,
    )
    args.world_size  # noqa: B018  (sets up the devices and, under a launcher, the process group)
    log = JsonlLog(out_dir / "train_log.jsonl")
    if dist.is_main():
        _drop_incomplete_checkpoints(ckpt_dir)
    dist.barrier()
    done = complete_checkpoints(ckpt_dir)
    resume = done[-1] if done else None
    offset = _trim_log(log, int(_CKPT_RE.match(resume.name).group(1)) if resume else 0) if dist.is_main() else 0

    peft_config = PeftLoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                 target_modules=cfg.lora.target_modules, bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # PEFT reads a property transformers 5.x renamed (a FutureWarning per model)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        trainer = _loss.trainer_class(cfg.shared_prefix)(
            model=model, args=args, train_dataset=Dataset.from_list(examples), processing_class=tok,
            peft_config=peft_config, callbacks=[_journal(log, offset), *callbacks])
    # The default console callbacks print every log dict (one line per step); keep only a quiet progress bar.
    trainer.remove_callback(PrinterCallback)
    if progress:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_QuietProgress())

    t1 = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_seconds = time.perf_counter() - t1
    sp = dict(trainer.shared_prefix_stats or {"reason": None, "batches": 0, "other_batches": 0})
    if sp["reason"] and cfg.shared_prefix and dist.is_main():
        print(f"finetune {name}: shared-prefix loss stepped aside: {sp['reason']}", file=sys.stderr)

    # The adapter: written to a temporary sibling (by rank 0; every rank takes part under FSDP), then renamed.
    tmp = out_dir / ".adapter.tmp"
    if dist.is_main():
        shutil.rmtree(tmp, ignore_errors=True)
    dist.barrier()
    trainer.save_model(str(tmp))
    if not dist.is_main():
        dist.barrier()  # rank 0 writes the result
        return json.loads(result_path.read_text(encoding="utf-8"))
    info = {"base_dtype": placement.dtype, "precision": placement.precision, "device": placement.device,
            "processes": dist.world_size(), "placement": placement.reason, "base": cfg.base, "base_path": path,
            "shared_prefix": sp}
    write_atomic(tmp / TRAINING_INFO, json.dumps(json_safe(info), indent=1))
    shutil.rmtree(adapter_dir, ignore_errors=True)
    tmp.rename(adapter_dir)

    records = log.read()
    plot_loss(records, out_dir / "loss.png", f"{name}: LoRA r={cfg.lora.r} on {Path(str(cfg.base)).name}, "
              f"{stats['rows']} rows")
    result = {
        "name": name, "adapter_dir": str(adapter_dir.resolve()), "base": cfg.base, "base_path": path,
        "rows": stats["rows"], "truncated_rows": stats["truncated_rows"], "dropped_rows": stats["dropped_rows"],
        "tokens": stats["tokens"], "steps": int(trainer.state.global_step),
        "train_seconds": round(train_seconds, 2),
        "total_train_seconds": round(records[-1]["elapsed"], 2) if records else round(train_seconds, 2),
        "load_seconds": round(load_seconds, 2),
        "final_loss": records[-1]["loss"] if records else None,
        "resumed_from": str(resume) if resume else None, "seed": seed,
        **{k: info[k] for k in ("device", "base_dtype", "processes", "shared_prefix")},
    }
    write_atomic(result_path, json.dumps(json_safe(result), indent=1))  # last: the run is complete
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # optimizer states are no longer needed
    dist.barrier()
    return result


def _activation_checkpointing(config_cls, on: bool) -> dict:
    """transformers >= 5.x renamed `gradient_checkpointing` to `activation_checkpointing` (the old name warns).
    Non-reentrant checkpointing: the variant that works under DDP with frozen base weights."""
    fields = getattr(config_cls, "__dataclass_fields__", {})
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {name: on, **({f"{name}_kwargs": {"use_reentrant": False}} if on else {})}


def _QuietProgress():
    """transformers' ProgressCallback without its per-log print."""
    from transformers import ProgressCallback

    class QuietProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            return None

    return QuietProgress()


# -- a process of its own ------------------------------------------------------------------------------------------

def train_adapter_subprocess(cfg: FinetuneConfig, rows: list[dict], out_dir: Path, *, seed: int, name: str,
                             progress: bool = True) -> dict:
    """``train_adapter`` in a child process (``thinktrace._child``): training memory (model, optimizer,
    activations) goes back to the system when it ends instead of staying in the compile process's heap while later
    stages load models, and the child dies with the compile process. Same result, same resume behaviour."""
    from thinktrace._child import call_in_child

    return call_in_child(train_adapter, cfg, rows, Path(out_dir), seed=seed, name=name, progress=progress)
