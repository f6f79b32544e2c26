"""Fine-tuning placement and launching, without the hardware: the device / precision choice as a pure function of
mocked capabilities, the spec fields and their errors, the launcher command lines, the entry point's errors, the
shared-prefix loss's step-aside rule and the step plan across processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from thinktrace.errors import SpecError, ThinktraceError
from thinktrace.finetune import FinetuneConfig, plan_steps
from thinktrace.finetune import device
from thinktrace.finetune.device import Capabilities, choose, detect
from thinktrace.finetune.launch import launch, launcher_command, main, write_job
from thinktrace.finetune.loss import step_aside_reason

CPU = Capabilities()
AMPERE = Capabilities(cuda=True, cuda_bf16=True)
VOLTA = Capabilities(cuda=True, cuda_bf16=False)
MAC = Capabilities(mps=True)


@pytest.mark.parametrize("device, precision, caps, want", [
    ("auto", "auto", CPU, ("cpu", "fp32", "float32")),  # today's behaviour on a CPU machine
    ("auto", "auto", AMPERE, ("cuda", "bf16", "bfloat16")),
    ("auto", "auto", VOLTA, ("cuda", "fp16", "float16")),
    ("auto", "auto", MAC, ("mps", "fp32", "float32")),
    ("cpu", "auto", AMPERE, ("cpu", "fp32", "float32")),  # a GPU present, the CPU asked for
    ("cpu", "bf16", Capabilities(cpu_bf16=True), ("cpu", "bf16", "bfloat16")),
    ("cuda", "fp32", AMPERE, ("cuda", "fp32", "float32")),
    ("cuda", "fp16", AMPERE, ("cuda", "fp16", "float16")),
    ("mps", "fp16", MAC, ("mps", "fp16", "float16")),
])
def test_device_and_precision_choice(device, precision, caps, want):
    p = choose(device, precision, caps)
    assert (p.device, p.precision, p.dtype) == want
    assert p.trainer_args() == {"use_cpu": want[0] == "cpu", "bf16": want[1] == "bf16", "fp16": want[1] == "fp16"}
    assert want[0] in p.reason


@pytest.mark.parametrize("device, precision, caps, field, words", [
    ("cuda", "auto", CPU, "finetune.device", "no CUDA device"),
    ("cuda", "auto", MAC, "finetune.device", "accelerators seen: mps"),
    ("mps", "auto", AMPERE, "finetune.device", "no MPS device"),
    ("auto", "bf16", VOLTA, "finetune.precision", "bf16 is not native"),
    ("mps", "bf16", MAC, "finetune.precision", "bf16 is not native"),
    ("cpu", "bf16", CPU, "finetune.precision", "bf16 is not native on this CPU"),
    ("auto", "bf16", CPU, "finetune.precision", "use fp32 or auto"),
    ("cpu", "fp16", AMPERE, "finetune.precision", "needs an accelerator"),
    ("tpu", "auto", CPU, "finetune.device", "allowed: auto, cpu, cuda, mps"),
    ("cpu", "int8", CPU, "finetune.precision", "allowed: auto, fp32, bf16, fp16"),
])
def test_impossible_choices_name_the_field(device, precision, caps, field, words):
    with pytest.raises(SpecError) as err:
        choose(device, precision, caps)
    assert err.value.field == field and words in str(err.value)


def test_detect_reads_torch(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(device, "cpu_native_bf16", lambda: False)  # the machine's own CPU does not decide the test
    assert detect() == VOLTA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert detect() == CPU
    monkeypatch.setattr(device, "cpu_native_bf16", lambda: True)
    assert detect() == Capabilities(cpu_bf16=True)


def test_spec_fields_defaults_and_errors():
    cfg = FinetuneConfig()
    assert (cfg.device, cfg.precision, cfg.gradient_checkpointing, cfg.launcher.kind,
            cfg.launcher.num_processes) == ("auto", "auto", False, "inline", 1)
    for name, field in type(cfg.launcher).model_fields.items():
        assert field.description, name
    bad = [({"device": "gpu"}, "device", "'auto', 'cpu', 'cuda' or 'mps'"),
           ({"precision": "half"}, "precision", "'auto', 'fp32', 'bf16' or 'fp16'"),
           ({"launcher": {"num_processes": 2}}, "launcher", "needs a launcher"),
           ({"launcher": {"kind": "torchrun", "config_file": "a.yaml"}}, "launcher", "accelerate config"),
           ({"launcher": {"kind": "slurm"}}, "launcher.kind", "'inline', 'accelerate' or 'torchrun'"),
           ({"launcher": {"kind": "torchrun", "num_processes": 0}}, "launcher.num_processes", "greater than or equal")]
    for raw, where, words in bad:
        with pytest.raises(ValidationError) as err:
            FinetuneConfig(**raw)
        e = err.value.errors()[0]
        assert ".".join(str(p) for p in e["loc"]).startswith(where) and words in e["msg"], (raw, e)


def test_plan_steps_across_processes():
    cfg = FinetuneConfig(batch_size=2, launcher={"kind": "torchrun", "num_processes": 2})
    assert plan_steps(cfg, 16) == 4 == plan_steps(FinetuneConfig(batch_size=4), 16)  # same effective batch
    assert plan_steps(cfg, 18) == 5  # 9 batches over 2 processes: 5 each (accelerate evens them out)
    assert plan_steps(cfg, 16, processes=1) == 8


def test_launcher_command_lines(tmp_path):
    acc = FinetuneConfig(launcher={"kind": "accelerate", "num_processes": 2})
    cmd = launcher_command(acc, tmp_path, "trace-sft", cpu=True, python="py")
    assert cmd[:5] == ["py", "-m", "accelerate.commands.launch", "--num_processes", "2"]
    # on CPUs accelerate's --cpu would start one process: its torch.distributed launcher starts two (gloo)
    assert "--multi_gpu" in cmd and "--cpu" not in cmd and cmd[cmd.index("--main_process_port") + 1] == "0"
    assert cmd[-6:] == ["-m", "thinktrace.finetune", str(tmp_path), "--adapter", "trace-sft", "--no-progress"]
    one = launcher_command(FinetuneConfig(launcher={"kind": "accelerate"}), tmp_path, "x", cpu=True, python="py")
    assert "--cpu" in one and "--multi_gpu" not in one
    fsdp = FinetuneConfig(launcher={"kind": "accelerate", "num_processes": 4, "config_file": "fsdp.yaml",
                                    "args": ["--main_process_port", "29600"]})
    cmd = launcher_command(fsdp, tmp_path, "x", cpu=False, python="py")
    assert cmd[cmd.index("--config_file") + 1] == "fsdp.yaml" and "--multi_gpu" not in cmd
    assert cmd.count("--main_process_port") == 1 and cmd.index("29600") < cmd.index("thinktrace.finetune")
    tr = FinetuneConfig(launcher={"kind": "torchrun", "num_processes": 3, "args": ["--max_restarts", "0"]})
    assert launcher_command(tr, tmp_path, "x", cpu=True, python="py", target=["probe.py"]) == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "3", "--max_restarts", "0",
        "probe.py"]


def test_launch_checks_before_starting_processes(tmp_path):
    cfg = FinetuneConfig(launcher={"kind": "accelerate", "config_file": str(tmp_path / "none.yaml")})
    with pytest.raises(ThinktraceError, match="config_file.*does not exist"):
        launch(cfg, tmp_path, "trace-sft")
    if not detect().cuda:
        with pytest.raises(SpecError, match="finetune.device: cuda was asked for"):
            launch(FinetuneConfig(device="cuda", launcher={"kind": "torchrun"}), tmp_path, "trace-sft")


def test_launcher_failure_says_how_to_resume(tmp_path, monkeypatch):
    import subprocess

    class Done:
        returncode = 1

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: Done())
    with pytest.raises(ThinktraceError, match="exited with code 1.*to resume run: .*thinktrace.finetune"):
        launch(FinetuneConfig(device="cpu", launcher={"kind": "torchrun", "num_processes": 2}), tmp_path, "x")


def test_entry_point_errors_name_the_jobs(tmp_path, capsys):
    write_job(tmp_path, "trace-sft", FinetuneConfig(), "sft.jsonl", seed=1)
    job = json.loads((tmp_path / "finetune" / "trace-sft" / "job.json").read_text())
    assert job["seed"] == 1 and job["rows"] == "sft.jsonl" and job["finetune"]["launcher"]["kind"] == "inline"
    assert main([str(tmp_path), "--adapter", "label-sft"]) == 2
    assert "no fine-tuning job for adapter 'label-sft'" in capsys.readouterr().err
    job["finetune"]["device"] = "gpu"
    (tmp_path / "finetune" / "trace-sft" / "job.json").write_text(json.dumps(job))
    assert main([str(tmp_path), "--adapter", "trace-sft"]) == 2
    assert "job.json: finetune:" in capsys.readouterr().err


def test_entry_point_runs_as_a_module(tmp_path):
    import subprocess

    out = subprocess.run([sys.executable, "-m", "thinktrace.finetune", "--help"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0 and "--adapter" in out.stdout


@pytest.mark.parametrize("enabled, ckpt, kind, words", [
    (True, False, "NO", None), (True, False, "MULTI_CPU", None), (True, False, "MULTI_GPU", None),
    (False, False, "NO", "off in the spec"), (True, True, "MULTI_GPU", "gradient checkpointing"),
    (True, False, "FSDP", "under FSDP"), (True, False, "DEEPSPEED", "under DEEPSPEED"),
])
def test_shared_prefix_steps_aside_with_a_reason(enabled, ckpt, kind, words):
    reason = step_aside_reason(enabled, ckpt, kind)
    assert (reason is None) if words is None else words in reason


def test_fingerprint_of_a_one_process_fp32_run_is_unchanged():
    """Run folders trained before these fields existed still resume: the new fields do not enter it."""
    from thinktrace.finetune.train import _fingerprint

    rows = [{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}]
    fp = _fingerprint(FinetuneConfig(), rows, 0)
    assert not {"device", "precision", "gradient_checkpointing", "launcher", "base_dtype",
                "processes"} & set(fp["config"])
    other = _fingerprint(FinetuneConfig(device="cpu", launcher={"kind": "torchrun"}), rows, 0)
    assert other == fp
    assert _fingerprint(FinetuneConfig(), rows, 0, "bfloat16", 2)["config"] == {
        **fp["config"], "base_dtype": "bfloat16", "processes": 2}
