"""The run context every stage gets: the spec (and its roles), the corpus, the run folder, the LMs and prompt formats
(each built once per run), the programs, the executor and the variants the stages before it added. A stage reads
the context and returns a `StageResult`; only the run loop (`thinktrace.run.pipeline`) changes the variants."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from thinktrace.prompt_formats import make_prompt_format
from thinktrace.errors import SpecError
from thinktrace.loader import load_object
from thinktrace.run.roles import Roles
from thinktrace.variants import Variant

if TYPE_CHECKING:  # pragma: no cover
    import dspy

    from thinktrace.data import Corpus
    from thinktrace.rundir import RunDir
    from thinktrace.spec import LoadedSpec


class RunContext:
    def __init__(self, loaded: LoadedSpec, corpus: Corpus, rundir: RunDir):
        self.loaded = loaded
        self.spec = loaded.spec
        self.corpus = corpus
        self.rundir = rundir
        self.roles = Roles(self.spec)
        self.guideline: str = loaded.guideline  #: the spec's (original) guideline
        #: the experiment's prompt format (a DSPy adapter, `programs.adapter`; not a LoRA adapter, which is a
        #: model entry's `adapter`)
        self.prompt_format = make_prompt_format(self.spec.programs.adapter)
        self._formats = {self.spec.programs.adapter: self.prompt_format}
        self._lms: dict = {}
        #: the variants so far, in the order they were added (the run loop appends each stage's)
        self.variants: tuple[Variant, ...] = ()
        #: configured rater -> its best original prompt, chosen on dev (the prompts stage's result)
        self.best_prompt: Mapping[str, Variant] = {}
        #: `compile --reviewed`: the stages that depend on the traces also run on the reviewed set of `reviewer`
        #: (default: the first reviewer of reviews.jsonl), beside the raw traces (thinktrace.review)
        self.reviewed: bool = False
        self.reviewer: str | None = None
        self._reviewed: tuple[list[dict], dict] | None = None

    def reviewed_traces(self) -> tuple[list[dict], dict]:
        """(the reviewed trace set, its counts) from the run folder's traces.jsonl and reviews.jsonl: rejected
        traces dropped, edits the blind judge confirmed in place (thinktrace.review.store). Read once per run."""
        if self._reviewed is None:
            from thinktrace.review.records import ReviewError
            from thinktrace.review.store import ReviewStore

            try:
                store = ReviewStore(self.rundir.path)
            except ReviewError as err:
                raise SpecError("--reviewed", str(err)) from None
            if not store.reviews:
                raise SpecError("--reviewed", f"{store.journal} holds no review yet (review first: thinktrace "
                                f"review {self.rundir.path})")
            if self.reviewer is not None and self.reviewer not in store.reviewers():
                raise SpecError("--reviewer", f"{self.reviewer!r} has no review in {store.journal} (reviewers: "
                                f"{', '.join(store.reviewers())})")
            self._reviewed = store.reviewed_traces(self.reviewer)
        return self._reviewed

    # -- models ------------------------------------------------------------------------------------------------
    def lm(self, cfg, field: str = "models.raters", role: str = ""):
        """The LM of a model entry, built once per (role, name): the guideline writer (role `writer`) never
        shares the object of the rater or generator it may be named after."""
        from thinktrace.lm import build_lm

        key = f"{role}:{cfg.name}"
        if key not in self._lms:
            self._lms[key] = build_lm(cfg, field, calls=self.spec.calls)
        return self._lms[key]

    def prompt_format_for(self, model) -> dspy.Adapter:
        """The prompt format a rater is run with: its own `prompt_format`, else the experiment's."""
        name = getattr(model, "prompt_format", None) or self.spec.programs.adapter
        if name not in self._formats:
            self._formats[name] = make_prompt_format(name)
        return self._formats[name]

    def preflight(self) -> None:
        """Build every configured LM before any work (keys present, paths exist); weights load lazily."""
        for role in self.roles.raters():
            self.lm(role.model, role.field)
        if self.spec.models.generator is not None:
            self.lm(self.spec.models.generator, "models.generator")
        from thinktrace.lm.config import ModelConfig

        if self.spec.guidelines.enabled and isinstance(self.spec.guidelines.writer, ModelConfig):
            self.lm(self.spec.guidelines.writer, "guidelines.writer", role="writer")

    @property
    def executor(self):
        """Where this run's parallel LM calls go (threads, or the run's Ray actors)."""
        from thinktrace.execution import current_executor

        return current_executor()

    # -- programs ----------------------------------------------------------------------------------------------
    def program_class(self, field: str):
        """The DSPy program class `programs.<field>` names (a file relative to the spec, or a module)."""
        return load_object(getattr(self.spec.programs, field), [self.loaded.base_dir], f"programs.{field}")

    def rater_program(self, guideline: str | None = None, label_only: bool = False, order: str = "rationale_first"):
        """The rater program with `guideline` (default: the spec's); `label_only`: the same file's rater without a
        rationale; `order`: the answer's field order."""
        guideline = self.guideline if guideline is None else guideline
        ref = self.spec.programs.rater
        if label_only:  # the label-only ablation: same file, the class without a rationale
            ref = ref.rsplit(":", 1)[0] + ":LabelOnlyRater"
        cls = load_object(ref, [self.loaded.base_dir], "programs.rater")
        if order == "rationale_first":
            return cls(guideline=guideline, label_set=self.corpus.label_set)
        try:
            return cls(guideline=guideline, label_set=self.corpus.label_set, order=order)
        except TypeError as err:
            raise SpecError("evaluate.prompts", f"{ref} takes no `order` argument, so it cannot answer {order}: "
                            f"add `order` to the program or drop that prompt variant ({err})") from None

    def program_for(self, v: Variant, guideline: str | None = None):
        """The program that rates as variant `v` (its guideline unless another is given, its demos, its order)."""
        program = self.rater_program(v.guideline if guideline is None else guideline, label_only=v.label_only,
                                     order=v.order)
        if v.demos:
            from thinktrace.teleprompt import demo_examples, judge_predictor

            judge_predictor(program).demos = demo_examples(v.demos)
        return program

    def rater_signature(self, order: str = "rationale_first"):
        """The signature of the rater's judge predictor (what SFT rows are written in), its outputs in `order`."""
        from thinktrace.teleprompt import judge_predictor

        return judge_predictor(self.rater_program(order=order)).signature

    # -- data and variants -------------------------------------------------------------------------------------
    def eval_items(self, split: str):
        items = self.corpus.split(split)
        return items[: self.spec.evaluate.max_items] if self.spec.evaluate.max_items else items

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def baselines(self) -> list[Variant]:
        """The configured raters' own variants (kind `baseline`), as the run starts them."""
        return [v for v in self.variants if v.kind == "baseline"]


def initial_variants(ctx: RunContext) -> list[Variant]:
    """What every run evaluates before any stage adds to it: each configured rater (kind `baseline`) and each rater
    under every `evaluate.prompts` entry that differs from its own prompt (kind `prompt`)."""
    baselines = [Variant(name=role.name, model=role.model, guideline=ctx.guideline, kind="baseline", rater=role.name)
                 for role in ctx.roles.raters()]
    prompts = []
    for cfg, base in zip(ctx.spec.models.raters, baselines):
        for name, fmt, order in ctx.spec.prompt_variants(cfg):
            prompts.append(Variant(name=name, model=base.model.model_copy(update={"prompt_format": fmt}),
                                   guideline=base.guideline, kind="prompt", rater=base.name, order=order,
                                   compare_to=[base.name]))
    return baselines + prompts


__all__ = ["RunContext", "initial_variants"]
