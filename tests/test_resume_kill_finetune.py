"""kill -9 during fine-tuning inside a full compile, then resume: training continues from the last complete
checkpoint and the run ends with the same training log and the same ratings as an uninterrupted run."""

import json
import signal
import subprocess
import sys
import time

import pytest
from support import read_jsonl
from support.specs import toy_spec, write_spec

pytestmark = pytest.mark.slow  # compiles in child processes, killed and resumed: `make test-slow`



def test_kill_during_finetune_then_resume(tmp_path, tiny_model_dir):
    raw = toy_spec(**{
        "sampling.k": 2, "evaluate.bootstrap": 20, "data.limit": 24,
        "finetune": {"enabled": True, "base": str(tiny_model_dir), "max_steps": 10, "save_steps": 2, "batch_size": 2,
                     "max_length": 480, "num_threads": 1, "ablation_label_only": False,
                     "ablation_shuffled": False}})
    raw["models"]["raters"][0]["max_tokens"] = 8
    spec = write_spec(tmp_path, raw)
    cmd = lambda out, *extra: [sys.executable, "-m", "thinktrace.compile", str(spec), "--out", str(out), *extra]  # noqa: E731
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    ckpts = killed / "finetune" / "trace-sft" / "checkpoints"
    proc = subprocess.Popen(cmd(killed), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(ckpts.glob("checkpoint-*/thinktrace_complete")):
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(ckpts.glob("checkpoint-*/thinktrace_complete")), "no checkpoint before the kill"
    assert not (killed / "finetune" / "trace-sft" / "result.json").exists(), "kill came after training ended"

    subprocess.run(cmd(killed, "--resume", str(killed)), cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(cmd(clean), cwd=tmp_path, check=True, capture_output=True)
    result = json.loads((killed / "finetune" / "trace-sft" / "result.json").read_text())
    assert result["resumed_from"], "training did not resume from a checkpoint"
    log_k = read_jsonl(killed / "finetune" / "trace-sft" / "train_log.jsonl", missing_ok=True, partial_ok=True)
    log_c = read_jsonl(clean / "finetune" / "trace-sft" / "train_log.jsonl")
    assert [r["step"] for r in log_k] == [r["step"] for r in log_c]
    assert [round(r["loss"], 4) for r in log_k] == [round(r["loss"], 4) for r in log_c]
    for name in ("traces.jsonl", "sft.jsonl"):
        assert (killed / name).read_text() == (clean / name).read_text()
    labels = lambda run: sorted((p["rater"], p["item_id"], p["label"]) for p in read_jsonl(run / "predictions.jsonl"))  # noqa: E731
    assert labels(killed) == labels(clean)
