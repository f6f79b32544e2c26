"""The typed records of a run folder's journals: one pydantic model per kind of line, with a `schema_version`.

- `Prediction` (predictions.jsonl, prompts_dev.jsonl, guidelines/ratings/*.jsonl): one rater's call on one item.
- `Attempt` (attempts.jsonl): one rejection-sampling attempt.
- `Trace` (traces.jsonl): one accepted trace.

Every journal is written and read through these models (`thinktrace.rundir.JsonlLog(path, model=...)`): a record
that does not fit is an error where it is written, not a surprise where it is read; records written before
`schema_version` existed (version 1) are upgraded on read. Code keeps working with plain dicts (the models'
`model_dump`), so a record is validated at the journal boundary and nowhere else. The field names every stage
shares are the constants below.
"""

from __future__ import annotations

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


class Attempt(Record):
    key: str
    annotator: str | None = None
    strategy: str
    attempt: int
    seed: int
    label_source: str | None = None
    accepted: bool = False


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


def dump(model: type[BaseModel], record: dict | BaseModel) -> dict:
    """`record` validated by `model`, as the plain dict a journal line holds."""
    obj = record if isinstance(record, model) else model.model_validate(record)
    return obj.model_dump(mode="json")
