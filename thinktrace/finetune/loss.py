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


def shared_prefix_loss(model, input_ids, attention_mask, labels, num_items_in_batch=None):
    """The causal-LM loss of a right-padded batch, computing the prompt prefix common to all rows once.

    The rows' longest common prefix (up to the token before the first trained position) goes through the decoder
    once with batch size 1; its key/value cache is repeated over the batch and the rows' remainders attend to it.
    Gradients flow back through the cache into the prefix pass, so loss and gradients equal those of the plain
    batch forward (up to float rounding; LoRA dropout masks on the prefix are shared by the rows). The output head
    runs only where a label is trained. Returns (loss, trained tokens, correct top-1 predictions), or None when the
    shortcut does not apply (unsupported architecture, batch of one, short common prefix)."""
    import torch
    import torch.nn.functional as F

    lm = _causal_lm(model)
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
    if n < MIN_SHARED_PREFIX:
        return None
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


def trainer_class(shared_prefix: bool):
    from trl import SFTTrainer

    class Trainer(SFTTrainer):
        """TRL's SFTTrainer; with `shared_prefix`, training batches use ``shared_prefix_loss`` (evaluation, and
        batches it does not apply to, keep TRL's loss)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if shared_prefix and model.training and not return_outputs and "attention_mask" in inputs:
                out = shared_prefix_loss(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"],
                                         num_items_in_batch)
                if out is not None:
                    loss, n_valid, n_correct = out
                    self._metrics["train"]["mean_token_accuracy"].append(n_correct / max(n_valid, 1))
                    self._total_train_tokens += int(inputs["attention_mask"].sum())
                    self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
                    return loss
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return Trainer


# -- training ------------------------------------------------------------------------------------------------------
