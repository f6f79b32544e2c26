"""Serve a local model over llama.cpp's own OpenAI-compatible HTTP server on 127.0.0.1.

    python -m thinktrace.serve --model smollm2-135m --port 8011 [--adapter DIR ...] [--name NAME]

Any OpenAI client, or a spec entry ``{provider: openai, model: smollm2-135m, api_base: "http://127.0.0.1:8011/v1"}``,
then reaches it; several processes share one loaded model and llama.cpp batches concurrent requests. The model is
resolved exactly as for ``provider: local`` (an embedded name, a GGUF file, a Hugging Face checkpoint directory);
``--adapter`` serves PEFT LoRA adapters (converted to GGUF) on the exact weights they were trained on, selected per
request with llama.cpp's ``"lora": [{"id": 0, "scale": 1.0}]`` (``GET /lora-adapters`` lists them). Endpoints are
llama.cpp's: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``, ``/tokenize``, ``/apply-template``,
``/health`` (see llama.cpp's server documentation). Sampling defaults are plain (top_k 0, top_p 1, min_p 0), not
llama.cpp's (40, 0.95, 0.05), so a client that sends only a temperature gets plain sampling at that temperature.
No authentication: bind to loopback only (the default).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import thinktrace._env  # noqa: F401  (before dspy)


class LocalServer:
    """A running llama.cpp HTTP server for one model (and its adapters); ``url`` is the OpenAI ``api_base``."""

    def __init__(self, model: str, adapters: tuple[str, ...] = (), name: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, settings=None):
        import xllamacpp

        from thinktrace.lm.config import LlamaSettings
        from thinktrace.lm.weights import adapter_dtype, adapter_gguf, served_model

        settings = settings or LlamaSettings()
        dtypes = sorted({adapter_dtype(a) for a in adapters})  # the base is served in the dtype they trained on
        if len(dtypes) > 1:
            from thinktrace.errors import SpecError

            raise SpecError("--adapter", f"the adapters were trained against base weights of different dtypes "
                            f"({', '.join(dtypes)}); serve each group from its own server")
        served = served_model(model, training_base=dtypes[0] if dtypes else False, field="--model")
        loras = [adapter_gguf(a, served, field="--adapter") for a in adapters]
        p = xllamacpp.CommonParams()
        p.model.path = str(served.gguf)
        p.model_alias = {name or model}
        p.hostnames = [host]
        p.port = int(port)
        p.n_parallel = settings.slots
        p.n_ctx = settings.slots * settings.context
        for cpu in (p.cpuparams, p.cpuparams_batch):
            cpu.n_threads = settings.threads
            cpu.poll = settings.poll
        p.sampling.top_k, p.sampling.top_p, p.sampling.min_p = 0, 1.0, 0.0
        p.use_jinja = True
        p.warmup = False
        p.verbosity = -1
        if loras:
            p.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(a), 1.0) for a in loras]
            p.lora_init_without_apply = True
        self.name = name or model
        self.gguf = served.gguf
        self._server = xllamacpp.Server(p)
        self.base_url = str(self._server.listening_address).rstrip("/")
        self.url = self.base_url + "/v1"

    def close(self) -> None:
        self._server = None


def main(argv: list[str] | None = None) -> int:
    from thinktrace.errors import ThinktraceError

    ap = argparse.ArgumentParser(prog="python -m thinktrace.serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m",
                    help="embedded name, GGUF file, local checkpoint dir or hub id (default: smollm2-135m)")
    ap.add_argument("--adapter", action="append", default=[],
                    help="PEFT LoRA adapter directory trained on --model (repeatable; request field lora selects)")
    ap.add_argument("--name", default=None, help="model name clients send (default: --model)")
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; there is no auth)")
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp CPU threads (default 2)")
    ap.add_argument("--slots", type=int, default=4, help="requests decoded together (default 4)")
    ap.add_argument("--context", type=int, default=2048, help="context tokens per slot (default 2048)")
    args = ap.parse_args(argv)
    from thinktrace.lm.config import LlamaSettings

    t0 = time.perf_counter()
    try:
        settings = LlamaSettings(threads=args.threads, slots=args.slots, context=args.context)
        server = LocalServer(args.model, tuple(args.adapter), args.name, args.host, args.port, settings)
    except ThinktraceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # llama.cpp failed to load the file or to bind the port
        print(f"error: cannot serve {args.model} on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 2
    print(f"serving {server.name} at {server.url} (loaded in {time.perf_counter() - t0:.1f} s); Ctrl-C stops",
          flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
