"""What a stage of a compile run is: an object with `name`, `artifacts`, `enabled(spec)`, `plan(ctx)` (what
`--dry-run` prints: items, LM calls at most, the variants it adds; no model loaded) and `run(ctx)` (the work, on
the `RunContext`, resumable from the run folder) returning a `StageResult`. Plan and run name variants through the
same functions (thinktrace.variants), so the plan names what the run does."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from thinktrace.run.context import RunContext
    from thinktrace.variants import Variant


@dataclass
class PlanContext:
    """What the stages plan from: the spec, its roles, the corpus, split sizes; stages add their plans and the
    names of the variants they add."""

    spec: Any
    corpus: Any
    sizes: dict
    stages: dict = field(default_factory=dict)
    variants: list = field(default_factory=list)
    examples: list = field(default_factory=list)  #: the sampling stage's training examples
    #: `compile --reviewed`: the stages that depend on the traces also run on the reviewed set (thinktrace.review)
    reviewed: bool = False

    @property
    def roles(self):
        from thinktrace.run.roles import Roles

        return Roles(self.spec)


@dataclass
class StageResult:
    """What a stage gives the run: its summary (metrics.json's entry under the stage's name; None: no entry), the
    variants it adds (evaluated by the evaluate stage, in this order), variants it replaces (same name, e.g. the
    base rater on the dtype the adapters were trained in), and the best original prompt per rater (prompts)."""

    summary: Any = None
    variants: list[Variant] = field(default_factory=list)
    replaced: dict[str, Variant] = field(default_factory=dict)
    best_prompt: dict[str, Variant] = field(default_factory=dict)


class Stage:
    name = ""
    #: what the stage writes into the run folder (a trailing / is a folder); the plan lists them
    artifacts: tuple[str, ...] = ()

    def enabled(self, spec) -> bool:
        return True

    def plan(self, ctx: PlanContext) -> dict:
        raise NotImplementedError

    def run(self, ctx: RunContext) -> StageResult:
        raise NotImplementedError
