"""Use 1 of the traces: LoRA fine-tuning of an open LLM rater (TRL + PEFT) on chat rows in exactly the inference
prompt format, resumable. config: the spec section and step plan; loss: the shared-prefix loss and its trainer;
train: encoding, checkpoints, the training run (in a child process from the pipeline); device: device and
precision choice; dist: who writes under a launcher; launch: the `python -m thinktrace.finetune` entry point and
the accelerate / torchrun glue."""

from thinktrace.finetune.config import FinetuneConfig, LauncherConfig, LoraConfig, plan_steps
from thinktrace.finetune.loss import shared_prefix_loss
from thinktrace.finetune.train import (complete_checkpoints, encode_rows, prompt_ids, train_adapter,
                                       train_adapter_subprocess)

__all__ = ["FinetuneConfig", "LauncherConfig", "LoraConfig", "complete_checkpoints", "encode_rows", "plan_steps", "prompt_ids",
           "shared_prefix_loss", "train_adapter", "train_adapter_subprocess"]
