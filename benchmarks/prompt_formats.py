"""Parse rate and agreement of the embedded model per prompt format (DSPy adapter), on the same items in one run.

    python benchmarks/prompt_formats.py [--items 20] [--spec experiments/quickstart.yaml] [--adapters plain chat json]

Prints, per adapter: parseable outputs, exact-match accuracy, seconds per item, and the parse-rate ratio of each
adapter to DSPy's ChatAdapter.
"""

from __future__ import annotations

import argparse
import time

import thinktrace  # noqa: F401

from thinktrace.prompt_formats import make_prompt_format
from thinktrace.data import load_corpus
from thinktrace.evaluate import rate_one
from thinktrace.lm import build_lm
from thinktrace.loader import load_object
from thinktrace.spec import load_spec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", default="experiments/quickstart.yaml")
    p.add_argument("--items", type=int, default=20)
    p.add_argument("--split", default="dev")
    p.add_argument("--adapters", nargs="+", default=["plain", "chat", "json"])
    args = p.parse_args()
    loaded = load_spec(args.spec)
    spec = loaded.spec
    corpus = load_corpus(spec.data, loaded.base_dir, spec.seed)
    items = corpus.split(args.split)[: args.items]
    cfg = spec.models.raters[0].model_copy(update={"cache": False})
    lm = build_lm(cfg)
    Rater = load_object(spec.programs.rater, [loaded.base_dir], "programs.rater")
    program = Rater(guideline=loaded.guideline, label_set=corpus.label_set)
    rate_one(program, lm, items[0], make_prompt_format("plain"))  # load the model outside the timings
    rows = {}
    for name in args.adapters:
        adapter = make_prompt_format(name)
        start = time.perf_counter()
        records = [rate_one(program, lm, it, adapter) for it in items]
        secs = (time.perf_counter() - start) / len(items)
        parsed = sum(r["label"] is not None for r in records)
        correct = sum(r["label"] == r["human"] for r in records)
        rows[name] = (parsed, correct, secs)
    print(f"{cfg.model}, {len(items)} {args.split} items, greedy, max_tokens={cfg.max_tokens}")
    print(f"{'adapter':8} {'parsed':>8} {'accuracy':>9} {'s/item':>7}")
    for name, (parsed, correct, secs) in rows.items():
        print(f"{name:8} {parsed:>4}/{len(items):<3} {correct / len(items):>9.2f} {secs:>7.1f}")
    if "chat" in rows:
        base = max(rows["chat"][0], 1)
        for name, (parsed, _, _) in rows.items():
            if name != "chat":
                print(f"parse-rate ratio {name}/chat: {parsed / base:.2f}" + (" (chat parsed 0)" if rows['chat'][0] == 0 else ""))


if __name__ == "__main__":
    main()
