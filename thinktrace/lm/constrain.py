"""Labels that always parse: a GBNF grammar (llama.cpp) that fixes the answer's format and allows only the label set
in the label field, leaving free text (the rationale) free.

The grammar follows the prompt format (DSPy adapter) the rater runs with, field by field in the signature's output
order: ``Rationale: <one line>\\nLabel: <one of the labels>`` for the plain format, DSPy's ``[[ ## field ## ]]``
sections for the chat format, a JSON object for the JSON format. Programs ask for it with
``constrained_config(...)`` and pass the result as DSPy's per-call ``config``; it reaches the local engine as request
metadata (``thinktrace_grammar``). LMs that cannot take a grammar (remote providers) get an empty config: their
answers are parsed leniently and parse failures are counted.

An answer cut by ``max_tokens`` inside the rationale still lacks its label; ``choice_grammar`` then constrains the
continuation of the answer so far (see ``thinktrace.prompt_formats.choose_field``). The pieces that do not depend on the
format (the metadata key, which LMs take grammars, ``choice_grammar`` and other GBNF pieces) are in
``thinktrace.lm.grammar``.
"""

from __future__ import annotations

import json
from typing import Any

import dspy

from thinktrace.prompt_formats import PlainAdapter, title
from thinktrace.lm.grammar import GRAMMAR_KEY, alternatives, literal, supports_constraints

_JSON_STRING = r'"\"" ( [^"\\\n] | "\\" ["\\/bfnrt] )* "\""'


def answer_grammar(adapter, signature, constrained: dict[str, list[str]]) -> str:
    """GBNF for a whole answer of `signature` in `adapter`'s format; fields in `constrained` take one of their
    choices, every other output field one line of free text (at least one character)."""
    names = list(signature.output_fields)
    rules = ['text ::= [^\\n]+', f"jstr ::= {_JSON_STRING}"]
    for name, choices in constrained.items():
        if name not in names:
            raise ValueError(f"{name!r} is not an output field of {signature.__name__}")
        rules.append(f"{name}-value ::= {alternatives(choices)}")

    def value(name: str, json_mode: bool = False) -> str:
        if name in constrained:
            if json_mode:
                return f'"\\"" {name}-value "\\""'
            return f"{name}-value"
        return "jstr" if json_mode else "text"

    if isinstance(adapter, PlainAdapter):
        # the space after `Label:` belongs to the value: tokenizers merge it into the value's first token (" -",
        # " The"), and a grammar that consumed it in the header would force an unnatural first token (measured:
        # a 1.5B model then wrote positive labels for negative rationales)
        parts = [f"{literal(('' if i == 0 else chr(10)) + title(n) + ':')} "
                 + (f'" "? {value(n)}' if n in constrained else value(n)) for i, n in enumerate(names)]
    elif isinstance(adapter, dspy.JSONAdapter):
        parts = [literal("{")]
        for i, n in enumerate(names):
            parts.append(f"{literal(('' if i == 0 else ', ') + json.dumps(n) + ': ')} {value(n, json_mode=True)}")
        parts.append(literal("}"))
    else:  # ChatAdapter sections
        parts = [f"{literal(('' if i == 0 else chr(10) + chr(10)) + f'[[ ## {n} ## ]]' + chr(10))} {value(n)}"
                 for i, n in enumerate(names)]
        parts.append(literal("\n\n[[ ## completed ## ]]"))
    return "\n".join([f"root ::= {' '.join(parts)}", *rules])


def constrained_config(lm, adapter, signature, constrained: dict[str, list[str]]) -> dict[str, Any]:
    """DSPy per-call ``config`` that constrains the answer on an LM that supports grammars; ``{}`` otherwise."""
    if lm is None or not supports_constraints(lm):
        return {}
    grammar = answer_grammar(adapter or dspy.ChatAdapter(), signature, constrained)
    return {"metadata": {GRAMMAR_KEY: grammar}}
