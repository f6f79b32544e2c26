"""What each stage of a compile run costs, and how close its LM work comes to llama.cpp's own speed.

    python benchmarks/pipeline.py [--spec experiments/quickstart.yaml] [--set FIELD=VALUE ...] [--json out.json]
                                  [--no-replay] [--markdown table.md]

1. **The run**: a child process compiles the spec (default: the quickstart, today's splits and variants) into a
   fresh run folder with a fresh DSPy cache (nothing is served from an earlier run), recording every request the
   local models answer (`thinktrace.lm.llamacpp.record_requests`: the payload sent to llama.cpp, the stage, the
   server's model, adapters and settings, start and end). Per stage, from the run's metrics.json (`stages`): wall
   time, peak RSS of the compile process during the stage and of the largest child it ran (fine-tuning), local
   calls, prompt tokens, the share served from llama.cpp's prompt cache, generated tokens.
2. **The limit** (unless `--no-replay`): a second child process sends each stage's recorded requests, byte for
   byte (same token ids, max_tokens, grammar, seeds, LoRA selection), straight to ``xllamacpp.Server`` built with
   the same parameters (model, adapters, slots, context, threads), from as many threads as the run had requests in
   flight at most, in the run's order; model loading is excluded. Its wall time is what the same work costs here
   without thinktrace, DSPy or the parsing around it; `ratio` = stage wall time / replay wall time. The replay's
   peak RSS is reported too.

Ratios are measured in one invocation on the same machine; absolute seconds depend on the cores. Offline; needs
the embedded models (`thinktrace install-assets`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "experiments" / "quickstart.yaml"


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- child 1: the run, its requests recorded ---------------------------------------------------------------------
def run_child(spec: str, sets: list[str], out: Path, requests_path: Path) -> None:
    import thinktrace
    from thinktrace.lm import llamacpp
    from thinktrace.run.pipeline import Pipeline

    lock = threading.Lock()
    stage = {"name": "setup"}
    sink = requests_path.open("w", encoding="utf-8")

    def recorder(server, payload, answer, started, ended):
        line = json.dumps({
            "stage": stage["name"], "gguf": str(server.served.gguf), "tokenizer": str(server.served.tokenizer),
            "checkpoint": str(server.served.checkpoint) if server.served.checkpoint else None,
            "adapters": [str(a) for a in server.adapters], "settings": server.settings.model_dump(mode="json"),
            "payload": payload, "started": started, "ended": ended,
            "ok": isinstance(answer, dict) and not answer.get("error")})
        with lock:
            sink.write(line + "\n")

    original = Pipeline.run_stage

    def run_stage(self, name, fn):
        stage["name"] = name
        try:
            return original(self, name, fn)
        finally:
            stage["name"] = "after " + name
            sink.flush()

    Pipeline.run_stage = run_stage
    llamacpp.record_requests(recorder)
    try:
        run = thinktrace.compile(spec, out=str(out), overrides=sets)
    finally:
        llamacpp.record_requests(None)
        sink.close()
    print(json.dumps({"status": run.status, "rss_mib": rss_mib(),
                      "children_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


# -- child 2: the same requests straight to xllamacpp ------------------------------------------------------------
def max_in_flight(rows: list[dict]) -> int:
    """The most requests the run had in flight at once (from their start and end times)."""
    events = sorted([(r["started"], 1) for r in rows] + [(r["ended"], -1) for r in rows])
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return max(1, best)


def replay_child(requests_path: Path) -> None:
    import xllamacpp

    from thinktrace.lm.config import LlamaSettings
    from thinktrace.lm.llamacpp import server_params
    from thinktrace.lm.weights import Served

    by_stage: dict[str, dict[tuple, list[dict]]] = defaultdict(lambda: defaultdict(list))
    with requests_path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            key = (row["gguf"], row["tokenizer"], row["checkpoint"], tuple(row["adapters"]),
                   json.dumps(row["settings"], sort_keys=True))
            by_stage[row["stage"]][key].append(row)
    result = {}
    for stage, servers in by_stage.items():
        wall = load = 0.0
        calls = 0
        for (gguf, tokenizer, checkpoint, adapters, settings), rows in servers.items():
            served = Served(Path(gguf), Path(tokenizer), Path(checkpoint) if checkpoint else None)
            t0 = time.perf_counter()
            server = xllamacpp.Server(server_params(served, LlamaSettings(**json.loads(settings)), adapters))
            load += time.perf_counter() - t0
            rows.sort(key=lambda r: r["started"])
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_in_flight(rows)) as pool:
                answers = list(pool.map(lambda r, s=server: s.handle_completions(r["payload"]), rows))
            wall += time.perf_counter() - t0
            calls += len(rows)
            bad = sum(1 for a in answers if not isinstance(a, dict) or a.get("error"))
            if bad:
                print(f"replay: {bad} of {len(rows)} requests of {stage} failed", file=sys.stderr)
            del server
        result[stage] = {"replay_s": round(wall, 3), "replay_load_s": round(load, 3), "replay_calls": calls}
    print(json.dumps({"stages": result, "rss_mib": rss_mib()}))


# -- parent ------------------------------------------------------------------------------------------------------
def child(args: list[str], env: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"benchmark child {args[0]} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict], replayed: bool) -> str:
    head = ["stage", "wall s", "model load s", "peak RSS MiB", "child peak MiB", "local calls", "prompt tokens",
            "cached", "generated"] + (["replay s", "ratio", "ratio, load excluded"] if replayed else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        load = r.get("load_seconds") or 0.0
        cells = [r["stage"], f"{r['seconds']:.1f}", f"{load:.1f}" if r["calls"] else "", f"{r['peak_rss_mib']:,.0f}",
                 f"{r['children_peak_rss_mib']:,.0f}" if r.get("children_peak_rss_mib") else "",
                 f"{r['calls']:,}", f"{r['prompt_tokens']:,}",
                 f"{r['cached_prompt_tokens'] / max(1, r['prompt_tokens']):.0%}" if r["calls"] else "",
                 f"{r['generated_tokens']:,}"]
        if replayed:
            cells += [f"{r['replay_s']:.1f}" if r.get("replay_s") else "",
                      f"{r['seconds'] / r['replay_s']:.2f}x" if r.get("replay_s") else "",
                      f"{(r['seconds'] - load) / r['replay_s']:.2f}x" if r.get("replay_s") else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def conditions(spec: str, sets=()) -> str:
    """Where and on what the numbers were measured (one sentence for the docs; benchmarks/memory.py uses it too)."""
    import platform

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=30).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=30).stdout.strip()
        commit += " with uncommitted changes" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    path = Path(spec).resolve()
    spec = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    sets = f" with {', '.join(sets)}" if sets else ""
    return (f"Measured {time.strftime('%Y-%m-%d')} at commit {commit} on {os.cpu_count()} CPU cores "
            f"({platform.machine()}, Python {platform.python_version()}), spec {spec}{sets}.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default=str(SPEC))
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                    help="spec override, as `thinktrace compile --set` (repeatable)")
    ap.add_argument("--no-replay", action="store_true", help="skip sending the requests straight to xllamacpp")
    ap.add_argument("--json", help="write every number here")
    ap.add_argument("--markdown", help="write the table here")
    ap.add_argument("--keep", help="run folder to keep (default: a temporary one)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="thinktrace-pipeline-bench-"))
    out = Path(args.keep) if args.keep else work / "run"
    requests_path = work / "requests.jsonl"
    env = {**os.environ, "DSPY_CACHEDIR": str(work / "dspy-cache")}  # nothing from an earlier run
    t0 = time.perf_counter()
    ran = child(["--child-run", args.spec, str(out), str(requests_path), *args.sets], env)
    run_wall = time.perf_counter() - t0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    stages = metrics.get("stages") or {}
    replay = {} if args.no_replay else child(["--child-replay", str(requests_path)], env)
    rows = [{"stage": name, **usage, **(replay.get("stages", {}).get(name) or {})} for name, usage in stages.items()]
    unattributed = {k: v for k, v in (replay.get("stages") or {}).items() if k not in stages}
    spec = Path(args.spec).resolve()  # as the repository names it: a published file names no local folder
    spec_name = str(spec.relative_to(ROOT)) if spec.is_relative_to(ROOT) else spec.name
    result = {"spec": spec_name, "sets": args.sets, "status": ran["status"], "run_wall_s": round(run_wall, 1),
              "run_peak_rss_mib": round(ran["rss_mib"]), "run_children_peak_rss_mib": round(ran["children_rss_mib"]),
              "replay_peak_rss_mib": round(replay["rss_mib"]) if replay else None, "stages": rows,
              "requests_outside_stages": unattributed}
    text = table(rows, bool(replay))
    summary = (f"run: {result['run_wall_s']} s wall (process start to end), status {ran['status']}; peak RSS "
               f"{result['run_peak_rss_mib']:,} MiB (compile process), {result['run_children_peak_rss_mib']:,} MiB "
               f"(largest child)" + (f"; replay peak RSS {result['replay_peak_rss_mib']:,} MiB" if replay else ""))
    result["conditions"] = conditions(args.spec, args.sets)
    print(text)
    print("\n" + summary)
    if unattributed:
        print(f"requests outside any stage: {unattributed}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(f"{text}\n\n{summary}. {result['conditions']}\n", encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-run":
        run_child(sys.argv[2], sys.argv[5:], Path(sys.argv[3]), Path(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-replay":
        replay_child(Path(sys.argv[2]))
    else:
        main()
