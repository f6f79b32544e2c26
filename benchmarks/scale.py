"""Does sampling scale out? Traces sampled per second with 1 vs 2 Ray workers and with 1 vs 2 endpoints.

    python benchmarks/scale.py [--items 8] [--k 3] [--max-tokens 48]

Measured side by side in one run, on the same work: rejection sampling (thinktrace.teleprompt.RejectionSampling,
blind, keep = k so every example costs exactly k calls, cache off) of `--items` quickstart words (VADER lexicon)
with SmolLM2-135M (the shipped Q4_1 GGUF) at temperature 1, at most `--max-tokens` new tokens per call.

  ray        `execution: {backend: ray, workers: 1 | 2, cpus_per_worker: 1}` on a local Ray instance with 2 CPUs:
             each worker builds its own llama.cpp engine (1 thread) and samples one slot at a time;
  endpoints  `api_base: [one | two servers]`, each `python -m thinktrace.serve --threads 1 --slots 1` (llama.cpp's
             OpenAI-compatible server, one request at a time), the sampler's 2 threads as clients in both cases.

Real llama.cpp servers, not the fake OpenAI server of the tests: the question is whether a second endpoint adds
decoding capacity that thinktrace puts to use, and a fake with a fixed delay would only show that two requests
can wait in parallel. Model loading, actor start-up and a warm-up slot per worker or server are outside the timed part. Each row's
ratio is its throughput over the 1-worker (1-endpoint) row. Target on 2 cores: >= 1.6x with two. Needs the
embedded model (make install) and `pip install 'thinktrace[ray]'`; other load on the machine lowers the ratios.

The control rows repeat both on the toy corpus with calls that take a fixed `--delay` and no CPU: the fake engine
of the tests (provider python, THINKTRACE_FAKE_DELAY) in the Ray workers, and two one-slot fake OpenAI servers
(tests/support/openai_fake.py replies, one request at a time, `--delay` each). They show what thinktrace's dispatch
gives when the second worker or server has capacity of its own, which a shared 2-core machine may not leave it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "experiments" / "quickstart.yaml"


def workload(items: int):
    """(teacher program, training examples, label set, adapter) from the quickstart spec and corpus."""
    import tempfile

    from thinktrace.prompt_formats import make_prompt_format
    from thinktrace.data import load_corpus
    from thinktrace.loader import load_object
    from thinktrace.spec import load_spec
    from thinktrace.traces import trainset

    loaded = load_spec(SPEC, [f"output_dir={tempfile.mkdtemp(prefix='thinktrace-scale-')}"])
    corpus = load_corpus(loaded.spec.data, loaded.base_dir, loaded.spec.seed)
    infer = load_object(loaded.spec.programs.infer, [loaded.base_dir], "programs.infer")
    teacher = infer(guideline=loaded.guideline, label_set=corpus.label_set)
    examples = trainset(corpus)
    # two warm-up words (one per worker or server: each loads its model on its first call), then the timed ones
    return teacher, examples[2: items + 2], examples[:2], corpus.label_set, make_prompt_format(loaded.spec.programs.adapter)


def sample(work, lm, k: int, threads: int, executor=None) -> dict:
    """A warm-up slot per worker, then the timed sampling: attempts and generated tokens per second."""
    from thinktrace.teleprompt import RejectionSampling

    teacher, examples, warm, labels, adapter = work
    for batch, kk in ((warm, 1), (examples, k)):
        tele = RejectionSampling(labels, generator=lm, k=kk, keep=kk, temperature=1.0, progress=False,
                                 num_threads=threads, adapter=adapter)
        start = time.perf_counter()
        attempts = tele.sample(teacher, batch, executor=executor)
        wall = time.perf_counter() - start
    tokens = sum(a["tokens"]["completion"] for a in attempts)
    errors = sum(1 for a in attempts if a["error"])
    return {"attempts": len(attempts), "errors": errors, "wall_s": wall, "per_s": len(attempts) / wall,
            "tok_s": tokens / wall}


def bench_ray(work, k: int, max_tokens: int) -> dict:
    import ray

    from thinktrace.execution import ExecutionConfig, use_execution
    from thinktrace.lm import build_lm
    from thinktrace.lm.config import ModelConfig

    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    lm = build_lm(ModelConfig(name="smollm2", provider="local", model="smollm2-135m", max_tokens=max_tokens,
                              cache=False), "models.generator")
    out = {}
    try:
        for workers in (1, 2):
            with use_execution(ExecutionConfig(backend="ray", workers=workers, cpus_per_worker=1)) as executor:
                out[workers] = sample(work, lm, k, threads=workers, executor=executor)
    finally:
        ray.shutdown()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(n: int) -> tuple[list[subprocess.Popen], list[str]]:
    """n llama.cpp servers (thinktrace serve, 1 thread, 1 slot) on free ports; returns once each has loaded."""
    procs, urls = [], []
    for _ in range(n):
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "thinktrace.serve", "--model", "smollm2-135m",
                                       "--port", str(port), "--threads", "1", "--slots", "1"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}))
        urls.append(f"http://127.0.0.1:{port}/v1")
    for proc in procs:
        line = proc.stdout.readline()
        if not line.startswith("serving"):
            raise SystemExit(f"thinktrace serve failed: {line.strip()}")
    return procs, urls


def bench_endpoints(work, k: int, max_tokens: int) -> dict:
    from thinktrace.execution import LocalExecutor
    from thinktrace.lm import build_lm
    from thinktrace.lm.config import ModelConfig

    procs, urls = serve(2)
    out = {}
    try:
        for n in (1, 2):
            lm = build_lm(ModelConfig(name=f"fleet{n}", provider="openai", model="smollm2-135m", api_base=urls[:n],
                                      api_key_env="SCALE_BENCH_KEY", max_tokens=max_tokens, cache=False,
                                      num_threads=2), "models.generator")
            out[n] = sample(work, lm, k, threads=2, executor=LocalExecutor())
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
    return out


# -- the control: a fixed delay per call, no CPU used (what the machine's other load cannot touch) ----------------
def fake_work(items: int):
    """The toy corpus and the fake engine's programs (tests/), for the control rows."""
    from thinktrace.data import DataConfig, load_corpus
    from thinktrace.loader import load_object
    from thinktrace.traces import trainset

    corpus = load_corpus(DataConfig(source=str(ROOT / "tests" / "data" / "toy_long.csv"),
                                    label_set=["negative", "neutral", "positive"]), ROOT, seed=0)
    teacher = load_object("thinktrace.programs.trace:TraceInferrer", [], "programs.infer")("Rate.", corpus.label_set)
    examples = trainset(corpus)
    from thinktrace.prompt_formats import make_prompt_format

    return teacher, examples[2: items + 2], examples[:2], corpus.label_set, make_prompt_format("plain")


