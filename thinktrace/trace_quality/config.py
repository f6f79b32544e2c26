"""The `trace_quality` spec section."""

from __future__ import annotations

from pydantic import Field

from thinktrace.config import Section


class TraceQualityConfig(Section):
    """Does each accepted trace carry its label? A reader model is shown the item and the trace (never the trace's
    label, and with every statement of a label in the trace masked: `thinktrace.leak`) and asked for the label
    alone; its rate of returning the human label with the masked trace is compared, on the same traces, with its
    rate with the raw trace, on the item alone and with a rejected trace of the same example (bootstrap CIs)."""

    enabled: bool | None = Field(
        None, description="Run the check. Null: on when `sampling` and `finetune` are both enabled (the reader is "
        "then the student about to be trained on the traces; on the quickstart it costs about 25 label-only calls "
        "of the 135M student).")
    reader: str | None = Field(
        None, description="Name of a model of this spec (a rater or the generator) that reads the traces. Null: the "
        "student, the untuned fine-tuning base (`finetune.base`): the configured rater on that model when there is "
        "one, else that model served locally.")
    max_traces: int | None = Field(
        None, ge=1, description="Check at most this many accepted traces (the first in traces.jsonl order). Null: "
        "all.")

    def active(self, spec) -> bool:
        """Whether the stage runs for `spec` (an explicit `enabled`, else sampling and fine-tuning both on)."""
        if self.enabled is not None:
            return self.enabled
        return bool(spec.sampling.enabled and spec.finetune.enabled)
