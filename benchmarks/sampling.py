"""How fast can thinktrace sample from a local model? (issue 4)

    python benchmarks/sampling.py [--model smollm2-135m] [--threads 32] [--requests 64] [--max-tokens 64]

On the same prompts (the rater's Judge signature formatted by DSPy's ChatAdapter, VADER lexicon words as items,
`--k` samples per item at temperature 1, each with its own seed, as rejection sampling sends them) it measures
generated tokens per second for

  (a) raw batched ``model.generate`` at the engine's batch size: the ceiling of this stack without our engine;
  (b) the BatchingEngine driven through dspy.Predict from `--threads` worker threads;
  (c) one request at a time through dspy.Predict (same engine class, one thread);

(a), (b) and (c) run in interleaved rounds so that a change in the machine's load hits all three alike. Then it
prints b/a and b/c, the accepted traces per minute of the quickstart's sampling stage (rejection sampling on a few
train items through thinktrace's own pipeline, DSPy cache off), and the process's peak RSS.
Targets on 2 cores: b/a >= 0.8, b/c >= 5, peak RSS <= 3 GiB. Runs offline; needs the embedded model installed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# a private, empty DSPy cache: every request of this run really reaches the model (set before dspy is imported)
os.environ["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="thinktrace-bench-cache-")

import thinktrace  # noqa: E402,F401  (offline env before dspy)

GUIDELINE = (
    "You are rating the sentiment intensity of a single word, emoticon, acronym or slang term as it is typically "
    "used in social media text. Rate it on a scale from -4 (extremely negative) to +4 (extremely positive), with 0 "
    "for neutral. Use the whole scale: -1/+1 slight, -2/+2 moderate, -3/+3 strong, -4/+4 extreme."
)
FALLBACK_ITEMS = ["happy", "terrible", "ok", "lol", "disaster", "great", "meh", "awesome", "sad", "fine", "hate",
                  "love", ":)", ":(", "wtf", "nice"]


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def items(n: int) -> list[str]:
    """The first `n` words of the VADER lexicon (package vaderSentiment), or a built-in list without it."""
    try:
        from importlib import resources

        text = resources.files("vaderSentiment").joinpath("vader_lexicon.txt").read_text(encoding="utf-8")
        words = [line.split("\t")[0] for line in text.splitlines() if line.strip()]
        words = [w for w in words if w.isalpha()] or words
    except Exception:
        words = FALLBACK_ITEMS
    return [words[(i * 97) % len(words)] for i in range(n)]


def judge_signature():
    import dspy

    try:
        sys.path.insert(0, str(ROOT))
        from signatures.judge import Judge

        return Judge.with_instructions(GUIDELINE)
    except Exception:
        return dspy.Signature("item -> rationale, label", GUIDELINE)


def jobs(n_requests: int, k: int) -> list[tuple[str, int]]:
    """(item, seed) pairs: n_requests / k items, k samples each."""
    words = items(max(1, -(-n_requests // k)))
    return [(w, 1000 + i * k + j) for i, w in enumerate(words) for j in range(k)][:n_requests]


def run_dspy(engine, work, threads: int, max_tokens: int, name: str) -> dict:
    """Drive `engine` through dspy.Predict from `threads` workers; tokens/s from the engine's own counters."""
    import dspy

    sig = judge_signature()
    adapter = dspy.ChatAdapter(use_json_adapter_fallback=False)
    lm = dspy.LM(f"local/{name}", engine=engine, temperature=1.0, max_tokens=max_tokens, cache=False)
    predict = dspy.Predict(sig)
    parsed = [0]

    def one(job):
        item, seed = job
        with dspy.context(lm=lm.copy(rollout_id=seed, temperature=1.0, seed=seed), adapter=adapter):
            try:
                predict(item=item)
                parsed[0] += 1
            except Exception:
                pass  # a small model often misses the output format; the tokens were still generated

    before = engine.stats()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, work))
    wall = time.perf_counter() - t0
    after = engine.stats()
    out_tokens = after["output_tokens"] - before["output_tokens"]
    return {"requests": len(work), "threads": threads, "output_tokens": out_tokens, "seconds": round(wall, 2),
            "tok_s": round(out_tokens / wall, 2), "parsed": parsed[0],
            "mean_rows": after.get("mean_rows"), "prefix_hit_tokens": after.get("prefix_hit_tokens"),
            "prefill_tokens": after.get("prefill_tokens")}


