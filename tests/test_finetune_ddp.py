"""Fine-tuning across processes on CPUs (DDP over gloo), started the way compile starts it (finetune.launcher,
accelerate's own launcher as a subprocess): both ranks train on different rows, rank 0 alone writes one adapter
and one log, the shared-prefix loss runs inside DDP's forward (so gradients are all-reduced), and the loss curve
and adapter equal a one-process run with the same effective batch within a stated tolerance."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest
from support import read_jsonl
from support.tiny_model import make_rows, tiny_cfg

pytestmark = pytest.mark.slow

#: one-process vs two-process: same rows per optimizer step, same initialization; only the order of float sums
#: differs (gradient all-reduce, per-rank loss sums), so losses agree to float32 rounding.
LOSS_RTOL = 1e-4
ADAPTER_ATOL = 1e-5  # |difference| of LoRA weights after all steps, relative to the largest weight

SITECUSTOMIZE = textwrap.dedent("""
    # Installed only for this test: records, in every training process, the rows each shared-prefix batch held
    # (and with PROBE_SLOW, sleeps that long per batch: time to kill a run between two checkpoints).
    import os
    import time
    if os.environ.get("PROBE_OUT") and os.environ.get("RANK") is not None:
        import json
        import thinktrace.finetune.loss as ft
        from torch.nn.parallel import DistributedDataParallel as DDP

        original = ft.shared_prefix_loss

        def spy(model, input_ids, attention_mask, labels, *a, **kw):
            out = original(model, input_ids, attention_mask, labels, *a, **kw)
            time.sleep(float(os.environ.get("PROBE_SLOW") or 0))
            with open(os.path.join(os.environ["PROBE_OUT"], f"pid{os.environ['RANK']}"), "w") as f:
                f.write(str(os.getpid()))
            rows = [ids[: int(m.sum())] for ids, m in zip(input_ids.tolist(), attention_mask)]
            with open(os.path.join(os.environ["PROBE_OUT"], f"rank{os.environ['RANK']}.jsonl"), "a") as f:
                f.write(json.dumps({"ddp": isinstance(model, DDP), "shared": out is not None, "rows": rows}) + "\\n")
            return out

        ft.shared_prefix_loss = spy
""")



def single_process_run(cfg, rows, out):
    """The reference: one process, the effective batch in one pass; records each batch's rows."""
    import thinktrace.finetune.loss as ft
    from thinktrace.finetune import train_adapter

    seen, original = [], ft.shared_prefix_loss

    def spy(model, input_ids, attention_mask, labels, *a, **kw):
        out_ = original(model, input_ids, attention_mask, labels, *a, **kw)
        seen.append([ids[: int(m.sum())] for ids, m in zip(input_ids.tolist(), attention_mask)])
        return out_

    ft.shared_prefix_loss = spy
    try:
        return train_adapter(cfg, rows, out, seed=5, name="trace-sft", progress=False), seen
    finally:
        ft.shared_prefix_loss = original


ROWS = 16
# lr 5e-3: large enough that a missing gradient all-reduce shows in the losses within 8 steps (measured: up to 6e-3)
COMMON = dict(epochs=2, save_steps=2, num_threads=1, device="cpu", learning_rate=5e-3,
              lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]})


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    """One process, batch 4: the effective batch of two processes with batch 2 each."""
    out = tmp_path_factory.mktemp("one")
    t0 = time.perf_counter()
    result, batches = single_process_run(tiny_cfg(tiny_model_dir, batch_size=4, **COMMON), make_rows(ROWS), out)
    print(f"one process: {time.perf_counter() - t0:.1f} s")
    return result, batches, read_jsonl(out / "train_log.jsonl")


def two_process_job(tiny_model_dir, tmp_path, monkeypatch):
    from thinktrace.finetune.launch import write_job

    cfg = tiny_cfg(tiny_model_dir, batch_size=2, launcher={"kind": "accelerate", "num_processes": 2}, **COMMON)
    run = tmp_path / "run"
    run.mkdir()
    (run / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in make_rows(ROWS)))
    write_job(run, "trace-sft", cfg, "sft.jsonl", seed=5)
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", f"{probe}:{Path(__file__).parent}")
    monkeypatch.setenv("PROBE_OUT", str(probe))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return cfg, run, probe


