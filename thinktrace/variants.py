"""A variant: one rater setup evaluated against the humans (an LM, maybe with a LoRA adapter, a guideline, a
program and its answer order)."""

from __future__ import annotations

from dataclasses import dataclass, field

from thinktrace.lm.config import ModelConfig


@dataclass
class Variant:
    """One rater setup evaluated against the humans: an LM (maybe with a LoRA adapter) + a guideline + a program."""

    name: str  #: unique; the `rater` of its prediction records
    model: ModelConfig
    guideline: str
    #: baseline | prompt | trace-demos | trace-sft | trace-sft-label-first | trace-sft-multitask | label-sft |
    #: label-sft-all | shuffled-trace-sft (-label-first, -multitask: the other formats' controls) | trace-sft-common |
    #: self-trace-sft | refined-guideline | guideline-* | compiled-rater (refined guideline + trace demos) |
    #: reviewed-trace-demos | reviewed-trace-sft | reviewed-refined-guideline (`compile --reviewed`: the same, on
    #: the reviewed trace set of thinktrace.review)
    kind: str = "baseline"
    rater: str = ""  #: the configured rater it derives from
    label_only: bool = False  #: prompted without a rationale (the label-only ablation)
    compare_to: list[str] = field(default_factory=list)  #: variants it gets a paired difference against
    order: str = "rationale_first"  #: the answer's field order (a prompt variant may put the label first)
    demos: list[dict] = field(default_factory=list)  #: accepted traces shown as few-shot examples (trace-demos,
    #: compiled-rater)


def demos_name(rater: str) -> str:
    """The variant of `rater` prompted with the compiled program's demos (accepted traces as few-shot examples)."""
    return f"{rater}+demos"


def adapter_name(base: str, kind: str) -> str:
    """The variant of the fine-tuning base `base` with the LoRA adapter of `kind` (e.g. `smollm2+trace-sft`)."""
    return f"{base}+{kind}"


def guideline_name(rater: str, part: str) -> str:
    """The variant of `rater` with the synthesized guideline `part` (refined, or an ablation: rules, examples; or
    compiled: the refined guideline with the trace demos)."""
    return f"{rater}+{part}"


#: the prefix of what a reviewed resume adds (`compile --resume RUN --reviewed`): part and kind on the reviewed traces
REVIEWED = "reviewed-"


def reviewed(part: str) -> str:
    """The name part (and kind) of `part` made from the reviewed trace set: `trace-sft` -> `reviewed-trace-sft`."""
    return REVIEWED + part


def reviewed_demos_name(rater: str) -> str:
    """The variant of `rater` prompted with demos chosen from the reviewed traces."""
    return f"{rater}+{reviewed('demos')}"
