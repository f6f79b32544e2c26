"""A variant's ratings with and without `llama.share_prefix`: the same requests (one shared prefix, the size of a
compiled rater's guideline + demos, then one item each) on the quickstart's Qwen2.5-Coder-1.5B settings (4 slots,
2 threads), sent from as many threads as slots, the two conditions alternated in one run.

    python benchmarks/prefix.py [--items 20] [--prefix-words 450] [--repeats 2] [--json out.json] [--markdown out.md]

Reported per condition (medians over repeats): wall seconds (model load excluded: each server answers a short
unrelated request first), prompt tokens llama.cpp computed (prompt minus cached), slot saves and restores, and
whether every answer equals the other condition's, and whether each condition repeats its own answers (the
determinism question: with continuous batching, greedy answers may depend on which requests share a batch).
Offline; needs the embedded models (`thinktrace install-assets`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "experiments" / "quickstart.yaml"
WORDS = ["good", "bad", "awful", "nice", "meh", "great", "sad", "joy", "fine", "ugly", "cute", "dull", "hate",
         "love", "ok", "wow", "calm", "grim", "glad", "lame", "kind", "mean", "warm", "cold"]
RULE = ("A word scores by the feeling it carries in ordinary social media use: weigh how strongly a typical reader "
        "would react, not how often the word appears, and keep sarcasm for items that signal it.")


def requests(items: int, prefix_words: int, codebook: str):
    from dspy.lm15 import Config, Message, Request

    rules = []
    while sum(len(r.split()) for r in rules) < prefix_words:
        rules.append(f"Rule {len(rules) + 1}. {RULE}")
    system = codebook + "\n\n" + "\n".join(rules)
    return [Request(model="local/qwen", system=system,
                    messages=(Message.user(f"Item: {w}\nExplain your rating in two sentences, then give the number."),),
                    config=Config(max_tokens=80, temperature=0.0))
            for w in (WORDS * (items // len(WORDS) + 1))[:items]]


def one(share: bool, reqs, model) -> dict:
    from dspy.lm15 import Config, Message, Request

    from thinktrace.lm.factory import clear_engines, get_engine

    clear_engines()
    cfg = model.model_copy(update={"llama": model.llama.model_copy(update={"share_prefix": share})})
    engine = get_engine(cfg)
    engine.complete(Request(model="local/qwen", messages=(Message.user("hi"),), config=Config(max_tokens=1)))
    before = dict(engine.server.stats())
    t0 = time.perf_counter()
    with ThreadPoolExecutor(cfg.llama.slots) as pool:
        texts = list(pool.map(lambda r: engine.complete(r).message.text, reqs))
    wall = time.perf_counter() - t0
    after = dict(engine.server.stats())
    clear_engines()
    d = {k: after[k] - before[k] for k in ("input_tokens", "cached_tokens", "output_tokens", "slot_saves",
                                           "slot_restores")}
    return {"share_prefix": share, "wall_s": round(wall, 2), "computed_prompt_tokens": d["input_tokens"] -
            d["cached_tokens"], **d, "texts": texts}


def _yn(v: bool | None, changed: int | None = None) -> str:
    if v is None:
        return "not repeated"
    return "yes" if v else "NO" + (f" ({changed} answers changed)" if changed is not None else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--prefix-words", type=int, default=450)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    args = ap.parse_args(argv)

    from thinktrace import load_spec

    spec = load_spec(SPEC).spec
    model = next(r for r in spec.models.raters if r.model == "qwen2.5-coder-1.5b")
    reqs = requests(args.items, args.prefix_words, spec.codebook)
    runs = []
    for rep in range(args.repeats):
        for share in ((False, True) if rep % 2 == 0 else (True, False)):  # alternated: drift hits both
            runs.append(one(share, reqs, model))
            r = runs[-1]
            print(f"share_prefix={share}: {r['wall_s']} s, computed prompt tokens {r['computed_prompt_tokens']}, "
                  f"saves {r['slot_saves']}, restores {r['slot_restores']}", file=sys.stderr, flush=True)
    by = {s: [r for r in runs if r["share_prefix"] is s] for s in (False, True)}
    same = all(a["texts"] == b["texts"] for a in by[False] for b in by[True])
    # the determinism question: does each condition repeat itself? (llama.cpp batches requests as they arrive, so
    # greedy answers may depend on timing even without share_prefix)
    repeats = {s: all(r["texts"] == by[s][0]["texts"] for r in by[s][1:]) if len(by[s]) > 1 else None
               for s in (False, True)}
    differ = sum(a != b for a, b in zip(by[False][0]["texts"], by[True][0]["texts"]))
    within = {s: max((sum(a != b for a, b in zip(by[s][0]["texts"], r["texts"])) for r in by[s][1:]), default=None)
              for s in (False, True)}  # the most answers a repeat changed against the condition's first run
    rows = []
    for s in (False, True):
        med = lambda k, s=s: statistics.median(r[k] for r in by[s])  # noqa: E731
        rows.append({"share_prefix": s, "wall_s": med("wall_s"),
                     "computed_prompt_tokens": med("computed_prompt_tokens"), "prompt_tokens": med("input_tokens"),
                     "generated_tokens": med("output_tokens"),
                     "slot_saves": med("slot_saves"), "slot_restores": med("slot_restores")})
    ratio = rows[1]["wall_s"] / rows[0]["wall_s"]
    lines = ["| share_prefix | wall s (median) | prompt tokens | computed (not cached) | generated | slot saves | "
             "slot restores |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {'on' if r['share_prefix'] else 'off'} | {r['wall_s']:.1f} | {r['prompt_tokens']:,.0f} | "
                     f"{r['computed_prompt_tokens']:,.0f} | {r['generated_tokens']:,.0f} | {r['slot_saves']:.0f} | "
                     f"{r['slot_restores']:.0f} |")
    import platform
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    lines += ["", f"on / off wall time: {ratio:.2f}x; answers identical in every run: {'yes' if same else 'NO'}. "
              f"{args.items} requests sharing a ~{args.prefix_words}-word prefix, Qwen2.5-Coder-1.5B with the "
              f"quickstart's llama settings, {args.repeats} repeats per condition, alternated. {differ} of "
              f"{args.items} answers differ between the conditions' first runs; each condition repeats itself: "
              f"off {_yn(repeats[False], within[False])}, on {_yn(repeats[True], within[True])}. Measured "
              f"{time.strftime('%Y-%m-%d')} at commit {commit.strip()} on {len(__import__('os').sched_getaffinity(0))} "
              f"CPU cores ({platform.machine()}, Python {platform.python_version()})."]
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "ratio": ratio, "identical": same, "differ": differ,
                                               "repeats_itself": {"off": repeats[False], "on": repeats[True]},
                                               "changed_by_a_repeat": {"off": within[False], "on": within[True]},
                                               "args": vars(args),
                                               "runs": [{k: v for k, v in r.items() if k != "texts"} for r in runs]},
                                              indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
