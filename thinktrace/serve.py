"""Serve a local model as an OpenAI-compatible chat-completions endpoint on 127.0.0.1.

    python -m thinktrace.serve --model smollm2-135m --port 8011 [--adapter DIR] [--name NAME]

Then any OpenAI client, or a spec entry ``{provider: openai, model: smollm2-135m,
api_base: "http://127.0.0.1:8011/v1"}``, reaches it; several processes share one loaded model, and concurrent
requests are decoded together by the batching engine. Endpoints: ``POST /v1/chat/completions`` (text messages;
temperature, top_p, max_tokens / max_completion_tokens, stop, seed, n; no streaming, no tools) and
``GET /v1/models``. A malformed request gets HTTP 400 with an OpenAI-style JSON error body. No authentication:
bind to loopback only (the default). Standard library http.server, one thread per connection.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from thinktrace import _env  # noqa: F401  (before dspy)

MAX_BODY = 8 * 1024 * 1024
MAX_N = 16


class BadRequest(Exception):
    """A request the server refuses: rendered as an OpenAI-style error with HTTP `status`."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


def _text_content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadRequest("only text content parts are supported", f"{where}.content[{i}]")
            parts.append(part["text"])
        return "".join(parts)
    if content is None:
        return ""
    raise BadRequest("content must be a string or a list of text parts", f"{where}.content")


def _number(body: dict, key: str, lo: float, hi: float | None = None, integer: bool = False):
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise BadRequest(f"{key} must be {'an integer' if integer else 'a number'}", key)
    if value < lo or (hi is not None and value > hi):
        raise BadRequest(f"{key} must be in [{lo}, {hi if hi is not None else 'inf'}]", key)
    return value


def parse_chat_request(body: Any, served: set[str]):
    """Validate an OpenAI chat-completions body; returns (dspy.lm15.Request, n). Raises BadRequest."""
    from dspy.lm15 import Config, Message, Request

    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required", "model")
    if model not in served:
        raise BadRequest(f"model {model!r} is not served here; served: {sorted(served)}", "model", 404,
                         "model_not_found")
    if body.get("stream"):
        raise BadRequest("streaming is not supported by this server", "stream")
    if body.get("tools") or body.get("functions"):
        raise BadRequest("tools are not supported by this server", "tools")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list", "messages")
    system: list[str] = []
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRequest("each message must be an object", f"messages[{i}]")
        role = m.get("role")
        text = _text_content(m.get("content"), f"messages[{i}]")
        if role in ("system", "developer"):
            system.append(text)
        elif role == "user":
            turns.append(Message.user(text))
        elif role == "assistant":
            turns.append(Message.assistant(text))
        else:
            raise BadRequest(f"unsupported role {role!r} (system, developer, user, assistant)", f"messages[{i}].role")
    if not turns:
        raise BadRequest("at least one user or assistant message is required", "messages")
    max_tokens = _number(body, "max_completion_tokens", 1, integer=True) or _number(body, "max_tokens", 1,
                                                                                    integer=True)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)):
        raise BadRequest("stop must be a string or a list of strings", "stop")
    seed = _number(body, "seed", -(2**63), 2**63 - 1, integer=True)
    n = _number(body, "n", 1, MAX_N, integer=True) or 1
    config = Config(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0),
        stop=tuple(stop or ()),
        seed=seed,
    )
    return Request(model=model, messages=tuple(turns), system="\n\n".join(system) or None, config=config), n


