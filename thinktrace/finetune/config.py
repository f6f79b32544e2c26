"""The `finetune` section of the spec (LoRA settings, training hyperparameters) and the step plan of a run."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

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


class LauncherConfig(Section):
    """How compile starts the training of each adapter: in a child process of its own (`inline`), or through
    accelerate's or torch's own launcher, one process per device (DDP; FSDP or DeepSpeed through an accelerate
    config file). The launcher runs `python -m thinktrace.finetune RUN_DIR --adapter NAME` in every process."""

    kind: Literal["inline", "accelerate", "torchrun"] = Field(
        "inline", description="`inline`: one process, started by compile (as before). `accelerate`: `accelerate "
        "launch` (DDP, or what `config_file` sets up). `torchrun`: `torchrun --standalone` (DDP on one machine).")
    num_processes: int = Field(1, ge=1, le=4096, description="Training processes (one per GPU; on the CPU each "
                               "takes its share of the rows). Each runs `batch_size` rows per pass, so the "
                               "effective batch is batch_size x grad_accum x num_processes. Passed to the launcher "
                               "(it overrides a config file's value).")
    config_file: str | None = Field(None, description="accelerate only: an `accelerate config` YAML file (e.g. FSDP "
                                    "or multi-node settings), passed as --config_file.")
    args: list[str] = Field(default_factory=list, description="Extra launcher arguments, placed before the "
                            "training module, e.g. [--main_process_port, '29600'] or [--nnodes, '2'].")

    @model_validator(mode="after")
    def _consistent(self) -> "LauncherConfig":
        if self.kind == "inline" and self.num_processes > 1:
            raise ValueError("num_processes > 1 needs a launcher: set kind to accelerate or torchrun (allowed kinds: "
                             "inline, accelerate, torchrun)")
        if self.kind != "accelerate" and self.config_file:
            raise ValueError(f"config_file is an accelerate config; kind is {self.kind!r} (use kind: accelerate)")
        if self.kind == "inline" and self.args:
            raise ValueError("args are launcher arguments; kind inline has no launcher")
        return self


#: how a training row holds the teacher's trace (``thinktrace.finetune.formats``)
FORMATS = ("rationale_then_label", "multitask", "label_then_rationale")
Format = Literal["rationale_then_label", "multitask", "label_then_rationale"]


class FinetuneConfig(Section):
    """LoRA fine-tuning of an open rater on the inferred traces (TRL SFTTrainer + PEFT; CPU, CUDA or MPS, one
    process or several through accelerate/torchrun). The label-only ablation is trained with the same settings on
    the same items."""

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
    format: list[Format] = Field(
        default_factory=lambda: ["rationale_then_label"], description="How the traces are trained (one adapter per "
        "format; a single name or a list): `rationale_then_label` (`<base>+trace-sft`, the default): one row per "
        "trace, the answer is the rationale then the label; `multitask` (`<base>+trace-sft-multitask`, distilling "
        "step-by-step): each trace gives two rows told apart by the prompt, a label task (the label-only prompt "
        "and answer) and a rationale task (the prompt asks for the rationale alone), and the rater is evaluated by "
        "its label alone (the label-only prompt); `label_then_rationale` (`<base>+trace-sft-label-first`): the "
        "answer is the label, then the rationale (evaluated with the label first). Every format trains on the same "
        "items with the same seed and the same optimizer steps (multitask, with twice the rows, gets the steps of "
        "one row per trace); each is paired against label-sft (and label-sft-all), the others against trace-sft.")
    ablation_label_all: bool = Field(False, description="Also train `<base>+label-sft-all`: label-only rows on "
                                     "*every* train example (the human label, whether or not the teacher explained "
                                     "it), the practical baseline of a user who has labels for every item; trained "
                                     "for `epochs` over its rows (more rows, more steps), paired against each "
                                     "trace adapter and label-sft.")
    ablation_shuffled: bool | list[Format] = Field(
        True, description="Also train the shuffled-trace control: a trace format's rows with each rationale moved to "
        "another item of the same label (a derangement seeded by the spec's seed; a rationale stays only where its "
        "label has no other item, counted), paired against that format's adapter, so \"traces help\" must beat "
        "explanations that do not fit the item. `true`: in the rationale-then-label format "
        "(`<base>+shuffled-trace-sft`, paired against trace-sft) when it is trained; a list of formats, each of "
        "them in `format`: one control per format (`<base>+shuffled-trace-sft-label-first`, "
        "`<base>+shuffled-trace-sft-multitask`), trained and evaluated like that format; `false`: none.")
    max_rows: int | None = Field(None, ge=1, description="Train on at most this many rows (the first ones, in "
                                 "trace order). Null: all.")
    max_per_label: int | None = Field(None, ge=1, description="Train on at most this many examples per label (the "
                                      "first ones in trace order), for every adapter alike: the trace formats, "
                                      "label-only on the same items, the shuffled control, the reviewed traces and "
                                      "label-only on every train example. A corpus whose labels are mostly one "
                                      "value otherwise teaches the student to answer that value (rows per label are "
                                      "reported). Null: no cap.")
    num_threads: int | None = Field(None, ge=1, le=1024, description="Torch CPU threads while training (restored "
                                    "afterwards). Null: torch's default (one per core). On a busy machine fewer "
                                    "threads can be several times faster: measured 3-5x for 1 thread instead of 2 on "
                                    "2 shared cores.")
    shared_prefix: bool = Field(True, description="Run the prompt prefix that all rows of a batch share (the "
                                "adapter's system prompt with the guideline) through the model once per batch "
                                "instead of once per row, and the output head only on answer tokens. Same loss and "
                                "gradients, several times faster when prompts are long and answers short "
                                "(Llama/Mistral/Qwen architectures; others use TRL's loss).")

    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Where to train: `auto` takes a CUDA GPU, else Apple MPS, else the CPU; an explicit "
        "device that is missing is an error.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="dtype of the base weights during training (LoRA weights stay fp32; bf16/fp16 also "
        "run the forward under autocast). `auto`: bf16 on a CUDA GPU that has it, fp16 on older GPUs, fp32 on the "
        "CPU and MPS. Recorded with the adapter; evaluation serves the base in the same dtype (a BF16/F16 GGUF), so "
        "the paired difference measures the adapter alone.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less "
                                         "memory for long rows or large models, slower (layers run forward twice). Turns the "
                                         "shared-prefix shortcut off (it needs the key/value cache).")
    launcher: LauncherConfig = Field(default_factory=LauncherConfig, description="How compile starts training "
                                     "(inline, or accelerate/torchrun across processes).")

    @field_validator("format", mode="before")
    @classmethod
    def _format(cls, v: Any) -> Any:
        v = [v] if isinstance(v, str) else v
        if isinstance(v, list):
            if not v:
                raise ValueError(f"name at least one format ({', '.join(FORMATS)})")
            bad = [f for f in v if f not in FORMATS]
            if bad:
                raise ValueError(f"unknown format {bad[0]!r}; allowed: {', '.join(FORMATS)}")
            v = list(dict.fromkeys(v))  # each format once, in the order given
        return v

    @field_validator("ablation_shuffled", mode="before")
    @classmethod
    def _shuffled(cls, v: Any) -> Any:
        v = [v] if isinstance(v, str) else v
        if isinstance(v, list):
            bad = [f for f in v if f not in FORMATS]
            if bad:
                raise ValueError(f"unknown format {bad[0]!r}; allowed: true, false or a list of {', '.join(FORMATS)}")
            v = list(dict.fromkeys(v))
        return v

    @model_validator(mode="after")
    def _shuffled_formats_trained(self) -> "FinetuneConfig":
        if isinstance(self.ablation_shuffled, list):
            missing = [f for f in self.ablation_shuffled if f not in self.format]
            if missing:
                raise ValueError(f"ablation_shuffled names {missing[0]!r}, which is not in format "
                                 f"({', '.join(self.format)}): a control is trained beside its own format")
        return self

    def shuffled_formats(self) -> list[str]:
        """The formats a shuffled-trace control is trained in (`ablation_shuffled`), in `format` order."""
        if self.ablation_shuffled is True:
            return ["rationale_then_label"] if "rationale_then_label" in self.format else []
        return [f for f in self.format if f in (self.ablation_shuffled or [])]

    @field_validator("base")
    @classmethod
    def _base(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("a base model is required (an embedded name, a checkpoint directory or a hub id)")
        return v.strip()


def plan_steps(cfg: FinetuneConfig, n_rows: int, processes: int | None = None) -> int:
    """Optimizer steps `train_adapter` will take for `n_rows` rows (before dropping rows whose prompt alone
    exceeds `max_length`) on `processes` processes (default: the launcher's), computed the way transformers'
    Trainer and accelerate's sharded data loader (each process gets every n-th batch, evened out) do."""
    processes = processes or cfg.launcher.num_processes
    n = min(n_rows, cfg.max_rows) if cfg.max_rows else n_rows
    if n <= 0:
        return 0
    if cfg.max_steps:
        return cfg.max_steps
    batches = math.ceil(math.ceil(n / cfg.batch_size) / processes)
    per_epoch = max(batches // cfg.grad_accum + int(batches % cfg.grad_accum > 0), 1)
    return math.ceil(cfg.epochs * per_epoch)


# -- tokenization --------------------------------------------------------------------------------------------------
