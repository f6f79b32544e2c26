"""Who plays which part in a run, decided once from the spec: the teacher (samples the traces), the raters, the
fine-tuning base (the student the adapters are trained on), the student's own-trace sampler, the trace-quality reader
and the guideline writer. Every stage and the plan ask `Roles`; no other module reads `finetune.base` to decide
whether a model is the base.

A rater *on the base* is a local rater without an adapter whose model is the fine-tuning base (embedded names and
their canonical ids are the same model). With fine-tuning on, such a rater runs on the exact weights the adapters
are trained on (`training_base`), not the shipped quantized file, so its paired difference with a fine-tuned rater
measures the adapter alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from thinktrace.lm.config import ModelConfig


def same_model(a: str, b: str) -> bool:
    """Whether two `model` values name the same weights (an embedded name and its canonical id are one model)."""
    from thinktrace.lm.embedded import canonical_name

    return (canonical_name(a) or a) == (canonical_name(b) or b)


@dataclass(frozen=True)
class Role:
    """A model entry playing a part, and the spec field it came from (named in errors)."""

    model: ModelConfig
    field: str

    @property
    def name(self) -> str:
        return self.model.name


class Roles:
    """The parts of a run, from its spec (no model is built here)."""

    def __init__(self, spec):
        self.spec = spec

    # -- the fine-tuning base ----------------------------------------------------------------------------------
    @property
    def base(self) -> str:
        """The fine-tuning base model (`finetune.base`)."""
        return self.spec.finetune.base

    def is_on_base(self, cfg: ModelConfig) -> bool:
        """A local model entry without an adapter on the fine-tuning base's weights."""
        return cfg.is_local and not cfg.adapter and same_model(cfg.model, self.base)

    def on_training_base(self, cfg: ModelConfig) -> ModelConfig:
        """`cfg`, marked to run on the weights the adapters are trained on when fine-tuning is on and it is a local
        model of the base (see the module docstring)."""
        tuned = self.spec.finetune.enabled and cfg.is_local and same_model(cfg.model, self.base)
        return cfg.model_copy(update={"training_base": True}) if tuned else cfg

    def base_rater(self) -> ModelConfig | None:
        """The first configured rater on the fine-tuning base, or None."""
        return next((r for r in self.spec.models.raters if self.is_on_base(r)), None)

    def base_name(self) -> str:
        """The name the base is evaluated under: its configured rater's, else the base model itself."""
        rater = self.base_rater()
        return rater.name if rater else self.base

    def base_model(self) -> ModelConfig:
        """The base served locally when no rater runs on it (its token limit from the first local rater)."""
        template = next((r for r in self.spec.models.raters if r.is_local), None)
        return ModelConfig(name=self.base, provider="local", model=self.base,
                           training_base=self.spec.finetune.enabled,
                           max_tokens=template.max_tokens if template else 256)

    def base_role(self) -> Role:
        """The untuned student: the configured rater on the base (on its training weights), else the base model."""
        for i, cfg in enumerate(self.spec.models.raters):
            if self.is_on_base(cfg):
                return Role(self.on_training_base(cfg), f"models.raters.{i}")
        return Role(self.base_model(), "finetune.base")

    # -- the other parts ---------------------------------------------------------------------------------------
    def raters(self) -> list[Role]:
        """The configured raters, each on the weights it is evaluated on."""
        return [Role(self.on_training_base(cfg), f"models.raters.{i}")
                for i, cfg in enumerate(self.spec.models.raters)]

    def teacher(self) -> Role:
        """The trace generator: `models.generator`, else the first rater."""
        if self.spec.models.generator is not None:
            return Role(self.spec.models.generator, "models.generator")
        return Role(self.spec.models.raters[0], "models.raters.0")

    def student_name(self) -> str:
        """Who samples the student's own traces (`sampling.self_traces`): `sampling.self_generator`, else the
        untuned student."""
        return self.spec.sampling.self_generator or self.base_name()

    def _named_or_base(self, name: str | None, field: str) -> Role:
        """The model entry `name` set in `field` (on the weights it is evaluated on), else the untuned student."""
        if name:
            return Role(self.on_training_base(self.spec.model_named(name)), field)
        return self.base_role()

    def student(self) -> Role:
        """The student's own-trace sampler's entry (on the weights it is trained and evaluated on)."""
        return self._named_or_base(self.spec.sampling.self_generator, "sampling.self_generator")

    def student_conflict(self) -> str | None:
        """Why the student cannot sample a second corpus (it is the teacher), or None."""
        gen = self.spec.generator
        name = self.student_name()
        if name == gen.name or (not self.spec.sampling.self_generator and self.is_on_base(gen)):
            return (f"the student ({name}) is also the trace generator ({gen.name}), so its own traces would be the "
                    "teacher's: set models.generator to the teacher")
        return None

    def reader_name(self) -> str:
        """Who reads the traces in the trace-quality stage: `trace_quality.reader`, else the untuned student."""
        return self.spec.trace_quality.reader or self.base_name()

    def reader(self) -> Role:
        """The trace-quality reader's entry."""
        return self._named_or_base(self.spec.trace_quality.reader, "trace_quality.reader")

    def writer(self) -> Role:
        """The guideline writer: its own entry, a named model, or the generator."""
        w = self.spec.guidelines.writer
        if isinstance(w, ModelConfig):
            return Role(w, "guidelines.writer")
        if w:
            return Role(self.spec.model_named(w), "guidelines.writer")
        return Role(self.spec.generator, "models.generator")


def self_traces_problem(spec) -> str | None:
    """What is wrong with a spec's self-traces settings (the message starts with the field), or None."""
    s = spec.sampling
    if s.self_generator and not s.self_traces:
        return ("sampling.self_generator: it samples the student's own traces; set sampling.self_traces: true (or "
                "drop self_generator)")
    if not s.self_traces:
        return None
    if not (spec.finetune.enabled and s.enabled):
        return ("sampling.self_traces: the student's own traces are fine-tuning data; set finetune.enabled: true "
                "(and sampling.enabled: true)")
    names = [r.name for r in spec.models.raters] + ([spec.models.generator.name] if spec.models.generator else [])
    if s.self_generator and s.self_generator not in names:
        return f"sampling.self_generator: {s.self_generator!r} is not a model of this spec; one of: {', '.join(names)}"
    conflict = Roles(spec).student_conflict()
    return f"sampling.self_traces: {conflict}" if conflict else None
