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

from test_finetune import make_rows, tiny_cfg

pytestmark = pytest.mark.slow

#: one-process vs two-process: same rows per optimizer step, same initialization; only the order of float sums
#: differs (gradient all-reduce, per-rank loss sums), so losses agree to float32 rounding.
LOSS_RTOL = 1e-4
ADAPTER_ATOL = 1e-5  # |difference| of LoRA weights after all steps, relative to the largest weight

SITECUSTOMIZE = textwrap.dedent("""
    # Installed only for this test: records, in every training process, the rows each shared-prefix batch held.
    import os
    if os.environ.get("PROBE_OUT") and os.environ.get("RANK") is not None:
        import json
        import thinktrace.finetune.loss as ft
        from torch.nn.parallel import DistributedDataParallel as DDP

        original = ft.shared_prefix_loss

        def spy(model, input_ids, attention_mask, labels, *a, **kw):
            out = original(model, input_ids, attention_mask, labels, *a, **kw)
            rows = [ids[: int(m.sum())] for ids, m in zip(input_ids.tolist(), attention_mask)]
            with open(os.path.join(os.environ["PROBE_OUT"], f"rank{os.environ['RANK']}.jsonl"), "a") as f:
                f.write(json.dumps({"ddp": isinstance(model, DDP), "shared": out is not None, "rows": rows}) + "\\n")
            return out

        ft.shared_prefix_loss = spy
""")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    from lm.conftest import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-llama-ddp"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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


def test_two_processes_match_one_process(tiny_model_dir, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from thinktrace.finetune.launch import launch, write_job

    rows = make_rows(16)
    common = dict(epochs=2, save_steps=4, num_threads=1, device="cpu", learning_rate=5e-3, lora={"r": 4, "alpha": 8, "dropout": 0.0,
                  "target_modules": ["q_proj", "v_proj"]})
    one_cfg = tiny_cfg(tiny_model_dir, batch_size=4, **common)
    two_cfg = tiny_cfg(tiny_model_dir, batch_size=2, launcher={"kind": "accelerate", "num_processes": 2}, **common)

    t0 = time.perf_counter()
    ref, ref_batches = single_process_run(one_cfg, rows, tmp_path / "one")
    t_one = time.perf_counter() - t0

    run = tmp_path / "run"
    run.mkdir()
    (run / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_job(run, "trace-sft", two_cfg, "sft.jsonl", seed=5)
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", f"{probe}:{Path(__file__).parent}")
    monkeypatch.setenv("PROBE_OUT", str(probe))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    result = launch(two_cfg, run, "trace-sft")
    t_two = time.perf_counter() - t0
    print(f"one process {t_one:.1f} s, two processes (launcher included) {t_two:.1f} s")

    # rank 0 alone wrote: one adapter, one log with each step once, the result says two processes
    out = run / "finetune" / "trace-sft"
    assert result["processes"] == 2 and result["steps"] == ref["steps"] == 8
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "fingerprint.json", "job.json", "loss.png",
                                                     "result.json", "train_log.jsonl"]
    assert json.loads((out / "adapter" / "thinktrace_training.json").read_text())["processes"] == 2
    log_two, log_one = read_jsonl(out / "train_log.jsonl"), read_jsonl(tmp_path / "one" / "train_log.jsonl")
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
