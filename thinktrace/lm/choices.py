"""Label choice by likelihood for local models.

Small local models often write a rationale and then no parseable label. Instead of guessing, the rater can ask a
local engine which allowed label is most likely to follow the model's own answer so far: the request's messages end
with an assistant message (the answer prefix, e.g. ``Rationale: ...\\nLabel:``) and carry the choices in
``metadata={"thinktrace_choices": [...]}`` (a key DSPy passes through to the engine). The engine scores each
choice's summed token log-probability after the prefix and answers with the best choice verbatim. Engines built by
thinktrace's factory for local models support it; `supports_choices(lm)` says whether an LM does.
"""

from __future__ import annotations

CHOICES_KEY = "thinktrace_choices"
_capable: set[str] = set()


def mark_capable(model: str) -> None:
    """Record that the dspy.LM named `model` (e.g. ``local/smollm2``) runs on an engine that scores choices."""
    _capable.add(model)


def supports_choices(lm) -> bool:
    return getattr(lm, "model", None) in _capable


def requested_choices(request) -> list[str] | None:
    """The choices a request asks the engine to score, or None for an ordinary completion."""
    meta = (request.config.extensions or {}).get("metadata") or {}
    choices = meta.get(CHOICES_KEY) if isinstance(meta, dict) else None
    if not choices:
        return None
    if not all(isinstance(c, str) and c for c in choices):
        raise ValueError(f"{CHOICES_KEY} must be a list of non-empty strings")
    return list(choices)


def score_choices(loaded, messages: list[dict], choices: list[str]) -> list[float]:
    """Summed log-probability of each choice's tokens after the prompt (one padded forward pass)."""
    import torch

    prompt = loaded.encode(messages)
    tok = loaded.tokenizer
    conts = [tok.encode((" " + c) if not c.startswith(" ") else c, add_special_tokens=False) for c in choices]
    seqs = [prompt + c for c in conts]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), loaded.pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    with torch.no_grad():
        logits = loaded.model(input_ids=ids, attention_mask=mask).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    scores = []
    for i, cont in enumerate(conts):
        start = len(prompt)
        positions = torch.arange(start - 1, start - 1 + len(cont))
        scores.append(float(logprobs[i, positions, torch.tensor(cont)].sum()))
    return scores
