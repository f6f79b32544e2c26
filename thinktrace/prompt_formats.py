"""Prompt formats (DSPy adapters) for raters, selectable per experiment (`programs.adapter`).

- chat: DSPy's ChatAdapter (``[[ ## field ## ]]`` sections) without its JSON fallback (the fallback doubles
  the calls and small models answer it with code).
- json: DSPy's JSONAdapter.
- plain: `PlainAdapter`, a short `Field: value` line format that small local models follow far more often than
  the chat markers (measured in benchmarks/prompt_formats.py). A ChatAdapter subclass, so fine-tuning rows
  (`format_finetune_data`) come out in exactly the inference format.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import dspy
from dspy.adapters.utils import format_field_value
from dspy.utils.exceptions import AdapterParseError

from thinktrace.lm.grammar import GRAMMAR_KEY, choice_grammar, supports_constraints

ADAPTERS = ("plain", "chat", "json")


def title(name: str) -> str:
    """The line prefix of a field: `rationale` -> `Rationale`."""
    return name.replace("_", " ").strip().capitalize()


class PlainAdapter(dspy.ChatAdapter):
    """`Rationale: ...` / `Label: ...` lines; the guideline (signature instructions) leads the system prompt."""

    def __init__(self, **kwargs):
        kwargs.setdefault("use_json_adapter_fallback", False)
        super().__init__(**kwargs)

    def format_system_message(self, signature) -> str:
        instructions = textwrap.dedent(signature.instructions).strip()
        outputs = "\n".join(f"{title(n)}: <{(f.json_schema_extra or {}).get('desc', n)}>"
                            for n, f in signature.output_fields.items())
        return f"{instructions}\n\nAnswer in exactly this format:\n{outputs}"

    def format_field_description(self, signature) -> str:  # folded into format_system_message
        return ""

    def format_field_structure(self, signature) -> str:
        return ""

    def format_task_description(self, signature) -> str:
        return textwrap.dedent(signature.instructions).strip()

    def format_user_message_content(self, signature, inputs: dict[str, Any], prefix: str = "", suffix: str = "",
                                    main_request: bool = False) -> str:
        lines = [prefix] if prefix else []
        for name, field in signature.input_fields.items():
            if name in inputs:
                lines.append(f"{title(name)}: {format_field_value(field_info=field, value=inputs[name])}")
        if suffix:
            lines.append(suffix)
        return "\n".join(lines).strip()

    def format_assistant_message_content(self, signature, outputs: dict[str, Any], missing_field_message=None) -> str:
        return "\n".join(f"{title(n)}: {outputs.get(n, missing_field_message)}" for n in signature.output_fields)

    def parse(self, signature, completion: str) -> dict[str, Any]:
        names = list(signature.output_fields)
        heads = "|".join(re.escape(title(n)) for n in names)
        pattern = re.compile(rf"^[\s#*>_-]*({heads})[\s*_]*[:=-]\s*", re.I | re.M)
        found: dict[str, str] = {}
        matches = list(pattern.finditer(completion))
        for m, nxt in zip(matches, matches[1:] + [None]):
            name = names[[title(n).lower() for n in names].index(m.group(1).lower())]
            value = completion[m.end(): nxt.start() if nxt else len(completion)].strip().strip("*").strip()
            found.setdefault(name, value)
        missing = [n for n in names if not found.get(n)]
        if missing:
            raise AdapterParseError(adapter_name="PlainAdapter", signature=signature, lm_response=completion,
                                    message=f"missing output field(s): {', '.join(missing)}", parsed_result=found)
        return found


def make_prompt_format(name: str) -> dspy.Adapter:
    if name == "plain":
        return PlainAdapter()
    if name == "chat":
        return dspy.ChatAdapter(use_json_adapter_fallback=False)
    if name == "json":
        return dspy.JSONAdapter()
    raise ValueError(f"unknown adapter {name!r}; allowed: {', '.join(ADAPTERS)}")


def answer_prefix(adapter: dspy.Adapter, signature, outputs: dict[str, Any], next_field: str) -> str:
    """The assistant's answer up to (and including the header of) `next_field`, in the adapter's format: what a
    local model continues when it completes a cut answer (see choose_field)."""
    if isinstance(adapter, PlainAdapter):
        lines = [f"{title(k)}: {v}" for k, v in outputs.items()]
        return "\n".join([*lines, f"{title(next_field)}:"])
    if isinstance(adapter, dspy.JSONAdapter):
        import json

        body = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in outputs.items())
        return "{" + body + (", " if body else "") + json.dumps(next_field) + ": "
    parts = [f"[[ ## {k} ## ]]\n{v}" for k, v in outputs.items()]
    return "\n\n".join([*parts, f"[[ ## {next_field} ## ]]"]) + "\n"


def choose_field(lm, adapter: dspy.Adapter | None, predictor, inputs: dict[str, Any], outputs: dict[str, Any],
                 field: str, choices: list[str]) -> str | None:
    """Complete an answer that stopped before `field` (e.g. cut by max_tokens inside the rationale): the answer so
    far is given as an assistant prefix ending with `field`'s header, and a grammar lets the model write only one of
    `choices` (greedy). None when the LM takes no grammar (remote providers: their parse failures are counted)."""
    if lm is None or not supports_constraints(lm):
        return None
    adapter = adapter or dspy.ChatAdapter()
    messages = adapter.format(predictor.signature, demos=predictor.demos, inputs=inputs)
    messages.append({"role": "assistant", "content": answer_prefix(adapter, predictor.signature, outputs, field)})
    from dspy.lm15 import Config, Message, Request

    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system") or None
    turns = tuple(Message.assistant(m["content"]) if m["role"] == "assistant" else Message.user(m["content"])
                  for m in messages if m["role"] != "system")
    request = Request(model=lm.model, system=system, messages=turns,
                      config=Config(temperature=0.0, max_tokens=16,
                                    extensions={"metadata": {GRAMMAR_KEY: choice_grammar(list(choices))}}))
    text = lm(request).message.text.strip()
    if isinstance(adapter, dspy.JSONAdapter):
        text = text.strip('"')
    return text if text in choices else None
