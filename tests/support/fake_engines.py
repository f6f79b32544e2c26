"""Engines for `provider: python` in test specs (importable by path from a subprocess too)."""

from __future__ import annotations

import os
import time

from thinktrace.lm.scripted import ScriptedEngine

POSITIVE = ("good", "great", "lovely", "happy", "nice")
NEGATIVE = ("bad", "awful", "sad", "ugly", "poor")


def truth(text: str) -> str:
    words = set(text.lower().split())
    if words & set(POSITIVE):
        return "positive"
    if words & set(NEGATIVE):
        return "negative"
    return "neutral"


def _rule(inputs, request):
    if "rationale" in inputs and "label" not in inputs:  # CheckRationale
        return {"label": inputs["rationale"].rsplit(" ", 1)[-1]}
    if "label" in inputs:  # InferRationale
        return {"rationale": f"the guideline points to {inputs['label']}"}
    item = inputs.get("item", "")
    delay = float(os.environ.get("THINKTRACE_FAKE_DELAY", "0"))
    if delay:
        time.sleep(delay)
    label = _sampled_label(os.getpid(), item, request, every=3)
    return {"rationale": f"the words of '{item}' suggest {label}", "label": label}


def _sampled_label(who, item: str, request, every: int) -> str:
    """Log the call (THINKTRACE_FAKE_CALL_LOG: who, seed, temperature, item per line) and answer: right at
    temperature 0, and at temperature > 0 only when the attempt's seed is divisible by `every`."""
    seed = request.config.seed or 0
    call_log = os.environ.get("THINKTRACE_FAKE_CALL_LOG")
    if call_log:
        with open(call_log, "a") as fh:
            fh.write(f"{who}\t{seed}\t{request.config.temperature}\t{item}\n")
    right = (request.config.temperature or 0) == 0 or seed % every == 0
    return truth(item) if right else ("neutral" if truth(item) != "neutral" else "positive")


def keyword_rater():
    """Right at temperature 0; at temperature > 0 right only when the attempt's seed is divisible by 3."""
    return ScriptedEngine(_rule)


RULE = "RULE: judge by the sentiment words."


def _writes_rules(inputs) -> bool:
    """A writer call that answers with decision rules: map, reduce, revise, a rule's rewrite, a pair's separation."""
    return any(k in inputs for k in ("traces", "rule_sets", "errors", "problem", "neighbour_rules"))


def _guideline_rule(inputs, request, helps: bool = True):
    """Writer: summaries/merges add RULE. Rater: right on every item when its guideline carries RULE (helps) or
    on none (not helps), else right only on items whose number is even (the baseline disagrees with humans)."""
    from thinktrace.lm.scripted import text_of

    if _writes_rules(inputs):  # map, reduce, revise: rules only
        return {"decision_rules": RULE}
    if "rules" in inputs:
        return {"new_guideline": inputs.get("guideline", "") + "\n" + RULE}
    if "errors" in inputs:
        return {"revised_guideline": inputs.get("guideline", "") + "\n" + RULE}
    if "label" in inputs and "item" in inputs:  # InferRationale
        return {"rationale": f"the guideline points to {inputs['label']}"}
    if "rationale" in inputs:  # CheckRationale
        return {"label": inputs["rationale"].rsplit(" ", 1)[-1]}
    item = inputs.get("item", "")
    number = int(item.rsplit(" ", 1)[-1]) if item.rsplit(" ", 1)[-1].isdigit() else 0
    if RULE in text_of(request.system):
        right = helps
    else:
        right = number % 2 == 0
    delay = float(os.environ.get("THINKTRACE_FAKE_DELAY", "0"))
    if delay:
        time.sleep(delay)
    call_log = os.environ.get("THINKTRACE_FAKE_CALL_LOG")
    if call_log:  # one line per completed rating call: the guideline's hash and the item
        import hashlib

        digest = hashlib.sha1(text_of(request.system).encode()).hexdigest()[:8]
        with open(call_log, "a") as fh:
            fh.write(f"{digest}\t{request.config.temperature}\t{item}\n")
    label = truth(item) if right else ("neutral" if truth(item) != "neutral" else "positive")
    return {"rationale": f"'{item}' reads {label}", "label": label}


def guideline_aware():
    return ScriptedEngine(_guideline_rule)


def mute_writer():
    """guideline_aware, but the writer's answers carry no rule (a writer whose outputs are unusable)."""
    def rule(inputs, request):
        if _writes_rules(inputs):
            return {"decision_rules": "n/a"}
        return _guideline_rule(inputs, request)
    return ScriptedEngine(rule)


def guideline_averse():
    """Like guideline_aware, but a guideline with RULE makes the rater wrong on every item."""
    return ScriptedEngine(lambda inputs, request: _guideline_rule(inputs, request, helps=False))


def chat_only():
    """The keyword rater, right at temperature 0 only when prompted in DSPy's chat format (not plain lines)."""
    from thinktrace.lm.scripted import is_plain

    def rule(inputs, request):
        answer = _rule(inputs, request)
        if is_plain(request) and isinstance(answer, dict) and "item" in inputs:
            wrong = "neutral" if answer["label"] != "neutral" else "positive"
            answer = {"rationale": f"plain lines: {wrong}", "label": wrong}
        return answer
    return ScriptedEngine(rule)


