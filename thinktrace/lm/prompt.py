"""Prompt rendering shared by inference and fine-tuning: one function turns chat messages into token ids.

The local engine sends llama.cpp these token ids (not text for llama.cpp to template), and fine-tuning builds its
prompt ids with the same function, so a fine-tuned rater is prompted at inference with exactly the ids it was
trained on, whatever chat-template engine llama.cpp would have used.
"""

from __future__ import annotations

from typing import Sequence


def prompt_ids(tokenizer, messages: Sequence[dict]) -> list[int]:
    """Token ids of a prompt: the tokenizer's chat template with the generation prompt; when the last message is
    the assistant's, it is an answer prefix the model continues (no end-of-turn after it). Tokenizers without a
    chat template get a plain ``role: content`` transcript."""
    messages = list(messages)
    prefill = bool(messages) and messages[-1]["role"] == "assistant"
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=not prefill,
                                            continue_final_message=prefill, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    head = messages[:-1] if prefill else messages
    text = "".join(f"{m['role']}: {m['content']}\n" for m in head) + "assistant: "
    if prefill:
        text += messages[-1]["content"]
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def request_messages(request) -> list[dict[str, str]]:
    """A ``dspy.lm15.Request``'s system prompt and messages as chat-template dicts; non-text content is refused."""
    from dspy.lm15 import InvalidRequestError, TextPart

    out: list[dict[str, str]] = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(
            getattr(p, "text", "") or "" for p in request.system)
        out.append({"role": "system", "content": system})
    for m in request.messages:
        if not all(isinstance(p, TextPart) for p in m.parts):
            kinds = sorted({type(p).__name__ for p in m.parts if not isinstance(p, TextPart)})
            raise InvalidRequestError(f"local models take text only; got {', '.join(kinds)}")
        role = m.role if m.role in ("system", "user", "assistant") else "user"
        out.append({"role": role, "content": m.text or ""})
    return out
