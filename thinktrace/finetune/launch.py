"""Training one adapter as its own entry point, and starting it through accelerate's or torch's launcher.

    python -m thinktrace.finetune RUN_DIR --adapter trace-sft
    accelerate launch --multi_gpu --num_processes 2 -m thinktrace.finetune RUN_DIR --adapter trace-sft
    accelerate launch --config_file fsdp.yaml -m thinktrace.finetune RUN_DIR --adapter trace-sft
    torchrun --standalone --nproc_per_node 2 -m thinktrace.finetune RUN_DIR --adapter trace-sft

The compile's finetune stage writes ``RUN_DIR/finetune/<adapter>/job.json`` (the `finetune` section, the seed and
the rows file of the run folder) and, per ``finetune.launcher``, trains in a child process of its own (`inline`) or
runs the launcher's own command line as a subprocess (glue: the launcher starts and watches the processes). The
job can be rerun by hand with any of the commands above; a finished adapter returns at once, a killed one resumes.

accelerate on CPUs: ``accelerate launch --cpu`` starts *one* process unless MPI is set up; its torch.distributed
launcher (``--multi_gpu``, the name notwithstanding) runs N CPU processes over gloo when no GPU is present.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from thinktrace.errors import ThinktraceError
from thinktrace.finetune import dist
from thinktrace.finetune.config import FinetuneConfig
from thinktrace.rundir import write_atomic

JOB = "job.json"
MODULE = "thinktrace.finetune"
_DIE_WITH_PARENT = "THINKTRACE_DIE_WITH_PARENT"


def job_dir(run_dir: Path, adapter: str) -> Path:
    return Path(run_dir) / "finetune" / adapter


def write_job(run_dir: Path, adapter: str, cfg: FinetuneConfig, rows_file: str, seed: int) -> Path:
    """The job of one adapter: what ``python -m thinktrace.finetune RUN_DIR --adapter NAME`` trains."""
    dest = job_dir(run_dir, adapter)
    dest.mkdir(parents=True, exist_ok=True)
    job = {"name": adapter, "seed": int(seed), "rows": rows_file, "finetune": cfg.model_dump(mode="json")}
    write_atomic(dest / JOB, json.dumps(job, indent=1))
    return dest / JOB


def train_job(run_dir: Path, adapter: str, progress: bool = True) -> dict:
    """Train the adapter of a job file (every process of a launcher calls this; rank 0 alone writes)."""
    from thinktrace.finetune.train import train_adapter

    run_dir = Path(run_dir)
    path = job_dir(run_dir, adapter) / JOB
    if not path.is_file():
        found = sorted(p.parent.name for p in (run_dir / "finetune").glob(f"*/{JOB}"))
        raise ThinktraceError(f"{path}: no fine-tuning job for adapter {adapter!r} in {run_dir} (jobs there: "
                              f"{', '.join(found) or 'none; the compile writes them in its finetune stage'})")
    job = json.loads(path.read_text(encoding="utf-8"))
    try:
        cfg = FinetuneConfig.model_validate(job["finetune"])
    except ValueError as err:
        raise ThinktraceError(f"{path}: finetune: {err}") from None
    rows_path = run_dir / job["rows"]
    rows = [json.loads(line) for line in rows_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return train_adapter(cfg, rows, job_dir(run_dir, adapter), seed=job["seed"], name=job["name"],
                         progress=progress)


def launcher_command(cfg: FinetuneConfig, run_dir: Path, adapter: str, *, cpu: bool,
                     target: list[str] | None = None, python: str = sys.executable) -> list[str]:
    """The launcher's command line for one adapter job (``finetune.launcher``; not for kind `inline`).

    `cpu`: training runs on the CPU (then accelerate gets its torch.distributed launcher, see the module doc).
    `target`: what each process runs (default: ``-m thinktrace.finetune RUN_DIR --adapter NAME``)."""
    la = cfg.launcher
    target = target or ["-m", MODULE, str(run_dir), "--adapter", adapter, "--no-progress"]
    if la.kind == "torchrun":
        return [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(la.num_processes),
                *la.args, *target]
    if la.kind != "accelerate":
        raise ValueError(f"launcher kind {la.kind!r} has no command line")
    cmd = [python, "-m", "accelerate.commands.launch", "--num_processes", str(la.num_processes)]
    if la.config_file:
        cmd += ["--config_file", str(Path(la.config_file).expanduser())]
    else:
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # the Trainer sets them
        if la.num_processes > 1:
            cmd += ["--multi_gpu"]  # torch.distributed's launcher: N processes (gloo on CPUs, NCCL on GPUs)
        elif cpu:
            cmd += ["--cpu"]
    if not la.config_file and not any(a.startswith("--main_process_port") for a in la.args):
        cmd += ["--main_process_port", "0"]  # a free port: runs side by side do not collide
    return [*cmd, *la.args, *target]


def launch(cfg: FinetuneConfig, run_dir: Path, adapter: str) -> dict:
    """Run the launcher for one adapter job and return the result rank 0 wrote. The launcher dies with this
    process (and takes its workers with it), so a killed compile leaves no training behind."""
    from thinktrace.finetune.device import choose, detect

    if cfg.launcher.config_file and not Path(cfg.launcher.config_file).expanduser().is_file():
        raise ThinktraceError(f"finetune.launcher.config_file: {cfg.launcher.config_file} does not exist")
    placement = choose(cfg.device, cfg.precision, detect())  # errors (no such device) here, not in N processes
    cmd = launcher_command(cfg, run_dir, adapter, cpu=placement.device == "cpu")
    env = {**os.environ, _DIE_WITH_PARENT: "1"}
    if cfg.num_threads:
        env["OMP_NUM_THREADS"] = str(cfg.num_threads)
    code = subprocess.run([sys.executable, "-c", _EXEC_DYING_WITH_PARENT, str(os.getpid()), *cmd], env=env).returncode
    result = job_dir(run_dir, adapter) / "result.json"
    if code != 0 or not result.is_file():
        raise ThinktraceError(f"finetune {adapter}: the {cfg.launcher.kind} launcher exited with code {code} (its "
                              f"output is above); completed checkpoints are kept, to resume run: {' '.join(cmd)}")
    return json.loads(result.read_text(encoding="utf-8"))


# Runs the launcher's command line with PR_SET_PDEATHSIG armed (it survives exec): SIGTERM when the compile dies,
# on which torch's launcher stops its workers (they also die with the launcher: _guard in main). Not preexec_fn,
# which is unsafe in a process with threads (the compile has LM threads).
_EXEC_DYING_WITH_PARENT = """
import os, signal, sys
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"python -m {MODULE}", description="Train one LoRA adapter of a run folder "
                                 "(alone, or in every process of accelerate launch / torchrun).")
    ap.add_argument("run_dir", help="the compile's run folder")
    ap.add_argument("--adapter", required=True, help="which adapter: trace-sft, label-sft, shuffled-trace-sft, ...")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if os.environ.get(_DIE_WITH_PARENT) == "1":
        from thinktrace._child import _guard

        _guard(os.getppid())
    try:
        result = train_job(Path(args.run_dir), args.adapter, progress=not args.no_progress)
    except ThinktraceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        _leave_group()
    if dist.is_main():
        print(json.dumps({k: result.get(k) for k in ("name", "adapter_dir", "steps", "final_loss", "device",
                                                     "base_dtype", "processes")}))
    return 0


def _leave_group() -> None:
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
