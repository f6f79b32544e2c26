"""The typed records of a run folder's journals: one pydantic model per kind of line, with a `schema_version`.

- `Prediction` (predictions.jsonl, prompts_dev.jsonl, guidelines/ratings/*.jsonl): one rater's call on one item.
- `Attempt` (attempts.jsonl): one rejection-sampling attempt.
- `Trace` (traces.jsonl): one accepted trace.
- `TraceRead` (trace_quality.jsonl): one call of the trace-quality reader (an item with or without a trace).

Every journal is written and read through these models (`thinktrace.rundir.JsonlLog(path, model=...)`): a record
that does not fit is an error where it is written, not a surprise where it is read; records written before
`schema_version` existed (version 1) are upgraded on read. Code keeps working with plain dicts (the models'
`model_dump`), so a record is validated at the journal boundary and nowhere else. The field names every stage
shares are the constants below.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 2

#: the field names of the rater's signature that thinktrace reads (signatures/judge.py)
ITEM, RATIONALE, LABEL = "item", "rationale", "label"


class Tokens(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt: int = 0
    completion: int = 0


class Record(BaseModel):
    """Fields every journal line has. Unknown fields are kept (a program may add its own)."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    item_id: str
    human: str | None = None
    label: str | None = None
    rationale: str | None = None
    raw_label: str | None = None
    raw: str | None = None
    error: str | None = None
    error_kind: str | None = None  #: connection | transient | rejected | final (thinktrace.journal)
    retries: int = 0
    tokens: Tokens = Field(default_factory=Tokens)
    latency_s: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        """Version 1 (no schema_version): labels and ids may be numbers, no error_kind (an error then was final)."""
        if isinstance(data, dict) and "schema_version" not in data:
            data = dict(data)
            for key in ("item_id", "human", "label", "raw_label"):
                if data.get(key) is not None and not isinstance(data[key], str):
                    data[key] = str(data[key])
            if data.get("error") and "error_kind" not in data:
                data["error_kind"] = "final"
            data["schema_version"] = SCHEMA_VERSION
        return data


class Prediction(Record):
    split: str
    rater: str
    label_source: str | None = None  #: output | choice | None


def answer_cut(finish_reason: str | None, label_source: str | None) -> bool:
    """Was an answer cut: its call ended on max_tokens (finish reason "length"), or its label had to be written
    under the grammar after the answer stopped short of it (label source "choice"; in attempts written before finish
    reasons were journalled this is the only sign of a cut)?"""
    return finish_reason == "length" or label_source == "choice"


def record_cut(record: dict) -> bool:
    """`answer_cut` of a journal record (an attempt or a trace): was the rationale's answer cut?"""
    return answer_cut(record.get("finish_reason"), record.get("label_source"))


class Attempt(Record):
    key: str
    annotator: str | None = None
    strategy: str
    attempt: int
    seed: int
    label_source: str | None = None  #: output | choice (the label written under the grammar after a cut) | None
    #: of the call that wrote the rationale (blind: the answer; hinted: the rationale, not the check): stop, length
    #: (cut by max_tokens) or None (the LM did not say, or an attempt written before this field existed)
    finish_reason: str | None = None
    #: the label matched the human label (within `sampling.tolerance`); None in attempts written before it existed
    label_match: bool | None = None
    #: accepted as a trace under the settings it was sampled with; a resumed run derives acceptance again from the
    #: record under its own settings (thinktrace.teleprompt.RejectionSampling.settle)
    accepted: bool = False
    #: `sampling.attempts_from` as given: this attempt was made by that run and replayed here (thinktrace.reuse)
    reused_from: str | None = None


