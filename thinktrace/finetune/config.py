"""The `finetune` section of the spec (LoRA settings, training hyperparameters) and the step plan of a run."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator

from thinktrace.config import Section


# -- config --------------------------------------------------------------------------------------------------------

class LoraConfig(Section):
    """LoRA adapter settings (PEFT)."""

    r: int = Field(16, ge=1, le=1024, description="LoRA rank: size of the low-rank update of each adapted matrix.")
    alpha: float = Field(32, gt=0, description="LoRA alpha: the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input during training.")
    target_modules: Literal["all-linear"] | list[str] = Field(
        "all-linear", description="Modules that get an adapter: `all-linear` (every linear layer except the output "
        "head) or a list of module names, e.g. [q_proj, v_proj].")

    @field_validator("target_modules", mode="before")
    @classmethod
    def _modules(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "all-linear":
            raise ValueError(f"use 'all-linear' or a list of module names such as [q_proj, v_proj] (got {v!r})")
        if isinstance(v, list):
            if not v:
                raise ValueError("the list of module names is empty; use 'all-linear' or name at least one module")
            bad = [m for m in v if not isinstance(m, str) or not m.strip()]
            if bad:
                raise ValueError(f"module names must be non-empty strings (got {bad!r})")
        return v


class FinetuneConfig(Section):
    """LoRA fine-tuning of an open rater on the inferred traces (TRL SFTTrainer + PEFT, CPU). The label-only
    ablation is trained with the same settings on the same items."""

    enabled: bool = Field(False, description="Fine-tune raters on the traces (and the label-only ablation).")
    base: str = Field("smollm2-135m", min_length=1, description="Base model: an embedded name (`smollm2-135m`), a "
                      "local Hugging Face checkpoint directory, or a hub id (needs the hub or a filled HF cache).")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA adapter settings.")
    epochs: float = Field(1.0, gt=0, le=1000, description="Passes over the training rows (fractions allowed); "
                          "ignored when `max_steps` is set.")
    max_steps: int | None = Field(None, ge=1, description="Total optimizer steps; overrides `epochs` when set.")
    learning_rate: float = Field(2e-4, gt=0, lt=1, description="Peak learning rate (AdamW, linear decay to 0).")
    batch_size: int = Field(8, ge=1, le=1024, description="Rows per forward/backward pass.")
    grad_accum: int = Field(1, ge=1, le=1024, description="Gradient accumulation: passes per optimizer step "
                            "(effective batch = batch_size x grad_accum).")
    max_length: int = Field(384, ge=16, le=131072, description="Most tokens per row (prompt + answer). Longer rows "
                            "are truncated at the end (counted and reported); a row whose prompt alone fills it is "
                            "dropped.")
    seed: int | None = Field(None, description="Seed of the LoRA initialization and data order. Null: the spec's "
                             "top-level seed.")
    save_steps: int = Field(10, ge=1, description="Save a checkpoint every this many steps; a killed run resumes "
                            "from the last one.")
    ablation_label_only: bool = Field(True, description="Also train the label-only ablation (same items, answer "
                                      "without the trace), so the effect of the traces is measured.")
    max_rows: int | None = Field(None, ge=1, description="Train on at most this many rows (the first ones, in "
                                 "trace order). Null: all.")
    num_threads: int | None = Field(None, ge=1, le=1024, description="Torch CPU threads while training (restored "
                                    "afterwards). Null: torch's default (one per core). On a busy machine fewer "
                                    "threads can be several times faster: measured 3-5x for 1 thread instead of 2 on "
                                    "2 shared cores.")
    shared_prefix: bool = Field(True, description="Run the prompt prefix that all rows of a batch share (the "
                                "adapter's system prompt with the guideline) through the model once per batch "
                                "instead of once per row, and the output head only on answer tokens. Same loss and "
                                "gradients, several times faster when prompts are long and answers short "
                                "(Llama/Mistral/Qwen architectures; others use TRL's loss).")

    @field_validator("base")
    @classmethod
    def _base(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("a base model is required (an embedded name, a checkpoint directory or a hub id)")
        return v.strip()


def plan_steps(cfg: FinetuneConfig, n_rows: int) -> int:
    """Optimizer steps `train_adapter` will take for `n_rows` rows (before dropping rows whose prompt alone
    exceeds `max_length`), computed the way transformers' Trainer does."""
    n = min(n_rows, cfg.max_rows) if cfg.max_rows else n_rows
    if n <= 0:
        return 0
    if cfg.max_steps:
        return cfg.max_steps
    batches = math.ceil(n / cfg.batch_size)
    per_epoch = max(batches // cfg.grad_accum + int(batches % cfg.grad_accum > 0), 1)
    return math.ceil(cfg.epochs * per_epoch)


# -- tokenization --------------------------------------------------------------------------------------------------
