"""The same run at an earlier commit and at this checkout, side by side: each stage's wall time per LM call.

    python benchmarks/commits.py --base f8a92a5 [--spec experiments/quickstart.yaml] [--set FIELD=VALUE ...]
                                 [--also FIELD=VALUE ...] [--json out.json] [--markdown table.md] [--keep DIR]
                                 [--render-only]

Each side compiles its own copy of the spec (the commit's shipped defaults, with the same `--set` overrides) into
a fresh run folder with a fresh DSPy cache, one after the other (base first), in a child process under this
checkout's virtual environment: the base side runs from a `git worktree` of that commit (its code on `sys.path`
first), so both sides share the installed dependencies and the embedded models. Per stage, from each run folder:
wall time (metrics.json `timing`), LM calls (the stage's journal: attempts.jsonl for traces, predictions.jsonl for
evaluation; the last settled record of each unit, so a retried call counts once), seconds per call, prompt and
generated tokens per call, and the ratio to the base's seconds per call. `--also` adds a third side: this checkout
with more overrides (a setting that is off by default). The sides must rate the same items: the benchmark checks
that their splits hold the same ids.

What it does not control: the variant lists and prompts are each commit's own (that is what is compared), and the
cores' other load (run it on quiet cores; the order is fixed, base then head). Offline; needs the embedded models.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from pipeline import conditions  # noqa: E402  (benchmarks/ is not a package)

#: the journal whose records are a stage's LM calls, and its unit of work (thinktrace.journal: the same at both
#: commits this was written against)
JOURNALS = {"traces": ("attempts.jsonl", "attempt_key"), "evaluate": ("predictions.jsonl", "prediction_key")}


def worktree(commit: str, where: Path) -> Path:
    subprocess.run(["git", "worktree", "add", "--detach", str(where), commit], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    return where


def run_side(tree: Path, spec: str, sets: list[str], out: Path) -> float:
    """Compile `spec` (relative to `tree`) with `tree`'s code; returns the wall time of the whole process."""
    env = {**os.environ, "DSPY_CACHEDIR": str(out.parent / f"{out.name}-dspy-cache"), "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "thinktrace.compile", str(tree / spec), "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"the run in {tree} failed (exit {proc.returncode})")
    return time.perf_counter() - t0


def journal_calls(path: Path, key: str) -> dict:
    """Calls (one per unit of work, its last settled record), prompt and generated tokens of one journal."""
    from thinktrace import journal

    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
               if line.strip()] if path.exists() else []
    tokens = [r.get("tokens") or {} for r in journal.latest_settled(records, getattr(journal, key)).values()]
    return {"calls": len(tokens), "prompt_tokens": sum(t.get("prompt") or 0 for t in tokens),
            "generated_tokens": sum(t.get("completion") or 0 for t in tokens)}


def side_stats(out: Path) -> dict:
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    splits = json.loads((out / "data.json").read_text(encoding="utf-8")).get("splits") or {}
    stages = {}
    for stage, (journal, key) in JOURNALS.items():
        seconds = (metrics.get("timing") or {}).get(stage)
        if seconds is None:
            continue
        usage = (metrics.get("stages") or {}).get(stage) or {}  # llama.cpp's own counts, where the commit has them
        cached = (usage.get("cached_prompt_tokens") / usage["prompt_tokens"]
                  if usage.get("prompt_tokens") and usage.get("cached_prompt_tokens") is not None else None)
        stages[stage] = {"seconds": seconds, **journal_calls(out / journal, key), "cached_share": cached}
    return {"stages": stages, "splits": {k: sorted(map(str, v)) for k, v in splits.items()},
            "variants": [v["name"] for v in metrics.get("variants") or []]}


def per_call(s: dict, key: str) -> float | None:
    return s[key] / s["calls"] if s.get("calls") else None