def run_raw(lm, work, batch: int, max_tokens: int) -> dict:
    """Plain ``model.generate`` on the same ChatAdapter prompts, left-padded batches of `batch`, sampling at T=1."""
    import dspy
    import torch

    sig = judge_signature()
    adapter = dspy.ChatAdapter()
    prompts = [lm.encode(adapter.format(sig, demos=[], inputs={"item": item})) for item, _ in work]
    tok = lm.tokenizer
    tok.padding_side = "left"
    eos = set(lm.eos_ids)
    generated = 0
    t0 = time.perf_counter()
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[lm.pad_id] * (width - len(p)) + p for p in chunk])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        torch.manual_seed(start)
        with torch.inference_mode():
            out = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_tokens, do_sample=True,
                                    temperature=1.0, top_p=1.0, top_k=0, pad_token_id=lm.pad_id,
                                    eos_token_id=sorted(eos))
        for row in out[:, width:].tolist():  # count tokens up to and including the first eos
            n = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
            generated += n
    wall = time.perf_counter() - t0
    return {"requests": len(prompts), "batch": batch, "output_tokens": generated, "seconds": round(wall, 2),
            "tok_s": round(generated / wall, 2), "mean_prompt_tokens": round(sum(map(len, prompts)) / len(prompts), 1)}