def test_two_processes_match_one_process(tiny_model_dir, tmp_path, monkeypatch, reference):
    import torch
    from safetensors.torch import load_file

    from thinktrace.finetune.launch import launch

    ref, ref_batches, log_one = reference
    two_cfg, run, probe = two_process_job(tiny_model_dir, tmp_path, monkeypatch)
    t0 = time.perf_counter()
    result = launch(two_cfg, run, "trace-sft")
    print(f"two processes (launcher included): {time.perf_counter() - t0:.1f} s")

    # rank 0 alone wrote: one adapter, one log with each step once, the result says two processes
    out = run / "finetune" / "trace-sft"
    assert result["processes"] == 2 and result["steps"] == ref["steps"] == 8
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "fingerprint.json", "job.json", "loss.png",
                                                     "result.json", "train_log.jsonl"]
    assert json.loads((out / "adapter" / "thinktrace_training.json").read_text())["processes"] == 2
    log_two = read_jsonl(out / "train_log.jsonl")
    assert [r["step"] for r in log_two] == [r["step"] for r in log_one] == list(range(1, 9))

    # both ranks trained, through DDP's forward, on different rows; together they are the one-process batch
    ranks = [read_jsonl(probe / f"rank{r}.jsonl") for r in (0, 1)]
    assert all(len(b) == 8 and all(x["ddp"] and x["shared"] for x in b) for b in ranks)
    assert result["shared_prefix"] == {"reason": None, "batches": 8, "other_batches": 0}
    for step, (a, b, whole) in enumerate(zip(ranks[0], ranks[1], ref_batches)):
        assert not {tuple(r) for r in a["rows"]} & {tuple(r) for r in b["rows"]}, f"step {step}: ranks share rows"
        assert sorted(a["rows"] + b["rows"]) == sorted(whole), f"step {step}: not the one-process batch"

    # same loss curve and same adapter (gradients were all-reduced: without it rank 0 learns from half the rows)
    losses_one, losses_two = [r["loss"] for r in log_one], [r["loss"] for r in log_two]
    print("loss one process:", losses_one)
    print("loss two processes:", losses_two)
    assert losses_two == pytest.approx(losses_one, rel=LOSS_RTOL)
    a = load_file(str(Path(ref["adapter_dir"]) / "adapter_model.safetensors"))
    b = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    scale = max(float(t.abs().max()) for t in a.values())
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"adapter max |diff| {worst:.2e} (largest weight {scale:.2e})")
    assert a.keys() == b.keys() and worst <= ADAPTER_ATOL * scale
    assert torch.get_num_threads() >= 1


COMPILE = """
import json, sys
from thinktrace.finetune import FinetuneConfig
from thinktrace.finetune.launch import launch
job = json.load(open(sys.argv[1]))
launch(FinetuneConfig.model_validate(job["finetune"]), sys.argv[2], "trace-sft")
"""


def test_two_processes_killed_with_sigkill_resume(tiny_model_dir, tmp_path, monkeypatch, reference):
    """kill -9 of the process that started the launcher (as when a compile is killed) after a checkpoint: the
    launcher and both workers stop; launching again resumes from the checkpoint (rank 0 trimmed the log, every
    rank restored its RNG state) and ends where an uninterrupted run ends."""
    import os
    import signal
    import subprocess
    import sys

    from thinktrace.finetune.launch import launch
    from thinktrace.finetune.train import complete_checkpoints

    _, _, log_one = reference
    cfg, run, probe = two_process_job(tiny_model_dir, tmp_path, monkeypatch)
    out = run / "finetune" / "trace-sft"
    monkeypatch.setenv("PROBE_SLOW", "0.5")
    proc = subprocess.Popen([sys.executable, "-c", COMPILE, str(out / "job.json"), str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not complete_checkpoints(out / "checkpoints") and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"training ended early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert complete_checkpoints(out / "checkpoints")
    workers = [int((probe / f"pid{r}").read_text()) for r in (0, 1)]
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "training processes outlived the killed compile"
    assert not (out / "result.json").exists()

    monkeypatch.delenv("PROBE_SLOW")
    result = launch(cfg, run, "trace-sft")
    assert result["resumed_from"] and result["steps"] == 8 and result["processes"] == 2
    log = read_jsonl(out / "train_log.jsonl")
    assert [r["step"] for r in log] == list(range(1, 9))  # steps after the checkpoint logged once
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in log_one], rel=LOSS_RTOL)


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
