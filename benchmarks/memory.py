"""Where the memory of a local run goes: one llama.cpp server with its GGUF mapped vs read, and one LoRA training
process at 4 rows per pass vs 2 rows x 2 accumulated passes (the same rows per optimizer step).

    python benchmarks/memory.py [--requests 16] [--json out.json] [--markdown table.md]
    python benchmarks/memory.py --no-serve --spec experiments/convabuse-distill.yaml \
        --rows RUN_DIR/sft.jsonl --train 8x1 4x2 2x4 --max-steps 2      # a spec's training at rows per pass

Each configuration runs in its own subprocess, so its peak RSS (VmHWM) is its own:

  serve   Qwen2.5-Coder-1.5B (Q4_K_M) with the quickstart's llama settings (4 slots, 2 threads), `--requests`
          rating prompts sent from 4 threads; `llama.mmap` true (the file mapped: llama.cpp repacks the quantized
          weights into its CPU layout and the mapped pages stay resident beside the copy) vs false (the default).
          Reported: peak RSS, resident file-backed and anonymous memory, generated tokens per second.
  train   the `finetune` section of `--spec` (default: the quickstart's) on the SFT rows in `--rows` (that spec's
          run's sft.jsonl; skipped without it), in this process (no child of its own), at each `--train` setting
          of rows per pass x passes accumulated (default 4x1 2x2: the same rows per optimizer step), for
          `--max-steps` steps when given (the peak comes in the first). Reported: peak RSS, seconds.

Offline; needs the embedded models (`thinktrace install-assets`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "experiments" / "quickstart.yaml"
WORDS = ["good", "bad", "awful", "nice", "meh", "great", "sad", "joy", "fine", "ugly", "cute", "dull", "hate",
         "love", "ok", "wow", "calm", "grim", "glad", "lame", "kind", "mean", "warm", "cold"]


def status_mib() -> dict:
    keys = ("VmHWM", "VmRSS", "RssAnon", "RssFile")
    with open("/proc/self/status", encoding="ascii") as f:
        return {line.split(":")[0]: int(line.split()[1]) // 1024 for line in f if line.startswith(keys)}


def serve(mmap: bool, requests: int, spec_path: str) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    import xllamacpp

    from thinktrace import load_spec
    from thinktrace.lm.llamacpp import get_server, server_params

    spec = load_spec(spec_path).spec
    cfg = next(r for r in spec.models.raters if r.model == "qwen2.5-coder-1.5b")
    cfg = cfg.model_copy(update={"llama": cfg.llama.model_copy(update={"mmap": mmap})})
    server = get_server(cfg)  # the tokenizer and the prepared weights, as a run has them
    tokenizer = server.tokenizer
    from thinktrace.lm.prompt import prompt_ids

    system = spec.codebook
    reqs = [{"prompt": prompt_ids(tokenizer, [{"role": "system", "content": system},
                                              {"role": "user", "content": f"Word: {w}. Explain briefly, then "
                                               "give the number."}]),
             "max_tokens": 40, "temperature": 0.0, "cache_prompt": True}
            for w in (WORDS * (requests // len(WORDS) + 1))[:requests]]
    before = status_mib()
    t0 = time.perf_counter()
    srv = xllamacpp.Server(server_params(server.served, cfg.llama))
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(cfg.llama.slots) as pool:
        outs = list(pool.map(srv.handle_completions, reqs))
    wall = time.perf_counter() - t0
    tokens = sum(o["usage"]["completion_tokens"] for o in outs)
    after = status_mib()
    return {"config": f"serve, mmap {str(mmap).lower()}", "peak_rss_mib": after["VmHWM"],
            "file_mib": after["RssFile"], "anon_mib": after["RssAnon"], "before_load_mib": before["VmRSS"],
            "load_s": round(load, 2), "seconds": round(wall, 2), "generated_tokens": tokens,
            "tokens_per_s": round(tokens / wall, 2)}


def train(rows_path: str, batch: int, accum: int, spec_path: str, max_steps: int) -> dict:
    import shutil
    import tempfile

    from thinktrace import load_spec
    from thinktrace.finetune.train import train_adapter

    peak = [0]

    def sample():
        while True:
            peak[0] = max(peak[0], status_mib()["VmRSS"])
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    update = {"batch_size": batch, "grad_accum": accum, **({"max_steps": max_steps} if max_steps else {})}
    cfg = load_spec(spec_path).spec.finetune.model_copy(update=update)
    rows = [json.loads(line) for line in Path(rows_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    out = Path(tempfile.mkdtemp(prefix="thinktrace-memory-bench-"))
    try:
        t0 = time.perf_counter()
        res = train_adapter(cfg, rows, out / "adapter", seed=0, name="trace", progress=False)
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"config": f"train, batch {batch} x accumulate {accum}", "peak_rss_mib": max(peak[0], status_mib()["VmHWM"]),
            "seconds": round(wall, 2), "steps": res["steps"], "rows": res["rows"],
            "final_loss": res["final_loss"]}


def child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"benchmark child {args} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| configuration | peak RSS MiB | file-backed MiB | anonymous MiB | seconds | tokens/s or steps |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        rate = f"{r['tokens_per_s']} tok/s" if "tokens_per_s" in r else f"{r['steps']} steps"
        lines.append(f"| {r['config']} | {r['peak_rss_mib']:,} | {r.get('file_mib', '')} | {r.get('anon_mib', '')} "
                     f"| {r['seconds']} | {rate} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, spec_path, *rest = sys.argv[2:]
        out = (serve(rest[0] == "true", int(rest[1]), spec_path) if kind == "serve"
               else train(rest[0], int(rest[1]), int(rest[2]), spec_path, int(rest[3])))
        print(json.dumps(out))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--spec", default=str(SPEC), help="the spec whose models and finetune section are measured")
    ap.add_argument("--rows", help="an sft.jsonl to train on (a run of --spec); without it, no training rows")
    ap.add_argument("--train", nargs="+", default=["4x1", "2x2"], metavar="BxA",
                    help="rows per pass x passes accumulated, one training process each")
    ap.add_argument("--max-steps", type=int, default=0, help="train this many steps (0: the spec's epochs)")
    ap.add_argument("--no-serve", action="store_true", help="skip the llama.cpp configurations")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    rows = [] if args.no_serve else [child(["serve", args.spec, "true", str(args.requests)]),
                                     child(["serve", args.spec, "false", str(args.requests)])]
    if args.rows:
        for setting in args.train:
            batch, accum = setting.lower().split("x")
            rows.append(child(["train", args.spec, args.rows, batch, accum, str(args.max_steps)]))
    from pipeline import conditions  # benchmarks/pipeline.py, beside this script

    text = f"{table(rows)}\n\n{conditions(Path(args.spec))}"
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