class FaultyEngine(ScriptedEngine):
    """The keyword rater with faults on about 20 % of calls (chosen by a hash of the request, so a rerun meets the
    same faults): transient ones that fail the first time a request is seen and succeed when it is sent again
    (a 503, a timeout), final ones that fail every time (a 400), empty answers and garbage."""

    def __init__(self):
        super().__init__(self._rule)
        self.seen: set = set()
        self.faults = {"transient": 0, "final": 0, "empty": 0, "garbage": 0}

    def _rule(self, inputs, request):
        import hashlib

        from dspy import lm15

        key = f"{sorted(inputs.items())}|{request.config.seed}|{request.config.temperature}"
        roll = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % 100
        with self._lock:
            first = key not in self.seen
            self.seen.add(key)
        if roll < 8 and first:
            self.faults["transient"] += 1
            if roll < 4:
                raise lm15.ServerError("injected 503", status=503)
            raise TimeoutError("injected timeout")
        if 8 <= roll < 11:
            self.faults["final"] += 1
            raise lm15.InvalidRequestError("injected 400: the server refuses this request", status=400)
        if 11 <= roll < 15:
            self.faults["empty"] += 1
            return ""
        if 15 <= roll < 20:
            self.faults["garbage"] += 1
            return "@@ garbage %% no fields here"
        return _rule(inputs, request)


def faulty():
    return FaultyEngine()


LABELS = ("negative", "neutral", "positive")


def _reader_rule(inputs, request, reads: bool):
    """Trace-quality reader calls (ReadTrace: outputs `label` only). With a trace: `reads` gives the last label
    word of the trace, else the item's keyword label (ignoring the trace). Without a trace: `reads` knows nothing
    (always neutral), else the item's keyword label. Every other call is the keyword rater's. Each reader call is
    logged (condition, item) to THINKTRACE_FAKE_READ_LOG when it is set."""
    import re

    from thinktrace.lm.scripted import request_fields

    _, outputs = request_fields(request)
    if outputs != ["label"] or "item" not in inputs or "rationale" in inputs:
        return _rule(inputs, request)
    item = inputs["item"]
    if "trace" in inputs:
        found = [w for w in re.findall(r"[a-z]+", inputs["trace"].lower()) if w in LABELS]
        label = (found[-1] if found else "neutral") if reads else truth(item)
    else:
        label = "neutral" if reads else truth(item)
    log = os.environ.get("THINKTRACE_FAKE_READ_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{'trace' if 'trace' in inputs else 'item'}\t{item}\t{inputs.get('trace', '')}\n")
    return {"label": label}


def trace_reader():
    """A reader that returns the label its trace states (and knows nothing without one)."""
    return ScriptedEngine(lambda inputs, request: _reader_rule(inputs, request, reads=True))


def trace_ignorer():
    """A reader that labels the item by its keywords whether or not it is shown a trace."""
    return ScriptedEngine(lambda inputs, request: _reader_rule(inputs, request, reads=False))


def trace_reasoner():
    """A reader that follows the trace's reasoning, not its stated label: the sentiment words the trace quotes
    decide (so a masked trace that quotes its item still leads to the item's label); without a trace it knows
    nothing (always neutral). Other calls: the keyword rater's."""
    from thinktrace.lm.scripted import request_fields

    def rule(inputs, request):
        _, outputs = request_fields(request)
        if outputs != ["label"] or "item" not in inputs or "rationale" in inputs:
            return _rule(inputs, request)
        return {"label": truth(inputs["trace"].replace("'", " ")) if "trace" in inputs else "neutral"}
    return ScriptedEngine(rule)


def _student_rule(inputs, request):
    """The student of the self-traces tests: the keyword rater's answers at temperature 0 and to InferRationale /
    CheckRationale, but a blind sample at temperature > 0 is right only when its seed is divisible by 5 (the
    keyword rater's: by 3), with a rationale of its own. Each blind call is logged (student, seed, temperature,
    item) to THINKTRACE_FAKE_CALL_LOG. THINKTRACE_FAKE_STUDENT_DOWN=1: every call about an odd-numbered item fails
    with a 503 (an outage), before it is logged."""
    from dspy import lm15

    item = inputs.get("item", "")
    last = item.rsplit(" ", 1)[-1]
    if os.environ.get("THINKTRACE_FAKE_STUDENT_DOWN") == "1" and last.isdigit() and int(last) % 2:
        raise lm15.ServerError("injected 503: the student is down", status=503)
    if "label" in inputs or "rationale" in inputs:
        return _rule(inputs, request)
    label = _sampled_label("student", item, request, every=5)
    return {"rationale": f"the student reads '{item}' as {label}", "label": label}


def weak_student():
    """A student that explains fewer items than the keyword rater, in its own words (see _student_rule)."""
    return ScriptedEngine(_student_rule)


def _rates(inputs) -> bool:
    """A rating call (item in, rationale and label out), not a trace-sampling check or inference."""
    return "item" in inputs and "label" not in inputs and "rationale" not in inputs


def one_label():
    """A collapsed rater: answers `positive` for every item (other calls: the keyword rater's)."""
    return ScriptedEngine(lambda inputs, request: {"rationale": "it reads positive", "label": "positive"}
                          if _rates(inputs) else _rule(inputs, request))


def label_lister():
    """A rater that never answers: it recites the label set instead of a label on every item, in free text (the
    SmolLM2 case of issue 23: "The label must be one of: ...")."""
    return ScriptedEngine(lambda inputs, request: "The label must be one of: negative, neutral, positive."
                          if _rates(inputs) else _rule(inputs, request))
