"""How fast, and in how much memory, does thinktrace sample from local models on llama.cpp?

    python benchmarks/sampling.py [--only smollm2,qwen,traces] [--requests 64] [--quick] [--json out.json]

Every configuration runs in its own subprocess (so its peak RSS, ``ru_maxrss``, is its own) on the same sampling
requests: the rater's Judge signature with the quickstart guideline, formatted by thinktrace's plain adapter, VADER
lexicon words as items, `--k` samples per word at temperature 1 (top_p 1, top_k 0), each with its own seed, at
most `--max-tokens` new tokens. Configurations:

  yardstick  raw batched transformers ``generate`` on the SmolLM2-135M fp32 HF checkpoint (the weights fine-tuning
             trains on), left-padded batches of `--batch`, torch pinned to 2 threads (one seed per batch);
  smollm2    LlamaCppEngine driven through dspy.Predict from 2 x slots Python threads: the shipped Q4_1 GGUF for each
             of `--slots`, the F32 training base for each of `--f32-slots` (threads=2, poll=0, `--context`/slot);
  qwen       the same for Qwen2.5-Coder-1.5B (Q4_K_M GGUF) on `--qwen-requests` requests;
  traces     thinktrace.teleprompt.RejectionSampling (blind, keep 1) as pipeline.traces() runs it, on
             `--trace-items` quickstart train words, k = `--trace-k`: accepted traces per minute (Qwen, SmolLM2 Q4_1).
tok/s: generated tokens (llama.cpp's completion_tokens; yardstick: up to the first EOS) over the requests' wall time,
model loading excluded (`load`). `base`: the child's peak RSS before the model loaded (imports, tokenizer). Target
on 2 cores: SmolLM2 on llama.cpp >= 0.7x the yardstick's tok/s at <= 0.3x its RSS. Offline; needs embedded models.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "experiments" / "quickstart.yaml"


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# -- child side: one configuration, one process -----------------------------------------------------------------
def quickstart(limit: int):
    """The quickstart spec and corpus (VADER lexicon via thinktrace.data), `limit` items."""
    from thinktrace.data import load_corpus
    from thinktrace.spec import load_spec
    loaded = load_spec(SPEC, [f"data.limit={limit}", f"output_dir={tempfile.mkdtemp(prefix='thinktrace-bench-')}"])
    return loaded, load_corpus(loaded.spec.data, loaded.base_dir, loaded.spec.seed)


def program(loaded, corpus, which: str):
    """The spec's rater or trace-inference program (programs.rater / programs.infer) with its guideline."""
    from thinktrace.loader import load_object
    ref = getattr(loaded.spec.programs, which)
    return load_object(ref, [loaded.base_dir], f"programs.{which}")(guideline=loaded.guideline,
                                                                     label_set=corpus.label_set)


