"""Run folders for the report / compare / browser tests: real compile runs of the toy spec (fake engine), and the
artifacts of later stages (variants, paired comparisons, fine-tuning logs, refined guideline) added on top."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from thinktrace.compile import main

from . import DATA, read_jsonl
from .specs import toy_spec, write_spec

SCRIPT = "<script>alert('x')</script>"


def hostile_csv(path: Path) -> Path:
    """The toy corpus with markup planted in every item text (it reaches traces, predictions and the report)."""
    with open(DATA / "toy_long.csv", newline="") as src, open(path, "w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        for row in reader:
            writer.writerow({**row, "text": f"{row['text']} {SCRIPT} & <b>"})
    return path


def compile_run(folder: Path, name: str, **overrides) -> Path:
    """Compile the toy spec (with `overrides`) into folder/runs/<name>; return the run folder."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = write_spec(folder, toy_spec(**overrides), f"{name}.yaml")
    out = folder / "runs" / name
    assert main([str(spec), "--out", str(out)]) == 0
    return out


def add_later_stages(run: Path, base: str = "kw") -> Path:
    """Add what the fine-tuning and guideline stages write: a trace-sft variant of `base` (its predictions are the
    baseline's with two labels changed and one unparsed), metrics variants / comparisons / inter_rater / guidelines /
    timing, finetune/<variant>/train_log.jsonl and guideline.md next to guideline.original.md."""
    metrics = json.loads((run / "metrics.json").read_text())
    labels = metrics["data"]["label_set"]
    preds = read_jsonl(run / "predictions.jsonl")
    extra = []
    test_preds = sorted((r for r in preds if r["rater"] == base and r["split"] == "test"), key=lambda r: r["item_id"])
    for n, r in enumerate(test_preds):
        r = {**r, "rater": f"{base}-sft"}
        if n in (0, 1):
            r["label"] = next(x for x in labels if x != r["human"])
        if n == 2:
            r["label"] = None
        extra.append(r)
    with open(run / "predictions.jsonl", "a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in extra)
    test = metrics["splits"]["test"]
    sft = json.loads(json.dumps(test["raters"][base]))
    sft["alpha"] = {"value": 0.51, "ci": [0.2, 0.8], "n": sft["alpha"]["n"]}
    sft["n_unparsed"] = 1
    test["raters"][f"{base}-sft"] = sft
    metrics.setdefault("variants", [{"name": base, "kind": "baseline", "rater": base, "model": "m",
                                     "adapter": None, "label_only": False}])
    metrics["variants"].append({"name": f"{base}-sft", "kind": "trace-sft", "rater": base, "model": "m",
                                "adapter": f"finetune/{base}-sft/adapter", "label_only": False})
    test["comparisons"] = [{"a": base, "b": f"{base}-sft", "diff": -0.34, "ci": [-0.6, -0.1],
                            "p_b_not_better": 0.97}]
    test["inter_rater"] = {"trace-sft": {"value": 0.7, "ci": [0.5, 0.9], "n": 10, "raters": [f"{base}-sft"]}}
    metrics["guidelines"] = {
        "optimizer": "traces", "best_id": "1-0", "kept_original": False,
        "candidates": [
            {"id": "0-0", "round": 0, "kind": "original", "parent": None, "alpha": {base: 0.6}, "mean": 0.6,
             "chars": 31, "same_as": None},
            {"id": "1-0", "round": 1, "kind": "traces", "parent": "0-0", "alpha": {base: 0.8}, "mean": 0.8,
             "chars": 90, "same_as": None},
        ],
        "writer_calls": 7,
    }
    metrics["finetune"] = {f"{base}-sft": {"base": "smollm2-135m", "rows": 15, "truncated_rows": 0, "steps": 20,
                                           "final_loss": 0.1, "total_train_seconds": 12.4}}
    # an older run's document: no schema_version, a timing written as text (upgraded on read)
    metrics.pop("schema_version", None)
    metrics["timing"] = {**(metrics.get("timing") or {}), "finetune": "12.5 s", "guidelines": 3.5}
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log = run / "finetune" / f"{base}-sft"
    log.mkdir(parents=True, exist_ok=True)
    (log / "train_log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 2.0 / s, "lr": 1e-4}) + "\n"
                                                 for s in range(1, 21)))
    (run / "guideline.original.md").write_text("Rate the sentiment of the text.\nUse the labels given.\n")
    (run / "guideline.md").write_text(f"Rate the sentiment of the text.\nPositive words {SCRIPT} mean positive.\n")
    return run