def slow_server(delay: float):
    """An OpenAI-compatible server on 127.0.0.1 that answers one request at a time, each after `delay` s (the
    tests' fake replies): a one-slot server whose time per request does not depend on the CPU."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    sys.path.insert(0, str(ROOT / "tests"))
    from support.openai_fake import answer, send_chat_reply

    slot = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with slot:
                time.sleep(delay)
            send_chat_reply(self, body, answer(body))

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def bench_control(items: int, k: int, delay: float) -> list:
    import ray

    from thinktrace.execution import ExecutionConfig, LocalExecutor, use_execution
    from thinktrace.lm import build_lm
    from thinktrace.lm.config import ModelConfig

    work = fake_work(items)
    os.environ["THINKTRACE_FAKE_DELAY"] = str(delay)
    engines = ROOT / "tests" / "support" / "fake_engines.py"
    lm = build_lm(ModelConfig(name="fake", provider="python", cache=False, model=f"{engines}:keyword_rater"),
                  "models.generator")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    on_ray = {}
    try:
        for workers in (1, 2):
            with use_execution(ExecutionConfig(backend="ray", workers=workers)) as executor:
                on_ray[workers] = sample(work, lm, k, threads=workers, executor=executor)
    finally:
        ray.shutdown()
        del os.environ["THINKTRACE_FAKE_DELAY"]
    servers = [slow_server(delay) for _ in range(2)]
    fleet = {}
    try:
        for n in (1, 2):
            remote = build_lm(ModelConfig(name=f"slow{n}", provider="openai", model="judge-1", cache=False,
                                          api_base=[url for _, url in servers[:n]], api_key_env="SCALE_BENCH_KEY",
                                          num_threads=2), "models.generator")
            fleet[n] = sample(work, remote, k, threads=2, executor=LocalExecutor())
    finally:
        for httpd, _ in servers:
            httpd.shutdown()
    return [(f"ray, {delay:g} s/call", on_ray), (f"endpoints, {delay:g} s", fleet)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=8, help="quickstart words sampled (default 8)")
    ap.add_argument("--k", type=int, default=3, help="attempts per word, all made (keep = k; default 3)")
    ap.add_argument("--max-tokens", type=int, default=48, help="new tokens per call at most (default 48)")
    ap.add_argument("--delay", type=float, default=0.2, help="control rows: seconds per call (default 0.2)")
    args = ap.parse_args(argv)
    os.environ.setdefault("SCALE_BENCH_KEY", "none")
    work = workload(args.items)
    print(f"sampling {len(work[1])} words x k={args.k} with SmolLM2-135M (llama.cpp), max_tokens {args.max_tokens}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before the run")
    rows = [("ray workers", bench_ray(work, args.k, args.max_tokens)),
            ("endpoints", bench_endpoints(work, args.k, args.max_tokens))]
    rows += bench_control(args.items, args.k, args.delay)
    print(f"{'setup':<22}{'n':>3}{'attempts':>10}{'errors':>8}{'wall s':>9}{'attempts/s':>12}{'tok/s':>8}{'ratio':>7}")
    for name, res in rows:
        for n, r in res.items():
            ratio = r["per_s"] / res[1]["per_s"]
            print(f"{name:<22}{n:>3}{r['attempts']:>10}{r['errors']:>8}{r['wall_s']:>9.1f}{r['per_s']:>12.2f}"
                  f"{r['tok_s']:>8.1f}{ratio:>6.2f}x")
    for name, res in rows:
        print(f"{name}: 2 vs 1 = {res[2]['per_s'] / res[1]['per_s']:.2f}x (target >= 1.6x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