class Trace(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    key: str
    item_id: str
    annotator: str | None = None
    item: str
    human: str
    human_labels: list[str] = Field(default_factory=list)
    label: str
    rationale: str
    strategy: str
    attempt: int
    #: where the label came from and how the rationale's answer ended (see `Attempt`); None in traces.jsonl files
    #: written before these were kept
    label_source: str | None = None
    finish_reason: str | None = None


class TraceRead(Record):
    """The trace-quality reader on one unit: `condition` masked_trace / with_trace / without_trace /
    masked_rejected_trace / rejected_trace, `unit` its id within the condition (trace id, item id, example key;
    thinktrace.trace_quality.units); `trace_sha` (records written since masking began) a hash of the trace shown."""

    condition: str
    unit: str
    key: str
    reader: str
    trace_strategy: str | None = None
    trace_attempt: int | None = None
    label_source: str | None = None


def dump(model: type[BaseModel], record: dict | BaseModel) -> dict:
    """`record` validated by `model`, as the plain dict a journal line holds."""
    obj = record if isinstance(record, model) else model.model_validate(record)
    return obj.model_dump(mode="json")


# -- the metrics document (metrics.json) ------------------------------------------------------------------------

METRICS_VERSION = 2


def seconds(value) -> float | None:
    """A timing value (a number, or a string like `12.5 s`) as seconds; None when unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    m = re.match(r"\s*(-?[0-9.]+)\s*(ms|s|sec|min|h)?\b", str(value))
    if not m:
        return None
    try:
        v = float(m.group(1))
    except ValueError:
        return None
    return v * {"ms": 0.001, "min": 60.0, "h": 3600.0}.get(m.group(2) or "s", 1.0)


class _Open(BaseModel):
    """A part of the metrics document: the fields below are typed and checked, others are kept as they are."""

    model_config = ConfigDict(extra="allow")


class MetricsEstimate(_Open):
    """A statistic with its percentile-bootstrap 95 % interval (`thinktrace.agreement.Estimate.as_dict`); value
    None = undefined (n/a), ci [None, None] = no resamples."""

    value: float | None = None
    ci: list[float | None] | None = None
    n: int | None = None


class RaterScores(_Open):
    """One rater (variant) against the aggregated human label on one split."""

    n_items: int
    n_unparsed: int = 0
    n_errors: int = 0
    n_label_by_choice: int = 0
    alpha: MetricsEstimate | None = None
    kendall_tau_b: MetricsEstimate | None = None  #: None on nominal labels (n/a)
    icc: MetricsEstimate | None = None  #: ICC(3,1) rater vs human; None on nominal labels (n/a)
    tokens: Tokens = Field(default_factory=Tokens)


class PairedDifference(_Open):
    """b − a on the same items, paired bootstrap; p_b_not_better: share of resamples where b is not better."""

    diff: float | None = None
    ci: list[float | None] | None = None
    p_b_not_better: float | None = None
    n: int | None = None


class Comparison(PairedDifference):
    """α(b) − α(a); the other metrics' differences nested (`kendall_tau_b_diff`, `icc_diff`)."""

    a: str
    b: str
    kendall_tau_b_diff: PairedDifference | None = None
    icc_diff: PairedDifference | None = None


class InterRater(MetricsEstimate):
    """α (and ICC) among a group of LLM raters on the same items."""

    raters: list[str] = Field(default_factory=list)
    icc: MetricsEstimate | None = None


class SplitScores(_Open):
    n_items: int
    raters: dict[str, RaterScores] = Field(default_factory=dict)
    comparisons: list[Comparison] = Field(default_factory=list)
    human_ceiling: dict[str, Any] | None = None
    inter_rater: dict[str, InterRater] | None = None
    inter_rater_change: dict[str, Any] | None = None


class ReadGroup(_Open):
    """Trace-quality rates of one group of traces (all, or one human label): the reader's rate of returning the
    human label with the masked trace (`masked_trace`), the raw trace and without one on the same traces, their
    paired differences, the verdict (masked − without), and the rejected-trace subset (traces whose example also has
    a rejected trace: accepted vs rejected, masked and raw, same traces). Runs checked before masking have no
    masked keys."""

    n: int = 0
    with_trace: MetricsEstimate | None = None
    without_trace: MetricsEstimate | None = None
    with_trace_minus_without_trace: PairedDifference | None = None
    moves_toward_human: bool | None = None
    rejected: dict[str, Any] | None = None


class TraceQuality(_Open):
    """Does each accepted trace carry its label (thinktrace.trace_quality)?"""

    reader: str
    n_traces: int = 0
    n_items: int = 0
    rule: str = ""
    overall: ReadGroup = Field(default_factory=ReadGroup)
    per_label: dict[str, ReadGroup] = Field(default_factory=dict)
    moves_toward_human: bool | None = None
    n_errors: dict[str, int] = Field(default_factory=dict)
    n_unparsed: dict[str, int] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)


