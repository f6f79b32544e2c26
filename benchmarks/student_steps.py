"""Training speed of an embedded student on this machine: LoRA SFT steps per second and peak RSS, fp32 vs bf16.

    python benchmarks/student_steps.py [--base qwen2.5-coder-0.5b] [--steps 4] [--batch 8] [--max-length 192]
                                       [--threads 1] [--precision fp32 bf16] [--json out.json]
                                       [--markdown table.md] [--from-json out.json ...]

Rows: real VADER lexicon words (the distill corpus, from the installed vaderSentiment package) in the rater's own
prompt format (thinktrace's plain format, the shipped Judge signature, a one-sentence guideline) with a rationale of the
teacher's typical length (~40 tokens), so every row is <= `--max-length` tokens. Each precision trains `--steps`
optimizer steps of `--batch` rows (rank 16, all linear layers, the shipped defaults otherwise, shared-prefix loss on)
in a process of its own, so its peak RSS (VmHWM) is its own. Reported per precision: load seconds, the first step
(warm-up) and the median of the later steps (seconds per step), steps per second, row tokens, final loss, peak RSS.

Offline; needs the student installed (`thinktrace install-assets --student qwen2.5-coder-0.5b`). The first run also
converts the GGUF into a training checkpoint in the cache (timed separately as `convert_s`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GUIDELINE = "Rate the sentiment of the word as used on social media, from -4 (extremely negative) to 4 (extremely " \
            "positive); 0 is neutral."
RATIONALE = ("The word {w!r} is mostly used on social media to express a {tone} feeling about something, and the "
             "strength of that feeling is {size}, so its sentiment is {tone} with {size} intensity.")


def rows(n: int) -> list[dict]:
    """`n` SFT rows of real VADER words (label = the rounded mean human rating) in the inference format."""
    import importlib.metadata as md

    from thinktrace.prompt_formats import make_prompt_format

    from thinktrace.labels import LabelSet
    from thinktrace.traces import sft_rows

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from programs.rater import Rater

    lexicon = next(f for f in md.files("vaderSentiment") if f.name == "vader_lexicon.txt").locate()
    words = []
    for line in Path(lexicon).read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].isalpha():
            words.append((parts[0], max(-4, min(4, round(float(parts[1]))))))
        if len(words) >= n:
            break
    labels = LabelSet.of(range(-4, 5), "ordinal")
    sig = Rater(GUIDELINE, labels).judge.signature
    traces = [{"item": w, "label": str(y), "rationale": RATIONALE.format(
        w=w, tone="positive" if y > 0 else "negative" if y < 0 else "neutral",
        size=["no", "slight", "moderate", "strong", "extreme"][abs(y)]), "key": w, "item_id": w} for w, y in words]
    return sft_rows(traces, sig, make_prompt_format("plain"))


def one(base: str, precision: str, steps: int, batch: int, max_length: int, threads: int) -> dict:
    from thinktrace.finetune import FinetuneConfig, train_adapter

    cfg = FinetuneConfig(enabled=True, base=base, batch_size=batch, max_steps=steps, save_steps=10_000,
                         max_length=max_length, num_threads=threads, device="cpu", precision=precision)
    with tempfile.TemporaryDirectory() as tmp:
        result = train_adapter(cfg, rows(batch * steps), Path(tmp), seed=0, name=precision, progress=False)
        log = [json.loads(line) for line in (Path(tmp) / "train_log.jsonl").read_text().splitlines()]
    elapsed = [0.0] + [r["elapsed"] for r in log]
    per_step = [b - a for a, b in zip(elapsed, elapsed[1:])]
    later = statistics.median(per_step[1:]) if len(per_step) > 1 else per_step[0]
    with open("/proc/self/status", encoding="ascii") as f:
        hwm = next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmHWM"))
    return {"precision": precision, "base_dtype": result["base_dtype"], "steps": result["steps"],
            "batch": batch, "threads": threads, "load_s": result["load_seconds"],
            "first_step_s": round(per_step[0], 2), "later_step_s_median": round(later, 2),
            "steps_per_s": round(1 / later, 4), "train_s": result["train_seconds"],
            "row_tokens": result["tokens"], "truncated_rows": result["truncated_rows"],
            "final_loss": result["final_loss"], "peak_rss_mib": hwm,
            "shared_prefix_batches": (result.get("shared_prefix") or {}).get("batches")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="qwen2.5-coder-0.5b")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path, help="also write the runs as a markdown table")
    ap.add_argument("--from-json", type=Path, nargs="+", help="train nothing: tabulate earlier --json outputs")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one precision in this process
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.base, args.one, args.steps, args.batch, args.max_length, args.threads)))
        return 0
    if args.from_json:
        outs = [json.loads(p.read_text()) for p in args.from_json]
        text = markdown(outs)
        print(text)
        if args.markdown:
            args.markdown.write_text(text)
        return 0
    from thinktrace.lm.embedded import canonical_name, convert_embedded

    out = {"base": args.base}
    if canonical_name(args.base):
        t0 = time.perf_counter()
        convert_embedded(args.base)
        out["convert_s"] = round(time.perf_counter() - t0, 1)  # ~0 when the cache already holds the checkpoint
    out["runs"] = []
    for precision in args.precision:
        cmd = [sys.executable, __file__, "--one", precision, "--base", args.base, "--steps", str(args.steps),
               "--batch", str(args.batch), "--max-length", str(args.max_length), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        out["runs"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(out["runs"][-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    if args.markdown:
        args.markdown.write_text(markdown([out]))
    return 0


def markdown(outs: list[dict]) -> str:
    """One row per run of each output, in order."""
    lines = ["| student | precision | rows x steps | tokens/row (prompt + answer) | first step s | later steps s "
             "(median) | steps/s | peak RSS MiB | final loss |", "|---|---|---|---|---|---|---|---|---|"]
    for out in outs:
        for r in out["runs"]:
            t = r["row_tokens"]
            lines.append(f"| {out['base']} | {r['precision']} | {r['batch']} x {r['steps']} | {t['mean']:.0f} "
                         f"({t['prompt_mean']:.0f} + {t['completion_mean']:.0f}) | {r['first_step_s']:.1f} | "
                         f"{r['later_step_s_median']:.1f} | {r['steps_per_s']:.3f} | {r['peak_rss_mib']:,} | "
                         f"{r['final_loss']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