def judge_setup(n_requests: int, k: int):
    """(predictor, adapter, [(word, seed)]): the rater's Judge with the quickstart guideline, n_requests jobs."""
    import dspy
    from thinktrace.prompt_formats import make_prompt_format
    loaded, corpus = quickstart(max(64, -(-n_requests // k)))
    rater = program(loaded, corpus, "rater")
    words = [it.text for it in corpus.items]
    jobs = [(words[i // k], 1000 + i) for i in range(n_requests)]
    return dspy.Predict(rater.judge.signature), make_prompt_format(loaded.spec.programs.adapter), jobs


def child_yardstick(c: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from thinktrace.lm.embedded import convert_embedded
    from thinktrace.lm.prompt import prompt_ids
    torch.set_num_threads(2)
    predict, adapter, jobs = judge_setup(c["requests"], c["k"])
    ckpt = convert_embedded("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    prompts = [prompt_ids(tok, adapter.format(predict.signature, demos=[], inputs={"item": w})) for w, _ in jobs]
    base, t0 = rss_mib(), time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(ckpt), torch_dtype=torch.float32).eval()
    load = time.perf_counter() - t0
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    gen_eos = model.generation_config.eos_token_id
    eos = {tok.eos_token_id, *(gen_eos if isinstance(gen_eos, list) else [gen_eos])} - {None}

    def generate(chunk, new_tokens, seed):
        width = max(map(len, chunk))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=True,
                                 temperature=1.0, top_p=1.0, top_k=0, pad_token_id=pad, eos_token_id=sorted(eos))
        rows = out[:, width:].tolist()
        return sum(next((i + 1 for i, t in enumerate(r) if t in eos), len(r)) for r in rows)

    generate(prompts[:2], 2, 0)  # warm-up
    t0 = time.perf_counter()
    out_tokens = sum(generate(prompts[s:s + c["batch"]], c["max_tokens"], jobs[s][1])
                     for s in range(0, len(prompts), c["batch"]))
    return {"requests": len(prompts), "output_tokens": out_tokens, "seconds": time.perf_counter() - t0,
            "load_s": load, "base_mib": base,
            "prompt_tokens": sum(map(len, prompts)) / len(prompts)}


def local_lm(c: dict, max_tokens: int):
    """A dspy.LM on llama.cpp through thinktrace's factory (cache off) and its engine."""
    from thinktrace.lm.config import ModelConfig
    from thinktrace.lm.factory import build_lm, get_engine
    cfg = ModelConfig(name=c["model"], model=c["model"], temperature=1.0, max_tokens=max_tokens, cache=False,
                      training_base=c.get("training_base", False),
                      llama={"threads": 2, "poll": 0, "slots": c["slots"], "context": c["context"]})
    return build_lm(cfg), get_engine(cfg)


def child_llama(c: dict) -> dict:
    import dspy
    predict, adapter, jobs = judge_setup(c["requests"], c["k"])
    lm, engine = local_lm(c, c["max_tokens"])
    engine.server.tokenizer  # noqa: B018  (loaded before `base`, as the yardstick's)
    base = rss_mib()

    def one(job, max_tokens=c["max_tokens"]):
        word, seed = job
        with dspy.context(lm=lm.copy(rollout_id=seed, temperature=1.0, seed=seed, max_tokens=max_tokens),
                          adapter=adapter):
            try:
                predict(item=word)
            except Exception:  # a small model often misses the format; its tokens were generated all the same
                pass

    one(("warm-up", 1), 2)  # starts the server (load time) and pays first-call costs
    before, t0 = engine.stats(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=c["threads"]) as pool:
        list(pool.map(one, jobs))
    wall, after = time.perf_counter() - t0, engine.stats()
    d = {key: after[key] - before[key] for key in ("calls", "input_tokens", "cached_tokens", "output_tokens")}
    return {"requests": d["calls"], "output_tokens": d["output_tokens"], "seconds": wall, "load_s": after["load_s"],
            "base_mib": base, "prompt_tokens": d["input_tokens"] / max(1, d["calls"]),
            "cached_share": d["cached_tokens"] / max(1, d["input_tokens"])}


def child_traces(c: dict) -> dict:
    from thinktrace.prompt_formats import make_prompt_format
    from thinktrace.teleprompt import RejectionSampling
    from thinktrace.traces import trainset
    loaded, corpus = quickstart(64)
    spec = loaded.spec
    examples = trainset(corpus, max_items=c["items"])
    teacher, student = program(loaded, corpus, "infer"), program(loaded, corpus, "rater")
    lm, engine = local_lm(c, c["max_tokens"])
    engine.server.tokenizer  # noqa: B018
    base = rss_mib()
    engine.server.complete({"prompt": [1, 2, 3], "max_tokens": 1, "temperature": 0.0})  # load the model now
    tele = RejectionSampling(corpus.label_set, generator=lm, k=c["k"], keep=1, temperature=1.0, strategy="blind",
                             seed=spec.seed, num_threads=c["threads"], adapter=make_prompt_format(spec.programs.adapter),
                             progress=False)
    before, t0 = engine.stats(), time.perf_counter()
    tele.compile(student, trainset=examples, teacher=teacher)
    wall, after = time.perf_counter() - t0, engine.stats()
    att, d = tele.attempts, {key: after[key] - before[key] for key in ("calls", "input_tokens", "output_tokens")}
    return {"requests": d["calls"], "output_tokens": d["output_tokens"], "seconds": wall, "load_s": after["load_s"],
            "base_mib": base, "prompt_tokens": d["input_tokens"] / max(1, d["calls"]), "items": len(examples),
            "attempts": len(att), "accepted": sum(r["accepted"] for r in att), "errors": sum(bool(r.get("error"))
            for r in att), "explained": len({r["key"] for r in att if r["accepted"]})}


def child(c: dict) -> None:
    os.environ["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="thinktrace-bench-cache-")  # before dspy is imported
    sys.path.insert(0, str(ROOT))
    import logging
    import thinktrace  # noqa: F401  (offline env before dspy)
    logging.getLogger("dspy").setLevel(logging.ERROR)  # "response was truncated" is expected here
    load0 = os.getloadavg()[0]
    if c["kind"] == "prepare":  # resolve (convert, export, assemble) every file first: no child pays for it
        from thinktrace.lm.weights import served_model
        out = {m: str(served_model(m, tb).gguf) for m, tb in c["models"]}
    else:
        out = {"yardstick": child_yardstick, "llama": child_llama, "traces": child_traces}[c["kind"]](c)
        out.update(peak_mib=rss_mib(), load_avg=(load0 + os.getloadavg()[0]) / 2)
    print("RESULT " + json.dumps(out), flush=True)


# -- parent side: plan, run each configuration in a subprocess, print the table ---------------------------------
def run_child(c: dict, timeout: float) -> dict:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(c)], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return {**json.loads(line[7:]), "child_s": time.perf_counter() - t0}
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {proc.returncode}: {tail[:200]}"}


def plan(a) -> list[tuple[str, dict]]:
    common = {"k": a.k, "max_tokens": a.max_tokens, "context": a.context}
    runs: list[tuple[str, dict]] = []
    if {"smollm2", "qwen"} & a.only:
        runs.append((f"yardstick: transformers fp32 generate, batch {a.batch}",
                     {"kind": "yardstick", "requests": a.requests, "batch": a.batch, **common}))
    if "smollm2" in a.only:
        for tb, what, slots in ((False, "Q4_1", a.slots), (True, "F32 training base", a.f32_slots)):
            for s in slots:
                runs.append((f"smollm2 llama.cpp {what}, {s} slots", {"kind": "llama", "model": "smollm2-135m",
                             "training_base": tb, "slots": s, "threads": 2 * s, "requests": a.requests, **common}))
    for s in a.qwen_slots if "qwen" in a.only else ():
        runs.append((f"qwen2.5-coder-1.5b llama.cpp Q4_K_M, {s} slots", {"kind": "llama", "slots": s,
                     "model": "qwen2.5-coder-1.5b", "threads": 2 * s, "requests": a.qwen_requests, **common}))
    for model in ("qwen2.5-coder-1.5b", "smollm2-135m") if "traces" in a.only else ():
        runs.append((f"traces: rejection sampling, {model}", {**common, "kind": "traces", "model": model, "slots": 4,
                     "threads": 8, "items": a.trace_items, "k": a.trace_k, "max_tokens": a.trace_max_tokens}))
    return runs


def fmt_row(name: str, r: dict, yard: dict | None) -> str:
    if "error" in r:
        return f"{name:<46} ERROR {r['error']}"
    tok_s, gib = r["output_tokens"] / r["seconds"], r["peak_mib"] / 1024
    ratio = "" if not yard or "error" in yard else \
        f"{tok_s / (yard['output_tokens'] / yard['seconds']):5.2f}x  {r['peak_mib'] / yard['peak_mib']:5.2f}x"
    line = (f"{name:<46} {r['requests']:>4} {r['prompt_tokens']:>6.0f} {r['output_tokens']:>6} {r['seconds']:>6.1f} "
            f"{tok_s:>7.1f} {gib:>6.2f} {r['base_mib'] / 1024:>5.2f} {r['load_s']:>5.1f} {r['load_avg']:>4.1f}  "
            f"{ratio:<14}")
    if "accepted" in r:
        line += (f" accepted {r['accepted']}/{r['attempts']} attempts ({r['explained']}/{r['items']} words explained,"
                 f" {r['errors']} errors) = {60 * r['accepted'] / r['seconds']:.1f} accepted traces/min")
    return line.rstrip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="smollm2,qwen,traces", help="comma list of smollm2, qwen, traces")
    ap.add_argument("--requests", type=int, default=64, help="sampling requests for the yardstick and SmolLM2")
    ap.add_argument("--k", type=int, default=2, help="samples per word (same prompt, different seeds)")
    ap.add_argument("--batch", type=int, default=32, help="yardstick batch size")
    ap.add_argument("--slots", default="1,4,8", help="llama.cpp slot counts for SmolLM2")
    ap.add_argument("--f32-slots", default="4", help="llama.cpp slot counts for the SmolLM2 F32 training base")
    ap.add_argument("--qwen-slots", default="4")
    ap.add_argument("--context", type=int, default=1024, help="llama.cpp context per slot")
    for flag, default in (("--qwen-requests", 16), ("--max-tokens", 48), ("--trace-items", 16), ("--trace-k", 2),
                          ("--trace-max-tokens", 64)):  # traces: words, samples per word, max_tokens per sample
        ap.add_argument(flag, type=int, default=default)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 16 requests, 4 Qwen requests, 4 slots, "
                    "6 trace words")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per configuration")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(json.loads(a.child)) or 0
    if a.quick:
        a.requests, a.qwen_requests, a.slots, a.f32_slots, a.qwen_slots, a.trace_items = 16, 4, "4", "4", "4", 6
    a.only = {x.strip() for x in a.only.split(",") if x.strip()}
    if a.only - {"smollm2", "qwen", "traces"}:
        ap.error(f"--only: unknown {sorted(a.only - {'smollm2', 'qwen', 'traces'})}")
    a.slots, a.f32_slots, a.qwen_slots = ([int(s) for s in x.split(",") if s.strip()]
                                          for x in (a.slots, a.f32_slots, a.qwen_slots))

    runs = plan(a)
    print(f"thinktrace sampling benchmark: {os.cpu_count()} CPUs, load average "
          f"{'%.2f %.2f %.2f' % os.getloadavg()} (1/5/15 min) at start")
    print(f"requests: Judge signature + quickstart guideline (plain adapter), VADER words x {a.k} seeds, T=1, "
          f"top_p 1, top_k 0, max_tokens {a.max_tokens}; llama.cpp threads 2, poll 0, context {a.context}/slot, "
          f"2 Python threads per slot; yardstick torch threads 2")
    print("each configuration in its own process; RSS = its peak ru_maxrss; ratios are versus the yardstick\n",
          flush=True)
    models = sorted({(c["model"], c.get("training_base", False)) for _, c in runs if "model" in c}
                    | ({("smollm2-135m", True)} if runs and runs[0][1]["kind"] == "yardstick" else set()))
    prep = run_child({"kind": "prepare", "models": models}, 3600)
    if "error" in prep:
        print("preparing the model files failed:", prep["error"])
        return 1
    head = (f"{'configuration':<46} {'req':>4} {'prompt':>6} {'gen':>6} {'secs':>6} {'tok/s':>7} {'GiB':>6} "
            f"{'base':>5} {'load':>5} {'cpu':>4}  tok/s   RSS  (vs yardstick)")
    print(head + "\n" + "-" * len(head), flush=True)
    results, yard = {}, None
    for name, c in runs:
        r = run_child(c, a.timeout)
        results[name] = {"config": c, **r}
        yard = r if c["kind"] == "yardstick" else yard
        print(fmt_row(name, r, yard), flush=True)
    print("\ncolumns: req = requests answered, prompt = mean prompt tokens, gen = generated tokens, GiB = peak RSS, "
          "base = peak RSS before the model loaded, load = model load s, cpu = 1-min load average during the run")
    print(f"target: SmolLM2 on llama.cpp >= 0.7x the yardstick's tok/s at <= 0.3x its RSS; load average at end "
          f"{os.getloadavg()[0]:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
