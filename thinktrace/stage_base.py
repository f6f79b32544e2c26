"""What every stage of a compile run is (thinktrace.stages lists them in order): an object with `enabled(spec)`,
`plan(ctx)` (what `--dry-run` prints: items, LM calls at most, the variants it adds; no model loaded) and `run(p)`
(the work, with the Pipeline as the run context; resumable from the run folder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from thinktrace.pipeline import Pipeline


@dataclass
class PlanContext:
    """What the stages plan from: the spec, the corpus, split sizes; stages add their plans and variant names."""

    spec: Any
    corpus: Any
    sizes: dict
    stages: dict = field(default_factory=dict)
    variants: list = field(default_factory=list)
    examples: list = field(default_factory=list)  #: the sampling stage's training examples


class Stage:
    name = ""
    #: what the stage writes into the run folder (a trailing / is a folder); the plan lists them
    artifacts: tuple[str, ...] = ()

    def enabled(self, spec) -> bool:
        return True

    def plan(self, ctx: PlanContext) -> dict:
        raise NotImplementedError

    def run(self, p: Pipeline) -> Any:
        raise NotImplementedError
