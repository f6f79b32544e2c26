"""Base class of every spec section: strict (unknown keys are errors), documented, validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A section of the YAML experiment spec. Unknown keys are rejected; every field carries a description that
    `python -m thinktrace.compile --schema` prints and docs/reference/spec.md documents."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
