"""benchmarks/commits.py: a stage's calls are its journal's units (a retried call counts once), per-call ratios."""

from __future__ import annotations

import json
from pathlib import Path

from support import benchmark


def bench():
    return benchmark("commits")


def run_folder(path: Path, evaluate_s: float, predictions: list[dict], test_ids: list[str]) -> Path:
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"timing": {"traces": 10.0, "evaluate": evaluate_s},
                                                   "variants": [{"name": "a"}]}))
    (path / "data.json").write_text(json.dumps({"splits": {"train": ["t1"], "dev": [], "test": test_ids}}))
    (path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in predictions))
    return path


def prediction(item: str, rater: str = "a", prompt: int = 100, completion: int = 10, error=None) -> dict:
    return {"split": "test", "rater": rater, "item_id": item, "tokens": {"prompt": prompt, "completion": completion},
            "error": error}


def test_a_retried_call_counts_once_and_the_head_side_gets_the_per_call_ratio(tmp_path):
    b = bench()
    base = run_folder(tmp_path / "base", 40.0, [prediction("x", error="timeout"), prediction("x"), prediction("y")],
                      ["x", "y"])
    head = run_folder(tmp_path / "head", 10.0, [prediction("x", prompt=50), prediction("y", prompt=50),
                                                prediction("x", rater="b"), prediction("y", rater="b")], ["y", "x"])
    bs, hs = b.side_stats(base), b.side_stats(head)
    assert bs["stages"]["evaluate"]["calls"] == 2        # x's failed first record is not a second call
    assert hs["stages"]["evaluate"]["calls"] == 4
    assert bs["splits"] == hs["splits"]                  # the same items, whatever their order
    assert "traces" in bs["stages"] and bs["stages"]["traces"]["calls"] == 0   # no attempts journal: no calls
    text = b.table([("base0", bs), ("head", hs)])
    row = next(line for line in text.splitlines() if line.startswith("| evaluate | head"))
    assert "| 2.50 |" in row                             # 10 s / 4 calls
    assert row.rstrip(" |").endswith("0.12x")            # 2.5 s vs 20 s per call
    assert "| 75 |" in row                               # prompt tokens per call: (50 + 50 + 100 + 100) / 4


def test_different_splits_are_told_apart(tmp_path):
    b = bench()
    base = b.side_stats(run_folder(tmp_path / "base", 1.0, [prediction("x")], ["x"]))
    head = b.side_stats(run_folder(tmp_path / "head", 1.0, [prediction("z")], ["z"]))
    assert base["splits"] != head["splits"]
