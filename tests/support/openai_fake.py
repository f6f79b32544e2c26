"""A scripted OpenAI-compatible chat server on 127.0.0.1 that can go down mid-run and come back on the same port.

It answers thinktrace's plain-format prompts with the rules of fake_engines (the keyword rater, the trace
inferrer and judge, the guideline writer), deterministically from the request, and logs every answered request
body, so a test can check that no answered call was made twice.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Callable

from thinktrace.lm.scripted import _PLAIN_LINE, _PLAIN_OUT, format_plain_fields

from .fake_engines import _guideline_rule, _rule


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def answer(body: dict) -> str:
    system = "\n".join(_text(m["content"]) for m in body["messages"] if m["role"] == "system")
    user = _text(body["messages"][-1]["content"])
    inputs = {k.lower().replace(" ", "_"): v.strip() for k, v in _PLAIN_LINE.findall(user)}
    outputs = [k.lower().replace(" ", "_") for k, _ in _PLAIN_LINE.findall(system.split(_PLAIN_OUT, 1)[-1])]
    request = SimpleNamespace(config=SimpleNamespace(seed=body.get("seed"), temperature=body.get("temperature")),
                              system=system)
    writer = any(k in inputs for k in ("traces", "rule_sets", "rules", "errors"))
    fields = _guideline_rule(inputs, request) if writer else _rule(inputs, request)
    return format_plain_fields({k: fields[k] for k in outputs if k in fields} if outputs else fields)


def send_chat_reply(handler: BaseHTTPRequestHandler, body: dict, text: str) -> None:
    """Answer an OpenAI chat-completions request with `text`."""
    reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
             "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
    data = json.dumps(reply).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def body_key(body: dict) -> str:
    """sha1 of what makes a request the same call (model, messages, sampling)."""
    key = json.dumps({k: body.get(k) for k in ("model", "messages", "temperature", "seed", "max_tokens")},
                     sort_keys=True)
    return hashlib.sha1(key.encode()).hexdigest()


def is_rating(body: dict) -> bool:
    """A rater's call (the Judge signature: rationale + label from an item)."""
    user = _text(body["messages"][-1]["content"])
    return user.lstrip().startswith("Item:") and "Rationale:" not in user and "Label:" not in user


def send_error(handler: BaseHTTPRequestHandler, status: int) -> None:
    """An OpenAI-style error reply (429 carries `Retry-After: 0`, so the client's backoff is not stretched)."""
    data = json.dumps({"error": {"message": f"scripted failure {status}", "type": "server_error",
                                 "code": status}}).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    if status == 429:
        handler.send_header("Retry-After", "0")
    handler.end_headers()
    handler.wfile.write(data)


class FakeOpenAI:
    """start() / stop() on a fixed port; `go_down_after(n, when)` stops the server (connections are refused from
    then on) once n requests matching `when` have been answered. `fail_every=n` makes it flaky, deterministically:
    every n-th request it receives is answered with `fail_status` (429 or a 5xx) instead of a completion."""

    def __init__(self, fail_every: int = 0, fail_status: int = 500):
        self.fail_every, self.fail_status = fail_every, fail_status
        self.received = 0  # requests that reached the server (answered or failed)
        self.failed = 0  # requests answered with fail_status
        self.failed_bodies: list[str] = []  # sha1 of each request body answered with fail_status
        self.port = 0
        self.answered: list[str] = []  # sha1 of each answered request body (model, messages, sampling)
        self.kinds: Counter = Counter()
        self._httpd: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()
        self._trigger: tuple[int, Callable[[dict], bool]] | None = None
        self._matched = 0
        self.down = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeOpenAI":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if server._should_fail(body):
                    send_error(self, server.fail_status)
                    return
                send_chat_reply(self, body, answer(body))
                server._answered(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.down.clear()
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def _should_fail(self, body: dict) -> bool:
        with self._lock:
            self.received += 1
            fail = bool(self.fail_every) and self.received % self.fail_every == 0
            if fail:
                self.failed += 1
                self.failed_bodies.append(body_key(body))
            return fail

    def _answered(self, body: dict) -> None:
        stop = False
        with self._lock:
            self.answered.append(body_key(body))
            self.kinds["rating" if is_rating(body) else "other"] += 1
            if self._trigger and self._trigger[1](body):
                self._matched += 1
                stop = self._matched >= self._trigger[0]
                if stop:
                    self._trigger = None
        if stop:
            threading.Thread(target=self.stop, daemon=True).start()

    def go_down_after(self, n: int, when: Callable[[dict], bool] = lambda body: True) -> None:
        with self._lock:
            self._trigger, self._matched = (n, when), 0

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()  # from now on: connection refused
            self._httpd = None
            self.down.set()
