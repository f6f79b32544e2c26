"""Label grammars: their shape per prompt format (the behaviour runs on llama.cpp in test_llamacpp.py)."""

import dspy
import pytest

from thinktrace.prompt_formats import make_prompt_format
from thinktrace.lm.constrain import answer_grammar, constrained_config
from thinktrace.lm.grammar import alternatives, choice_grammar

SIG = dspy.Signature("item -> rationale, label")


def test_plain_grammar_leaves_the_space_before_a_value_to_the_value():
    """Tokenizers merge the space after `Label:` into the value's first token (" -"); a grammar that consumed the
    space in the header would force an unnatural first token and bias the label."""
    g = answer_grammar(make_prompt_format("plain"), SIG, {"label": ["-1", "0", "1"]})
    assert g.splitlines()[0] == 'root ::= "Rationale:" text "\\nLabel:" " "? label-value'
    assert 'label-value ::= ("-1" | "0" | "1")' in g


def test_chat_and_json_grammars_follow_their_formats():
    chat = answer_grammar(make_prompt_format("chat"), SIG, {"label": ["a", "b"]})
    assert chat.splitlines()[0].startswith('root ::= "[[ ## rationale ## ]]\\n" text "\\n\\n[[ ## label ## ]]\\n" '
                                           "label-value")
    assert chat.splitlines()[0].endswith('"\\n\\n[[ ## completed ## ]]"')
    js = answer_grammar(make_prompt_format("json"), SIG, {"label": ["a", "b"]})
    assert '", \\"label\\": " "\\"" label-value "\\""' in js and js.splitlines()[0].startswith('root ::= "{"')


def test_bad_constraints_are_refused():
    with pytest.raises(ValueError, match="not an output field"):
        answer_grammar(make_prompt_format("plain"), SIG, {"score": ["1"]})
    with pytest.raises(ValueError, match="non-empty"):
        alternatives([])
    assert alternatives(['say "hi"']) == '("say \\"hi\\"")'
    assert choice_grammar(["x"]) == 'root ::= " "? ("x")'


def test_lms_without_grammars_get_no_constraint():
    remote = dspy.LM("openai/gpt-4o-mini", api_key="x")
    assert constrained_config(remote, make_prompt_format("plain"), SIG, {"label": ["a"]}) == {}
    assert constrained_config(None, make_prompt_format("plain"), SIG, {"label": ["a"]}) == {}
