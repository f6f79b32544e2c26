"""The shared-prefix loss: a batch whose rows share a prompt prefix runs it once, and the output head only on
answer tokens (same loss and gradients as the plain batch loss); and the TRL trainer class that uses it."""

from __future__ import annotations

import inspect




# -- shared-prefix loss --------------------------------------------------------------------------------------------

SHARED_PREFIX_MODELS = ("llama", "mistral", "qwen2", "qwen3")  # plain decoder + plain linear output head
MIN_SHARED_PREFIX = 8


def _causal_lm(model):
    """The transformers *ForCausalLM inside a (PEFT-wrapped) model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _ddp_module(model):
    """The module inside a DistributedDataParallel wrapper, or None when `model` is not one."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else None


def shared_prefix_loss(model, input_ids, attention_mask, labels, num_items_in_batch=None):
    """The causal-LM loss of a right-padded batch, computing the prompt prefix common to all rows once.

    The rows' longest common prefix (up to the token before the first trained position) goes through the decoder
    once with batch size 1; its key/value cache is repeated over the batch and the rows' remainders attend to it.
    Gradients flow back through the cache into the prefix pass, so loss and gradients equal those of the plain
    batch forward (up to float rounding; LoRA dropout masks on the prefix are shared by the rows). The output head
    runs only where a label is trained. Returns (loss, trained tokens, correct top-1 predictions), or None when the
    shortcut does not apply (unsupported architecture, batch of one, short common prefix).

    Under DDP (`model` a DistributedDataParallel), the computation reaches into the wrapped model, so it is run
    *inside the wrapper's forward call*: DDP then prepares the gradient all-reduce of the backward exactly as for a
    plain forward (its reducer only synchronises gradients of a backward that follows its own forward)."""
    inner = _ddp_module(model)
    lm = _causal_lm(inner if inner is not None else model)
    n = _shared_length(lm, input_ids, attention_mask, labels)
    if n is None:
        return None
    if inner is None:
        return _loss(lm, n, input_ids, attention_mask, labels, num_items_in_batch)
    out: list = []

    def forward(*_args, **_kwargs):
        out.append(_loss(lm, n, input_ids, attention_mask, labels, num_items_in_batch))
        return out[0][0]  # the loss tensor: DDP looks for the graph's parameters from the outputs

    saved = inner.__dict__.get("forward")  # accelerate may have set an instance forward (autocast wrapper)
    inner.forward = forward
    try:
        model()
    finally:
        if saved is not None:
            inner.forward = saved
        else:
            del inner.forward
    return out[0]


def _shared_length(lm, input_ids, attention_mask, labels) -> int | None:
    """Tokens of the prefix that can be shared, or None when the shortcut does not apply (no model call)."""
    config = lm.config
    if getattr(config, "model_type", None) not in SHARED_PREFIX_MODELS or input_ids.shape[0] < 2:
        return None
    backbone = getattr(lm, lm.base_model_prefix, None)
    head = lm.get_output_embeddings()
    if backbone is None or head is None or getattr(head, "bias", None) is not None:
        return None
    trained = labels != -100
    if not trained.any():
        return None
    same = ((input_ids == input_ids[:1]).all(0) & (attention_mask == 1).all(0)).int().cumprod(0)
    first = int(trained.int().argmax(1)[trained.any(1)].min())  # first trained position of any row
    n = min(int(same.sum()), first - 1)  # hidden states 0..n-1 are never scored, so they can be shared
    return n if n >= MIN_SHARED_PREFIX else None


def _loss(lm, n, input_ids, attention_mask, labels, num_items_in_batch):
    import torch
    import torch.nn.functional as F

    backbone, head = getattr(lm, lm.base_model_prefix), lm.get_output_embeddings()
    b = input_ids.shape[0]
    cache_kw = "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"
    pre = backbone(input_ids=input_ids[:1, :n], use_cache=True)
    cache = getattr(pre, "cache", None) or getattr(pre, "past_key_values", None)
    cache.batch_repeat_interleave(b)
    rest = backbone(input_ids=input_ids[:, n:], attention_mask=attention_mask, use_cache=True, **{cache_kw: cache})
    hidden = rest.last_hidden_state[:, :-1]  # position t predicts token t + 1
    targets = labels[:, n + 1:]
    mask = targets != -100
    logits = head(hidden[mask]).float()
    goal = targets[mask]
    total = F.cross_entropy(logits, goal, reduction="sum")
    denom = mask.sum() if num_items_in_batch is None else num_items_in_batch
    loss = total / torch.as_tensor(denom, device=total.device).clamp(min=1)
    with torch.no_grad():
        correct = int((logits.argmax(-1) == goal).sum())
    return loss, int(mask.sum()), correct


def step_aside_reason(enabled: bool, gradient_checkpointing: bool, distributed_type: str) -> str | None:
    """Why the shared-prefix loss is not used for a whole run (None: it is used where a batch allows)."""
    if not enabled:
        return "off in the spec (finetune.shared_prefix: false)"
    if gradient_checkpointing:
        return "gradient checkpointing recomputes layers without the key/value cache the shortcut shares"
    if distributed_type not in ("NO", "MULTI_CPU", "MULTI_GPU", "MULTI_XPU", "MULTI_NPU", "MULTI_MLU", "MULTI_MUSA"):
        return (f"under {distributed_type} the wrapper shards or owns the parameters; the shortcut is verified "
                "under plain DDP only (TRL's loss is used, with the same result, slower)")
    return None


def trainer_class(shared_prefix: bool):
    from trl import SFTTrainer

    class Trainer(SFTTrainer):
        """TRL's SFTTrainer; with `shared_prefix`, training batches use ``shared_prefix_loss`` (evaluation, and
        batches it does not apply to, keep TRL's loss). ``shared_prefix_stats`` counts the batches of each path and
        says why the shortcut stepped aside for the whole run, if it did."""

        shared_prefix_stats = None

        def _step_aside(self):
            if self.shared_prefix_stats is None:
                ckpt = bool(getattr(self.args, "activation_checkpointing", False)
                            or getattr(self.args, "gradient_checkpointing", False))
                kind = str(getattr(self.accelerator.distributed_type, "value", self.accelerator.distributed_type))
                self.shared_prefix_stats = {"reason": step_aside_reason(shared_prefix, ckpt, kind),
                                            "batches": 0, "other_batches": 0}
            return self.shared_prefix_stats["reason"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if (model.training and not return_outputs and "attention_mask" in inputs
                    and self._step_aside() is None):
                with self.accelerator.autocast():
                    out = shared_prefix_loss(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"],
                                             num_items_in_batch)
                if out is not None:
                    self.shared_prefix_stats["batches"] += 1
                    return self._record(out, inputs, num_items_in_batch)
            if model.training:
                self._step_aside()
                self.shared_prefix_stats["other_batches"] += 1
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

        def _record(self, out, inputs, num_items_in_batch):
            import torch

            loss, n_valid, n_correct = out
            gather = self.accelerator.gather
            dev = loss.device
            n_valid, n_correct = (int(gather(torch.tensor(x, device=dev)).sum()) for x in (n_valid, n_correct))
            self._metrics["train"]["mean_token_accuracy"].append(n_correct / max(n_valid, 1))
            self._total_train_tokens += int(gather(inputs["attention_mask"].sum()).sum())
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            # as Trainer/TRL do: num_items_in_batch counts every rank's tokens and DDP averages gradients over ranks
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            return loss

    return Trainer


# -- training ------------------------------------------------------------------------------------------------------