def table(sides: list[tuple[str, dict]]) -> str:
    """One row per stage and side; the first side is the base every later side's per-call time is divided by."""
    head_cells = ["stage", "side", "wall s", "LM calls", "s per call", "prompt tokens per call",
                  "prompt tokens from llama.cpp's cache", "generated tokens per call", "s per call / base's"]
    lines = ["| " + " | ".join(head_cells) + " |", "|" + "---|" * len(head_cells)]
    base = sides[0][1]
    for stage in JOURNALS:
        b = base["stages"].get(stage)
        for i, (name, side) in enumerate(sides):
            s = side["stages"].get(stage)
            if not s:
                continue
            ratio = ""
            if i and b and per_call(b, "seconds") and per_call(s, "seconds"):
                ratio = f"{per_call(s, 'seconds') / per_call(b, 'seconds'):.2f}x"
            pc = per_call(s, "seconds")
            lines.append("| " + " | ".join([
                stage, name, f"{s['seconds']:.1f}", f"{s['calls']:,}", f"{pc:.2f}" if pc else "",
                f"{per_call(s, 'prompt_tokens'):.0f}" if s["calls"] else "",
                f"{s['cached_share']:.0%}" if s.get("cached_share") is not None else "n/a",
                f"{per_call(s, 'generated_tokens'):.1f}" if s["calls"] else "", ratio]) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the earlier commit")
    ap.add_argument("--spec", default="experiments/quickstart.yaml", help="spec path inside each tree")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                    help="spec override for both sides, as `thinktrace compile --set` (repeatable)")
    ap.add_argument("--also", action="append", default=[], metavar="FIELD=VALUE",
                    help="run a third side: this checkout with these overrides too (repeatable), e.g. a setting that "
                         "is off by default")
    ap.add_argument("--json", help="write every number here")
    ap.add_argument("--markdown", help="write the table here")
    ap.add_argument("--keep", help="folder for the run folders (default: a temporary one)")
    ap.add_argument("--render-only", action="store_true",
                    help="run nothing: read the run folders an earlier invocation left in --keep")
    args = ap.parse_args()
    if args.render_only and not args.keep:
        ap.error("--render-only reads the run folders of --keep")

    work = (Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="thinktrace-commits-bench-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    base_tree = work / "base-tree"
    plan = [(args.base, base_tree, args.sets, "base"), ("head", ROOT, args.sets, "head")]
    if args.also:
        plan.append(("head with " + ", ".join(args.also), ROOT, args.sets + args.also, "head-also"))
    measured_path = work / "measured.json"  # wall times and the conditions, as measured (for --render-only)
    measured: dict = {"wall_s": {}, "conditions": None}
    sides = []
    if args.render_only:
        measured = json.loads(measured_path.read_text(encoding="utf-8"))
        sides = [(name, side_stats(work / folder)) for name, _, _, folder in plan]
    else:
        if not base_tree.exists():
            worktree(args.base, base_tree)
        try:
            for name, tree, sets, folder in plan:
                if tree == ROOT and measured["conditions"] is None:  # the commit the head sides load
                    measured["conditions"] = conditions(str(ROOT / args.spec), args.sets)
                measured["wall_s"][name] = round(run_side(tree, args.spec, sets, work / folder), 1)
                sides.append((name, side_stats(work / folder)))
                measured_path.write_text(json.dumps(measured), encoding="utf-8")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, capture_output=True)
    wall = measured["wall_s"]
    same = all(side["splits"] == sides[0][1]["splits"] for _, side in sides)
    text = table(sides)
    summary = ("Whole runs (process start to end, in this order): "
               + "; ".join(f"{name} {seconds:.0f} s" for name, seconds in wall.items())
               + f". Same items in every split: {'yes' if same else 'NO'}.")
    result = {"base": args.base, "spec": args.spec, "sets": args.sets, "also": args.also, "wall_s": wall,
              "same_items": same, "sides": [{"name": name, **side} for name, side in sides],
              "conditions": measured["conditions"]}
    print(text + "\n\n" + summary)
    if not same:
        print("the sides split the data differently: their per-call times are not of the same items", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(f"{text}\n\n{summary} {result['conditions']}\n", encoding="utf-8")


if __name__ == "__main__":
    main()