def run_quickstart(items_n: int, k: int, threads: int, engine=None) -> dict:
    """Rejection sampling (the quickstart spec with sampling switched on) on `items_n` train items."""
    from thinktrace.data import load_corpus
    from thinktrace.pipeline import Pipeline
    from thinktrace.spec import load_spec

    out_dir = tempfile.mkdtemp(prefix="thinktrace-bench-")
    loaded = load_spec(ROOT / "experiments" / "quickstart.yaml",
                       ["sampling.enabled=true", f"sampling.max_items={items_n}", f"sampling.k={k}",
                        f"sampling.num_threads={threads}", f"output_dir={out_dir}"])
    spec = loaded.spec
    corpus = load_corpus(spec.data, loaded.base_dir, spec.data.seed if spec.data.seed is not None else spec.seed)
    pipeline = Pipeline(loaded, corpus)
    pipeline.rundir.ensure()
    before = engine.stats() if engine is not None else {}
    t0 = time.perf_counter()
    stats = pipeline.traces()
    wall = time.perf_counter() - t0
    after = engine.stats() if engine is not None else {}
    delta = {key: after[key] - before.get(key, 0) for key in ("calls", "input_tokens", "output_tokens", "steps",
                                                             "row_steps") if key in after}
    accepted = int(stats.get("accepted", 0))
    return {"items": items_n, "k": k, "threads": threads, "attempts": stats.get("attempts"), "accepted": accepted,
            "seconds": round(wall, 1), "accepted_per_min": round(60 * accepted / wall, 2),
            "attempts_per_min": round(60 * int(stats.get("attempts") or 0) / wall, 2), "engine": delta,
            "engine_tok_s": round(delta.get("output_tokens", 0) / wall, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=32, help="DSPy worker threads for (b); also the batch size of (a)")
    ap.add_argument("--requests", type=int, default=64, help="requests for (a) and (b); 0 skips (a), (b), (c)")
    ap.add_argument("--single", type=int, default=8, help="requests for (c), one at a time")
    ap.add_argument("--k", type=int, default=4, help="samples per item (same prompt, different seeds)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--quickstart-items", type=int, default=6, help="0 skips the quickstart sampling stage")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of (a), (b), (c)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args(argv)

    import logging

    import torch

    from thinktrace.lm.batching import BatchingEngine

    logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)  # "response was truncated" is expected here
    from thinktrace.lm.config import ModelConfig
    from thinktrace.lm.factory import get_engine

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs", flush=True)
    # the process-wide engine build_lm hands out, so the quickstart stage reuses these weights
    engine = get_engine(ModelConfig(model=args.model))
    t0 = time.perf_counter()
    lm = engine.load()
    results: dict = {"model": args.model, "load_s": round(time.perf_counter() - t0, 2)}
    print(f"loaded {args.model} in {results['load_s']} s", flush=True)
    work = jobs(args.requests, args.k)
    batch = min(args.threads, engine.max_batch_size)

    warm = BatchingEngine(args.model)  # warm-up: first calls pay one-off costs
    warm._loaded = lm
    run_dspy(warm, jobs(2, 1), 2, 4, "warmup")

    # Interleaved rounds (a, b, c, a, b, c, ...) so that a change in machine load hits all three alike.
    single = BatchingEngine(args.model)  # (c): fresh prefix cache, same weights
    single._loaded = lm
    c_work = jobs(args.single, args.k)
    parts: dict[str, list[dict]] = {"a_raw_generate": [], "b_engine_dspy": [], "c_one_at_a_time": []}
    for r in range(args.rounds if args.requests else 0):
        chunk = work[r * len(work) // args.rounds : (r + 1) * len(work) // args.rounds]
        c_chunk = c_work[r * len(c_work) // args.rounds : (r + 1) * len(c_work) // args.rounds]
        parts["a_raw_generate"].append(run_raw(lm, chunk, batch, args.max_tokens))
        parts["a_raw_generate"][-1]["peak_rss_gib_so_far"] = round(peak_rss_gib(), 2)
        print(f"round {r + 1} (a) raw generate:", parts["a_raw_generate"][-1], flush=True)
        parts["b_engine_dspy"].append(run_dspy(engine, chunk, args.threads, args.max_tokens, args.model))
        parts["b_engine_dspy"][-1]["peak_rss_gib_so_far"] = round(peak_rss_gib(), 2)
        print(f"round {r + 1} (b) engine via DSPy:", parts["b_engine_dspy"][-1], flush=True)
        if c_chunk:
            parts["c_one_at_a_time"].append(run_dspy(single, c_chunk, 1, args.max_tokens, args.model))
            parts["c_one_at_a_time"][-1]["peak_rss_gib_so_far"] = round(peak_rss_gib(), 2)
            print(f"round {r + 1} (c) one at a time via DSPy:", parts["c_one_at_a_time"][-1], flush=True)
    for key, runs in parts.items():
        tokens, seconds = sum(x["output_tokens"] for x in runs), sum(x["seconds"] for x in runs)
        results[key] = {"requests": sum(x["requests"] for x in runs), "output_tokens": tokens,
                        "seconds": round(seconds, 2), "tok_s": round(tokens / seconds, 2) if seconds else 0.0,
                        "rounds": runs}
    a, b, c = (results[k]["tok_s"] for k in ("a_raw_generate", "b_engine_dspy", "c_one_at_a_time"))
    results["peak_rss_gib_before_quickstart"] = round(peak_rss_gib(), 2)
    results["b_over_a"] = round(b / a, 2) if a else None
    results["b_over_c"] = round(b / c, 2) if c else None
    if args.quickstart_items:
        try:
            results["quickstart_sampling"] = run_quickstart(args.quickstart_items, args.k, args.threads, engine)
        except Exception as exc:  # the pipeline is someone else's moving part: report, don't crash
            results["quickstart_sampling"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        print("quickstart sampling:", results["quickstart_sampling"], flush=True)
    results["peak_rss_gib"] = round(peak_rss_gib(), 2)

    print()
    if not args.requests:
        print(json.dumps(results, indent=1))
        return 0
    print(f"(a) raw batched generate (batch {batch}): {a:8.1f} tok/s")
    print(f"(b) engine via DSPy, {args.threads} threads:   {b:8.1f} tok/s   b/a = {results['b_over_a']}  (target >= 0.8)")
    print(f"(c) one request at a time:        {c:8.1f} tok/s   b/c = {results['b_over_c']}  (target >= 5)")
    q = results.get("quickstart_sampling") or {}
    if "accepted_per_min" in q:
        print(f"quickstart sampling: {q['accepted']} accepted of {q['attempts']} attempts in {q['seconds']} s = "
              f"{q['accepted_per_min']} accepted traces/min ({q['attempts_per_min']} attempts/min)")
    print(f"peak RSS: {results['peak_rss_gib']} GiB (target <= 3)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
