"""GBNF grammars (llama.cpp) and which LMs take them: the format-free part of constrained answers, shared by the
engine that applies a grammar (``thinktrace.lm.llamacpp``), the prompt formats that complete a cut answer under one
(``thinktrace.prompt_formats.choose_field``) and the answer grammars of each format (``thinktrace.lm.constrain``).

- ``GRAMMAR_KEY``: the request metadata key a grammar travels under to the local engine.
- ``mark_constrainable(model)`` / ``supports_constraints(lm)``: LMs whose engine honours grammars (local models).
- ``literal``, ``alternatives``, ``choice_grammar``: GBNF pieces.
"""

from __future__ import annotations

import json
from typing import Iterable

GRAMMAR_KEY = "thinktrace_grammar"
_constrainable: set[str] = set()


def mark_constrainable(model: str) -> None:
    """Record that the dspy.LM named `model` (e.g. ``local/smollm2``) runs on an engine that honours grammars."""
    _constrainable.add(model)


def supports_constraints(lm) -> bool:
    return getattr(lm, "model", None) in _constrainable


def literal(text: str) -> str:
    """A GBNF string literal."""
    return json.dumps(text, ensure_ascii=False)


def alternatives(choices: Iterable[str]) -> str:
    choices = list(choices)
    if not choices or not all(isinstance(c, str) and c for c in choices):
        raise ValueError("a constrained field needs a non-empty list of non-empty strings")
    return "(" + " | ".join(literal(c) for c in choices) + ")"


def choice_grammar(choices: list[str]) -> str:
    """GBNF for one of `choices`, after optional spaces (what follows an answer prefix such as ``Label:``)."""
    return f'root ::= " "? {alternatives(choices)}'
