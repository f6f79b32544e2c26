"""The review journal `reviews.jsonl` of a run folder: one typed line per review (`Review`), appended and fsynced,
never rewritten; traces.jsonl is never touched. The effective review of a trace, for one reviewer, is the last of
that reviewer's lines that counts (an accept, a reject, or an edit the blind judge read back to the human label):
two tabs writing the same trace both keep their lines, and the later one is effective."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

REVIEW_SCHEMA_VERSION = 1
JOURNAL = "reviews.jsonl"

Action = Literal["accept", "reject", "edit"]


class ReviewError(Exception):
    """Bad input to a review (unknown trace, tampered journal, run folder without traces); str() is one line."""


class JudgeUnavailable(ReviewError):
    """The blind judge could not read an edit (its model failed or is down): nothing was written; try again."""


class JudgeCheck(BaseModel):
    """The blind judge's reading of an edited rationale: the label it leads to (None: unparsed), whether that is
    the human label (within `sampling.tolerance`), the judge's model name."""

    model_config = ConfigDict(extra="allow")

    label: str | None = None
    raw: str | None = None
    agrees: bool = False
    model: str | None = None


class Review(BaseModel):
    """One review of one trace (`trace` = `key|strategy|attempt`, thinktrace.trace_quality.units.trace_id) by one
    reviewer: accept, reject, or edit (the new rationale, with the text it replaced and the judge's check)."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = REVIEW_SCHEMA_VERSION
    id: str  #: unique per line (uuid4 hex)
    trace: str
    item_id: str
    reviewer: str = Field(min_length=1, max_length=100)
    at: str  #: when, UTC ISO-8601
    action: Action
    reason: str = ""
    source: str = "page"  #: page | api | policy:<name> | import:<tool>
    rationale: str | None = None  #: the edited rationale (edit only)
    before: str | None = None  #: the rationale it replaced (edit only)
    judge: JudgeCheck | None = None  #: the blind judge's check of the edit (edit only)

    @field_validator("reviewer")
    @classmethod
    def _name(cls, v: str) -> str:
        v = v.strip()
        if not v or any(c in v for c in "\n\r\t"):
            raise ValueError("a reviewer's name is one non-empty line")
        return v

    @property
    def counts(self) -> bool:
        """Does this line decide its trace: an accept or reject, or an edit the judge confirmed?"""
        return self.action != "edit" or bool(self.judge and self.judge.agrees)

    @property
    def verdict(self) -> str:
        """accept / reject for the agreement between reviewers (a confirmed edit keeps the trace: accept)."""
        return "reject" if self.action == "reject" else "accept"