def _seeded(request, k: int):
    """The k-th of n choices: seed + k when seeded (distinct, reproducible samples), the request otherwise."""
    import dataclasses

    if k == 0 or request.config.seed is None:
        return request
    return dataclasses.replace(request, config=dataclasses.replace(request.config, seed=request.config.seed + k))


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, engine, name: str, aliases: tuple[str, ...] = ()):
        super().__init__(address, _Handler)
        self.engine = engine
        self.name = name
        self.served = {name, *aliases}
        self.created = int(time.time())

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet by default; errors still reach the client as JSON
        pass

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, err: BadRequest) -> None:
        kind = "invalid_request_error" if err.status < 500 else "server_error"
        self._send(err.status, {"error": {"message": err.message, "type": kind, "param": err.param,
                                          "code": err.code}})

    def do_GET(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            data = [{"id": m, "object": "model", "created": self.server.created, "owned_by": "thinktrace"}
                    for m in sorted(self.server.served)]
            return self._send(200, {"object": "list", "data": data})
        if path in ("", "/health", "/v1"):
            return self._send(200, {"status": "ok", "model": self.server.name})
        return self._error(BadRequest(f"no route GET {path}", status=404, code="not_found"))

    def do_POST(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            return self._error(BadRequest("missing or invalid Content-Length", status=411 if length < 0 else 413))
        raw = self.rfile.read(length)
        if path not in ("/v1/chat/completions", "/chat/completions"):
            return self._error(BadRequest(f"no route POST {path}", status=404, code="not_found"))
        try:
            try:
                body = json.loads(raw or b"null")
            except (ValueError, UnicodeDecodeError) as exc:
                raise BadRequest(f"the request body is not valid JSON: {exc}") from None
            request, n = parse_chat_request(body, self.server.served)
            self._send(200, self._complete(request, n))
        except BadRequest as err:
            self._error(err)
        except Exception as exc:  # an engine failure: report it, keep serving
            from dspy.lm15 import InvalidRequestError

            status = 400 if isinstance(exc, InvalidRequestError) else 500
            self._error(BadRequest(f"{type(exc).__name__}: {exc}", status=status))

    def _complete(self, request, n: int) -> dict:
        engine = self.server.engine
        if n == 1:
            responses = [engine.complete(request)]
        else:  # the n choices decode together (and share the prompt's prefill)
            responses: list = [None] * n
            errors: list = []

            def run(k):
                try:
                    responses[k] = engine.complete(_seeded(request, k))
                except Exception as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            if errors:
                raise errors[0]
        prompt = responses[0].usage.input_tokens or 0
        completion = sum(r.usage.output_tokens or 0 for r in responses)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [
                {"index": k, "message": {"role": "assistant", "content": r.text or ""}, "finish_reason": r.finish_reason,
                 "logprobs": None}
                for k, r in enumerate(responses)
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }


def make_server(engine, name: str, host: str = "127.0.0.1", port: int = 8011, aliases: tuple[str, ...] = ()):
    """A ChatServer (not yet serving) for `engine` under model name `name`; port 0 picks a free port."""
    return ChatServer((host, port), engine, name, aliases)


def serve_in_thread(engine, name: str, host: str = "127.0.0.1", port: int = 0, aliases: tuple[str, ...] = ()):
    """Start a server on a daemon thread; returns it (``server.url`` is the api_base; ``server.shutdown()``)."""
    server = make_server(engine, name, host, port, aliases)
    threading.Thread(target=server.serve_forever, name="thinktrace-serve", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    from thinktrace.errors import SpecError, ThinktraceError
    from thinktrace.lm.batching import BatchingEngine
    from thinktrace.lm.embedded import resolve_model_path

    ap = argparse.ArgumentParser(prog="python -m thinktrace.serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m",
                    help="embedded name, local checkpoint dir or hub id (default: smollm2-135m)")
    ap.add_argument("--adapter", default=None, help="PEFT LoRA adapter directory applied on top of --model")
    ap.add_argument("--name", default=None, help="model name clients send (default: --model)")
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; there is no auth)")
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-window", type=float, default=0.02, help="seconds to gather requests when idle")
    ap.add_argument("--max-tokens", type=int, default=256, help="default max_tokens when a request sets none")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)
    try:
        resolve_model_path(args.model, field="--model")
        if args.adapter:
            from pathlib import Path

            if not (Path(args.adapter).expanduser() / "adapter_config.json").is_file():
                raise SpecError("--adapter", f"{args.adapter!r} is not a PEFT adapter directory (no adapter_config.json)")
        engine = BatchingEngine(args.model, args.adapter, num_threads=args.threads, max_batch_size=args.max_batch_size,
                                batch_window_s=args.batch_window, default_max_tokens=args.max_tokens)
        t0 = time.perf_counter()
        engine.load()
        name = args.name or args.model
        server = make_server(engine, name, args.host, args.port, aliases=(args.model,))
    except ThinktraceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 2
    print(f"serving {name} at {server.url} (loaded in {time.perf_counter() - t0:.1f} s); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
