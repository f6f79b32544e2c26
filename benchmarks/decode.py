"""llama.cpp's own speed on this machine: prompt tokens and generated tokens per second for the quickstart's teacher
(Qwen2.5-Coder-1.5B Q4_K_M) at several slot counts, each slot kept busy. It states the floor under every LM stage:
a stage cannot take less than (prompt tokens computed / prompt rate) + (tokens generated / generation rate).

    python benchmarks/decode.py [--model qwen2.5-coder-1.5b] [--slots 1 2 4 8] [--requests 16] [--tokens 60]
                                [--threads 2] [--json out.json] [--markdown out.md]

Per slot count, one fresh `xllamacpp.Server` (the quickstart's settings otherwise: `llama.threads`, KV per slot 1024
tokens, weights read not mapped) answers a warm-up request, then:
- **generation**: `--requests` requests with short distinct prompts, `--tokens` tokens each (end of text ignored),
  from as many threads as slots: generated tokens / wall seconds;
- **prompt**: as many requests as slots, each a distinct ~`--prompt-tokens` prompt and 1 generated token, all at
  once: prompt tokens / wall seconds.
Configurations run one after another in this process; run it on quiet cores. Offline; needs the embedded models
(`thinktrace install-assets`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

WORDS = ["good", "bad", "awful", "nice", "meh", "great", "sad", "joy", "fine", "ugly", "cute", "dull", "hate",
         "love", "ok", "wow", "calm", "grim", "glad", "lame", "kind", "mean", "warm", "cold"]


def server(gguf: Path, slots: int, threads: int):
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = str(gguf)
    p.n_parallel = slots
    p.n_ctx = slots * 1024
    p.cont_batching = True
    p.cache_prompt = True
    p.load_mode = xllamacpp.llama_load_mode.LLAMA_LOAD_MODE_NONE
    for cpu in (p.cpuparams, p.cpuparams_batch):
        cpu.n_threads = threads
    p.warmup = False
    p.verbosity = -1
    return xllamacpp.Server(p)


def measure(srv, slots: int, requests: int, tokens: int, prompt_tokens: int) -> dict:
    def ask(prompt: str, n: int) -> dict:
        out = srv.handle_completions({"prompt": prompt, "n_predict": n, "ignore_eos": True, "temperature": 0.0,
                                      "cache_prompt": True})
        if not isinstance(out, dict) or out.get("error"):
            raise SystemExit(f"llama.cpp answered an error: {out}")
        return out["timings"]

    ask("Hello", 1)  # warm-up (the load and first graph are not measured)
    prompts = [f"Rate the sentiment of the word '{WORDS[i % len(WORDS)]}' ({i}). Reasoning:" for i in range(requests)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(slots) as pool:
        gen = list(pool.map(lambda p: ask(p, tokens), prompts))
    gen_s = time.perf_counter() - t0
    filler = " ".join(WORDS)
    long = [f"Request {i}. " + " ".join([filler] * (prompt_tokens // len(WORDS))) for i in range(slots)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(slots) as pool:
        pp = list(pool.map(lambda p: ask(p, 1), long))
    pp_s = time.perf_counter() - t0
    generated = sum(t["predicted_n"] for t in gen)
    computed = sum(t["prompt_n"] for t in pp)
    return {"slots": slots, "generated_tokens": generated, "generation_s": round(gen_s, 2),
            "generation_tok_s": round(generated / gen_s, 1), "prompt_tokens": computed, "prompt_s": round(pp_s, 2),
            "prompt_tok_s": round(computed / pp_s, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b", help="an embedded model name")
    ap.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=60)
    ap.add_argument("--prompt-tokens", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    args = ap.parse_args(argv)

    from pipeline import conditions  # the same "measured when, where" sentence as the pipeline benchmark

    from thinktrace.lm.weights import prepare

    served = prepare(args.model)
    rows = []
    for slots in args.slots:
        srv = server(served.gguf, slots, args.threads)
        rows.append(measure(srv, slots, args.requests, args.tokens, args.prompt_tokens))
        del srv
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    lines = ["| slots busy | generated tok/s | prompt tok/s | generated (requests x tokens) | prompt tokens |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['slots']} | {r['generation_tok_s']:.1f} | {r['prompt_tok_s']:.1f} | "
                     f"{r['generated_tokens']:,} ({args.requests} x {args.tokens}) | {r['prompt_tokens']:,} |")
    lines += ["", f"{args.model} on llama.cpp, {args.threads} threads. "
              + conditions(str(ROOT / "experiments" / "quickstart.yaml")).replace(", spec experiments/quickstart.yaml", "")]
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
