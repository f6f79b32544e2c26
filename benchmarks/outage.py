"""The outage scenario end to end, on real processes: a rater behind llama.cpp's OpenAI-compatible server
(`python -m thinktrace.serve`, Qwen2.5-Coder-1.5B by default) rates N test items of the VADER lexicon; the server is killed after
about a third of them, the compile must stop fast with exit 3 and a resume command; the server is started again
on the same port and the run resumed; the resumed run must end complete with every item rated once.

    python benchmarks/outage.py [--items 60] [--kill-after 20] [--port 8031] [--model smollm2-135m] [--keep DIR]

Prints the counts before and after, the seconds from the kill to the compile's exit, and the exit codes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def serve(port: int, model: str) -> subprocess.Popen:
    proc = subprocess.Popen([PY, "-m", "thinktrace.serve", "--model", model, "--port", str(port),
                             "--slots", "4", "--threads", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=ROOT)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the server exited at start")
            time.sleep(0.2)
    raise SystemExit("the server did not come up")


def spec(port: int, items: int, out_dir: Path, model: str) -> dict:
    quick = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())
    data = {**quick["data"], "limit": None, "split": {"train": 0.0, "dev": 0.0, "test": 1.0}}
    data["limit"] = items
    return {"name": "outage", "seed": 0, "data": data, "codebook": quick["codebook"],
            "models": {"raters": [{"name": "remote", "provider": "openai", "model": model,
                                   "api_base": f"http://127.0.0.1:{port}/v1", "api_key_env": "OUTAGE_KEY",
                                   "cache": False, "max_tokens": 64, "num_threads": 4}]},
            "sampling": {"enabled": False}, "evaluate": {"bootstrap": 200}, "output_dir": str(out_dir)}


def predictions(run: Path) -> list[dict]:
    path = run / "predictions.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")] if path.exists() else []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=60)
    ap.add_argument("--kill-after", type=int, default=20)
    ap.add_argument("--port", type=int, default=8031)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b", help="embedded model the server runs")
    ap.add_argument("--keep", metavar="DIR", help="write the run here (kept) instead of a temporary folder")
    args = ap.parse_args()
    env = {**os.environ, "OUTAGE_KEY": "none"}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.keep or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        spec_path = tmp / "outage.yaml"
        spec_path.write_text(yaml.safe_dump(spec(args.port, args.items, tmp / "runs", args.model)))
        run = tmp / "run"
        server = serve(args.port, args.model)
        compile_ = subprocess.Popen([PY, "-m", "thinktrace.compile", str(spec_path), "--out", str(run)], env=env,
                                    cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while len(predictions(run)) < args.kill_after and compile_.poll() is None:
            time.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        server.wait()
        killed = time.monotonic()
        _, err = compile_.communicate(timeout=600)
        stop_s = time.monotonic() - killed
        before = predictions(run)
        print(f"first run: exit {compile_.returncode}, stopped {stop_s:.2f} s after the server was killed")
        print("  " + next((line for line in err.splitlines() if line.startswith("error:")), "(no error line)"))
        print(f"  journal: {sum(1 for r in before if not r['error'])} answered, "
              f"{Counter(r['error_kind'] for r in before if r['error'])} failed, of {args.items} items")
        report = (run / "report.md").read_text().splitlines()
        print(f"  report.md line 3: {report[2][:100]}")
        server = serve(args.port, args.model)
        try:
            res = subprocess.run([PY, "-m", "thinktrace.compile", str(spec_path), "--resume", str(run)], env=env,
                                 cwd=ROOT, capture_output=True, text=True, timeout=1200)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait()
        after = predictions(run)
        answered = Counter(r["item_id"] for r in after if not r["error"])
        metrics = json.loads((run / "metrics.json").read_text())
        rater = metrics["splits"]["test"]["raters"]["remote"]
        print(f"resume: exit {res.returncode}; status {metrics['status']['state']}; journal {len(after)} records, "
              f"{len(answered)} items answered, answered twice: {sum(1 for n in answered.values() if n > 1)}")
        print(f"  calls: {metrics['calls']['stages']['evaluate']}")
        print(f"  alpha {rater['alpha']['value']} on {rater['n_items']} items, {rater['n_unparsed']} unparsed")


if __name__ == "__main__":
    main()
