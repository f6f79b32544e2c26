"""Where fine-tuning runs and in which precision: a pure choice from the spec (`finetune.device`,
`finetune.precision`) and what the machine offers (``Capabilities``), so it is unit-tested without the hardware.

The precision is the dtype the base model's weights are loaded in, i.e. the weights the adapter is trained against
(LoRA weights stay float32, PEFT's default; with bf16/fp16 the forward pass runs under that autocast). It is
recorded with the adapter, and evaluation serves the base in the same dtype (a BF16 or F16 GGUF), so the paired
difference base vs. base+adapter measures the adapter alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from thinktrace.errors import SpecError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # precision -> torch / recorded dtype name


@dataclass(frozen=True)
class Capabilities:
    """What torch can use on this machine."""

    cuda: bool = False  #: a CUDA device is visible
    cuda_bf16: bool = False  #: it computes bfloat16 natively (Ampere or newer)
    mps: bool = False  #: Apple's Metal backend is available
    #: the CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX, through oneDNN); without it torch falls back
    #: to a scalar loop: 1 GFLOPS vs 75 in fp32, measured on a 2-core AVX2 machine
    cpu_bf16: bool = False


@dataclass(frozen=True)
class Placement:
    """The outcome: the device type, the base weights' dtype, and the trainer's mixed-precision flag."""

    device: str  #: cpu | cuda | mps
    precision: str  #: fp32 | bf16 | fp16
    reason: str  #: why, in words (logged and recorded with the adapter)

    @property
    def dtype(self) -> str:
        """torch dtype name of the base weights: float32 | bfloat16 | float16."""
        return DTYPES[self.precision]

    def trainer_args(self) -> dict:
        """The ``transformers.TrainingArguments`` fields this placement sets."""
        return {"use_cpu": self.device == "cpu", "bf16": self.precision == "bf16", "fp16": self.precision == "fp16"}


def detect() -> Capabilities:
    """This machine's capabilities, as torch sees them."""
    import torch

    cuda = bool(torch.cuda.is_available())
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return Capabilities(cuda=cuda, cuda_bf16=cuda and bool(torch.cuda.is_bf16_supported()), mps=mps,
                        cpu_bf16=cpu_native_bf16())


def cpu_native_bf16() -> bool:
    """Does this CPU multiply bf16 natively (AVX512-BF16 or AMX), as oneDNN reports it?"""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN: no native CPU bf16 either
        return False


def choose(device: str, precision: str, caps: Capabilities) -> Placement:
    """The device and precision to train with.

    device: ``auto`` takes CUDA, else MPS, else the CPU. An explicit device that is not there is an error naming
    `finetune.device` (never a silent fall-back to a device 100x slower).
    precision: ``auto`` is bf16 on a CUDA device that has it, fp16 on an older CUDA device, fp32 on the CPU (as
    before) and on MPS (its half-precision training support varies by macOS version). bf16 is refused where it is
    not native (MPS, pre-Ampere CUDA, a CPU without AVX512-BF16 or AMX); fp16 needs an accelerator (no CPU fp16
    training)."""
    if device not in DEVICES:
        raise SpecError("finetune.device", f"unknown device {device!r} (allowed: {', '.join(DEVICES)})")
    if precision not in PRECISIONS:
        raise SpecError("finetune.precision", f"unknown precision {precision!r} (allowed: {', '.join(PRECISIONS)})")
    seen = ", ".join(n for n, ok in (("cuda", caps.cuda), ("mps", caps.mps)) if ok) or "none"
    if device == "cuda" and not caps.cuda:
        raise SpecError("finetune.device", f"cuda was asked for but torch sees no CUDA device (accelerators seen: "
                        f"{seen}); use auto or cpu")
    if device == "mps" and not caps.mps:
        raise SpecError("finetune.device", f"mps was asked for but torch sees no MPS device (accelerators seen: "
                        f"{seen}); use auto or cpu")
    dev = device if device != "auto" else "cuda" if caps.cuda else "mps" if caps.mps else "cpu"
    why = f"device {dev}" + (f" (auto; accelerators seen: {seen})" if device == "auto" else "")
    if precision == "auto":
        prec = ("bf16" if caps.cuda_bf16 else "fp16") if dev == "cuda" else "fp32"
        return Placement(dev, prec, f"{why}, precision {prec} (auto)")
    if precision == "bf16" and (dev == "mps" or (dev == "cuda" and not caps.cuda_bf16)):
        raise SpecError("finetune.precision", f"bf16 is not native on this {dev} device; use fp16, fp32 or auto")
    if precision == "bf16" and dev == "cpu" and not caps.cpu_bf16:
        raise SpecError("finetune.precision", "bf16 is not native on this CPU (no AVX512-BF16 or AMX): torch would "
                        "multiply its matrices in a scalar fallback, ~75x slower than fp32 (measured); use fp32 or auto")
    if precision == "fp16" and dev == "cpu":
        raise SpecError("finetune.precision", "fp16 training needs an accelerator (cuda or mps); on the CPU use "
                        "fp32 or bf16")
    return Placement(dev, precision, f"{why}, precision {precision}")