class VariantInfo(_Open):
    name: str
    kind: str = "baseline"
    rater: str | None = None
    model: str | None = None


class RunStatus(_Open):
    state: str = "complete"  #: complete | incomplete | failures_over_threshold | variants_failed
    stage: str | None = None
    reason: str | None = None
    message: str | None = None


class StageUsage(BaseModel):
    """What one stage cost in the session that ran it (`thinktrace.run.footprint.StageFootprint`)."""

    model_config = ConfigDict(extra="allow")

    seconds: float = 0.0
    peak_rss_mib: float = 0.0  #: this process over the stage; llama.cpp runs in it, so the local models are in it
    children_peak_rss_mib: float | None = None  #: the largest child process the stage ran (fine-tuning), if any
    calls: int = 0  #: requests served by local models on llama.cpp
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  #: of the prompt tokens, those llama.cpp served from its prompt cache
    generated_tokens: int = 0
    load_seconds: float = 0.0  #: of `seconds`, spent loading local models into llama.cpp


class MetricsDocument(_Open):
    """metrics.json: every number of a run's report. Written once per run (`Pipeline`), read by `RunView`
    (reports, `thinktrace compare`); a document from an older version is upgraded on read."""

    schema_version: int = METRICS_VERSION
    spec: dict[str, Any] = Field(default_factory=dict)
    status: RunStatus = Field(default_factory=RunStatus)
    data: dict[str, Any] = Field(default_factory=dict)
    variants: list[VariantInfo] = Field(default_factory=list)
    splits: dict[str, SplitScores] = Field(default_factory=dict)
    traces: dict[str, Any] | None = None
    trace_quality: TraceQuality | None = None
    finetune: dict[str, Any] | None = None
    prompts: dict[str, Any] | None = None
    guidelines: dict[str, Any] | None = None
    calls: dict[str, Any] | None = None
    timing: dict[str, float] = Field(default_factory=dict)  #: wall seconds per stage, summed over the sessions (first run and resumes) of the run folder
    peak_rss_mib: dict[str, int | float] = Field(default_factory=dict)  #: peak resident memory (MiB) of this process in each stage (older run folders: its peak so far at the end of the stage)
    stages: dict[str, StageUsage] = Field(default_factory=dict)  #: each stage's cost in the last session: wall time, memory, local-model tokens
    warnings: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        """Version 1 (no schema_version): timings as strings ("12.5 s"), `inter_rater` one estimate over all
        raters, a `plots` list (the report's files, not metrics)."""
        if not isinstance(data, dict) or "schema_version" in data:
            return data
        data = dict(data)
        timing = {k: seconds(v) for k, v in (data.get("timing") or {}).items()}
        data["timing"] = {k: v for k, v in timing.items() if v is not None}
        data.pop("plots", None)
        splits = {}
        for name, split in (data.get("splits") or {}).items():
            inter = split.get("inter_rater") if isinstance(split, dict) else None
            if isinstance(inter, dict) and "value" in inter:
                split = {**split, "inter_rater": {"all": inter}}
            splits[name] = split
        data["splits"] = splits
        data["schema_version"] = METRICS_VERSION
        return data

    @classmethod
    def document(cls, data: dict) -> dict:
        """`data` checked and upgraded, as the plain JSON document (only the fields it has, plus the version)."""
        return cls.model_validate(data).model_dump(mode="json", exclude_unset=True)
