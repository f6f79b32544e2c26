"""How a training row holds a trace (`finetune.format`), and the adapter each format trains.

- ``rationale_then_label`` (kind ``trace-sft``): one row per trace, the answer the rationale then the label - the
  rater's own prompt, evaluated as trained.
- ``label_then_rationale`` (kind ``trace-sft-label-first``): one row per trace, the answer the label then the
  rationale (the rater's ``label_first`` prompt), evaluated with the label first: the label cannot lean on a
  rationale written before it, but the rationale is still trained.
- ``multitask`` (kind ``trace-sft-multitask``; "distilling step-by-step", Hsieh et al. 2023): two rows per trace,
  told apart by the prompt: the label task (the label-only prompt and the label, exactly the label-sft row) and the
  rationale task (the prompt asks for the rationale alone). The rater is evaluated by its label alone (label-only
  prompt), so the rationale shapes training only; multitask − label-sft is what training on the rationales adds.

Every format trains the same items with the same seed and the same optimizer steps: multitask, with twice the rows,
gets the steps one row per trace takes (``format_config``), so no format wins by training longer.
"""

from __future__ import annotations

from typing import Callable, Sequence

from thinktrace.finetune.config import FinetuneConfig, plan_steps

#: the adapter kind of each format (also the variant's `kind` and its name after `<base>+`)
FORMAT_KINDS = {"rationale_then_label": "trace-sft", "multitask": "trace-sft-multitask",
                "label_then_rationale": "trace-sft-label-first"}
#: the answer order a format's adapter is prompted with at evaluation, and whether it answers with the label alone
EVAL_ORDER = {"rationale_then_label": "rationale_first", "multitask": "rationale_first",
              "label_then_rationale": "label_first"}
LABEL_ONLY_AT_EVAL = {"multitask"}
#: the shuffled-trace control of each format (`finetune.ablation_shuffled`): that format's rows, each rationale on
#: another item of its label, trained and evaluated like the format
SHUFFLED_KINDS = {"rationale_then_label": "shuffled-trace-sft", "multitask": "shuffled-trace-sft-multitask",
                  "label_then_rationale": "shuffled-trace-sft-label-first"}


def format_of(kind: str) -> str | None:
    """The format an adapter kind was trained in (a trace format's kind or its shuffled control); None for others."""
    return next((f for table in (FORMAT_KINDS, SHUFFLED_KINDS) for f, k in table.items() if k == kind), None)


def format_rows(fmt: str, traces: Sequence[dict], signature_of: Callable[[str], object], adapter) -> list[dict]:
    """The SFT rows of `traces` in format `fmt`; `signature_of(order)` is the rater's judge signature with its
    outputs in `order` (rationale_first / label_first), `adapter` the prompt format. Multitask rows alternate the
    label task and the rationale task of each trace, so `finetune.max_rows` keeps whole items."""
    from thinktrace.traces import sft_rows

    if fmt == "rationale_then_label":
        return sft_rows(traces, signature_of("rationale_first"), adapter)
    if fmt == "label_then_rationale":
        return sft_rows(traces, signature_of("label_first"), adapter)
    if fmt == "multitask":
        sig = signature_of("rationale_first")
        label = sft_rows(traces, sig, adapter, with_rationale=False, task="label")
        rationale = sft_rows(traces, sig, adapter, with_label=False, task="rationale")
        return [row for pair in zip(label, rationale) for row in pair]
    raise ValueError(f"unknown finetune.format {fmt!r}; allowed: {', '.join(FORMAT_KINDS)}")


def format_config(cfg: FinetuneConfig, fmt: str, n_traces: int) -> FinetuneConfig:
    """The settings one format trains with: `cfg`, except that multitask (two rows per trace) takes the optimizer
    steps of one row per trace (`max_steps` when set, else what `epochs` gives on `n_traces` rows) and keeps
    `max_rows` traces (2 x `max_rows` rows)."""
    if fmt != "multitask":
        return cfg
    steps = cfg.max_steps or plan_steps(cfg, n_traces)
    return cfg.model_copy(update={"max_steps": max(steps, 1),
                                  "max_rows": cfg.max_rows * 2 if cfg.max_rows else None})


def rows_per_label(rows: Sequence[dict]) -> dict[str, int]:
    """Training examples per label (a multitask trace counts once: its label-task row), labels in sorted order."""
    from collections import Counter

    counts = Counter(str(r.get("label")) for r in rows if r.get("task") != "rationale")

    def key(label: str) -> tuple:
        try:
            return (0, float(label), label)
        except ValueError:
            return (1, 0.0, label)

    return {label: counts[label] for label in sorted(counts, key=key)}
