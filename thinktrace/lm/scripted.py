"""An offline engine that answers DSPy requests from a Python rule: for tests, fault injection and dry runs.

It reads the input fields of the ChatAdapter-formatted request (``[[ ## item ## ]]`` blocks of the last user
message) and the output field names from the system prompt, calls ``rule(inputs, request)`` and formats the
returned fields the way ChatAdapter parses them. A rule may return a plain string to send verbatim (garbage,
empty output), a pair (answer, finish_reason) to end otherwise than "stop" (e.g. "length": cut by max_tokens), or
raise to simulate a provider fault. Thread-safe; counts calls.
"""

from __future__ import annotations

import re
import threading
from typing import Callable

from dspy.clients.engines.base import validate_request
from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events

_FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]\n(.*?)(?=\n\n\[\[ ## |\n\nRespond with the corresponding|\n*\Z)", re.S)
_OUT_NAMES = re.compile(r"Your output fields are:\n(.*?)(?:\n\n|\Z)", re.S)
_NAME = re.compile(r"`(\w+)`")

Rule = Callable[[dict, object], "dict | str"]


def text_of(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(getattr(p, "text", "") or "" for p in content)


_PLAIN_OUT = "Answer in exactly this format:\n"
_PLAIN_LINE = re.compile(r"^([A-Z][a-z ]*): (.*)$", re.M)


def is_plain(request) -> bool:
    """True when the request was formatted by thinktrace's PlainAdapter (`Field: value` lines)."""
    return _PLAIN_OUT in text_of(request.system)


def request_fields(request) -> tuple[dict[str, str], list[str]]:
    """(input fields of the last user message, output field names from the system prompt), for ChatAdapter
    and PlainAdapter requests."""
    user = text_of(request.messages[-1].text if hasattr(request.messages[-1], "text") else "")
    system = text_of(request.system)
    if is_plain(request):
        inputs = {k.lower().replace(" ", "_"): v.strip() for k, v in _PLAIN_LINE.findall(user)}
        block = system.split(_PLAIN_OUT, 1)[1]
        outputs = [k.lower().replace(" ", "_") for k, _ in _PLAIN_LINE.findall(block)]
        return inputs, outputs
    inputs = {k: v.strip() for k, v in _FIELD.findall(user)}
    block = _OUT_NAMES.search(system)
    outputs = _NAME.findall(block.group(1)) if block else []
    return inputs, outputs


def format_chat_fields(fields: dict) -> str:
    body = "".join(f"[[ ## {k} ## ]]\n{v}\n\n" for k, v in fields.items())
    return body + "[[ ## completed ## ]]"


def format_plain_fields(fields: dict) -> str:
    return "\n".join(f"{k.replace('_', ' ').capitalize()}: {v}" for k, v in fields.items())


class ScriptedEngine:
    def __init__(self, rule: Rule):
        self.rule = rule
        self.calls = 0
        self._lock = threading.Lock()

    def complete(self, request) -> Response:
        validate_request(request)
        with self._lock:
            self.calls += 1
        inputs, outputs = request_fields(request)
        answer = self.rule(inputs, request)
        finish = "stop"
        if isinstance(answer, tuple):
            answer, finish = answer
        if not isinstance(answer, str):
            fields = {k: answer[k] for k in outputs if k in answer} if outputs else answer
            answer = format_plain_fields(fields) if is_plain(request) else format_chat_fields(fields)
        text = answer
        return Response(id=None, model="scripted", message=Message.assistant([TextPart(text)]), finish_reason=finish,
                        usage=Usage(input_tokens=len(text_of(request.system)) // 4, output_tokens=len(text) // 4))

    def stream(self, request):
        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass
