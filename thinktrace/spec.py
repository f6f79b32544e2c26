"""The experiment spec: YAML (safe-loaded) into typed, validated sections. The pydantic models below ARE the
documentation of the YAML (`python -m thinktrace.compile --schema` prints every field with its description).

Errors name the file, the field path and what is allowed, on one line (see `thinktrace.errors.SpecError`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from thinktrace.config import Section
from thinktrace.data import DataConfig
from thinktrace.errors import SpecError
from thinktrace.execution.config import ExecutionConfig
from thinktrace.finetune import FinetuneConfig
from thinktrace.guidelines import GuidelinesConfig
from thinktrace.lm.config import ModelConfig
from thinktrace.lm.budget import BudgetConfig
from thinktrace.lm.guard import CallsConfig
from thinktrace.trace_quality.config import TraceQualityConfig


class ModelsConfig(Section):
    """The LMs of an experiment."""

    generator: ModelConfig | None = Field(
        None, description="LM that samples thinking traces (rejection sampling); defaults to the first rater.")
    raters: list[ModelConfig] = Field(
        ..., min_length=1, description="LM raters evaluated against the humans; each runs the rater program.")

    @model_validator(mode="after")
    def _unique_names(self) -> "ModelsConfig":
        names = [r.name for r in self.raters]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"raters: names must be unique; repeated: {dupes} (set `name:` on each rater)")
        return self


class ProgramsConfig(Section):
    """DSPy programs, referenced by module (`thinktrace.programs.rater:Rater`, the packaged defaults) or by file
    (`programs/rater.py:Rater`, looked up in the spec's folder, the working directory, then the package)."""

    rater: str = Field("thinktrace.programs.rater:Rater", description="Rater program: Class(guideline, label_set); "
                       "forward(item) -> Prediction(rationale, label).")
    infer: str = Field("thinktrace.programs.trace:TraceInferrer", description="Trace inference program used by the "
                       "rejection-sampling teleprompter.")
    writer: str = Field("thinktrace.programs.guideline:GuidelineWriter", description="Guideline writer program "
                        "(use 2): Class(labels, batch_size=..., ...) with forward(guideline, traces, priority, "
                        "order_seed), revise(original, rules, errors, examples_text) and render(original, rules, "
                        "examples).")
    reader: str = Field("thinktrace.programs.reader:TraceReader", description="Trace-quality reader program "
                        "(`trace_quality`): Class(guideline, label_set); forward(item, trace=None) -> "
                        "Prediction(label).")
    adapter: Literal["plain", "chat", "json"] = Field(
        "plain", description="Prompt format (DSPy adapter): plain = `Rationale:`/`Label:` lines (small local models "
        "follow it best); chat = DSPy ChatAdapter; json = DSPy JSONAdapter. Training rows use the same format.")


class SamplingConfig(Section):
    """Rejection sampling of thinking traces on the train split."""

    enabled: bool = Field(True, description="Infer traces (false: only evaluate the raters).")
    k: int = Field(8, ge=1, le=256, description="LM samples per item and strategy, at most.")
    keep: int = Field(1, ge=1, description="Stop sampling an item once this many traces are accepted.")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="Sampling temperature of the generator.")
    strategy: str = Field(
        "blind", description="blind: the generator sees guideline + item (the paper); hinted: it sees the human "
        "label and a blind judge must reproduce it; blind_then_hinted: hinted only for items blind left "
        "unexplained; or a strategy registered in `thinktrace.registry.sampling_strategies` (docs/extending.md).")
    tolerance: float = Field(0.0, ge=0.0, description="Ordinal/interval only: accept a sampled label within this "
                             "distance (in label value units) of the human label. 0 = exact match.")
    accept_cut: bool = Field(False, description="Accept an attempt whose answer was cut (finish reason `length`: "
                             "max_tokens hit inside it; or its label written under the grammar after it stopped short "
                             "of it) when its label matches. False: such an attempt is journalled with its finish "
                             "reason and counted, never a trace (its rationale may end mid-thought).")
    max_items: int | None = Field(None, ge=1, description="Sample traces for at most this many train items.")
    max_per_label: int | None = Field(None, ge=1, description="Sample traces for at most this many train examples "
                                      "per human label (the first ones in split order): a corpus whose labels are "
                                      "mostly one value spends its sampling budget on the others. Label-only on every "
                                      "train example (`finetune.ablation_label_all`) uses the same examples.")
    per_annotator: bool = Field(False, description="One trace per (item, annotator label) instead of per item, so "
                                "annotators who disagree get different traces (needs per-annotator labels).")
    max_demos: int = Field(4, ge=0, description="Accepted traces kept as few-shot demos (balanced over labels) in "
                           "the compiled program (program.json); each rater is then also evaluated with them "
                           "(variant `<rater>+demos`, paired against the rater without) and, with a refined guideline, "
                           "as the whole compiled program (`<rater>+compiled`: refined guideline + demos). 0 = no demos, "
                           "neither variant.")
    num_threads: int | None = Field(None, ge=1, description="Examples sampled in parallel (default: the "
                                    "generator's num_threads).")
    attempts_from: str | None = Field(None, description="Reuse another run's sampling attempts: its run folder (or "
                                      "its attempts.jsonl, with its spec.resolved.yaml beside it), relative to the "
                                      "spec's folder or the working directory. Its attempts for this run's train "
                                      "examples are replayed, not sampled again, so two experiments that differ only "
                                      "after the traces (another student) share one trace set; the other run must "
                                      "have the same seed, guideline, infer program, prompt format, k, strategy, "
                                      "temperature and generator model (else a one-line error names the field).")
    self_traces: bool = Field(False, description="Also sample the student's own traces (the untuned fine-tuning "
                              "base as generator; same k, keep, strategy, seeds; journal `self/attempts.jsonl`) on "
                              "the examples the generator explained and fine-tune `<base>+self-trace-sft` and "
                              "`<base>+trace-sft-common` (the generator's traces) on the examples both explained, as "
                              "many rows each; paired teacher − self. Needs finetune.enabled.")
    self_generator: str | None = Field(None, description="With `self_traces`: the model (a name in `models`) that "
                                       "samples them. Null: the local rater on `finetune.base`, else that base.")

    @field_validator("strategy")
    @classmethod
    def _registered_strategy(cls, name: str) -> str:
        from thinktrace.sampling import check_sampling_strategy

        return check_sampling_strategy(name)

    @model_validator(mode="after")
    def _keep_le_k(self) -> "SamplingConfig":
        if self.keep > self.k:
            raise ValueError(f"keep ({self.keep}) cannot exceed k ({self.k})")
        return self

    def calls_per_example(self) -> int:
        """LM calls one example can cost at most (a hinted attempt is a rationale plus a check)."""
        from thinktrace.sampling import sampling_strategy

        return sampling_strategy(self.strategy, self.k).calls_per_example(self.k)


class PromptVariant(Section):
    """One way to prompt a rater: a prompt format and the order of the answer's fields."""

    format: Literal["plain", "chat", "json"] | None = Field(
        None, description="Prompt format (DSPy adapter). Null: the rater's own (`prompt_format`, else "
        "`programs.adapter`).")
    order: Literal["rationale_first", "label_first"] = Field(
        "rationale_first", description="rationale_first: reasoning, then the label (what fine-tuning trains); "
        "label_first: the label, then its reasoning.")


class EvaluateConfig(Section):
    """How raters are evaluated against the humans."""

    prompts: list[PromptVariant] = Field(
        default_factory=list, description="Prompt variants every configured rater is also evaluated with (the "
        "original guideline), side by side with its own prompt. The best one per rater is chosen on the dev split "
        "(never on test; ties keep the rater's own prompt), the refined guideline is rated with it and compared "
        "against it. Fine-tuned raters keep the prompt they were trained on. Empty: each rater's own prompt only.")

    splits: list[Literal["train", "dev", "test"]] = Field(
        ["test"], min_length=1, description="Splits every rater is evaluated on (the report's numbers are test).")
    bootstrap: int = Field(1000, ge=0, le=100_000, description="Bootstrap resamples for 95% CIs (0 = no CIs).")
    max_items: int | None = Field(None, ge=1, description="Evaluate at most this many items per split "
                                  "(deterministic: the first in split order).")
    min_parse_rate: float = Field(0.9, ge=0.0, le=1.0, description="A variant whose answers parse to a label less "
                                  "often than this (parsed / answers; LM errors are `calls.max_failed`'s) failed: "
                                  "flagged at the top of the report, and the run exits 4. 0 = never.")
    collapse_share: float = Field(0.9, gt=0.0, le=1.0, description="A variant whose most frequent answer covers at "
                                  "least this share of its parsed answers, and `collapse_spread` holds, is flagged "
                                  "as collapsed (answers almost one label) in the report.")
    collapse_spread: float = Field(1 / 3, ge=0.0, le=1.0, description="Relative part of the collapse rule: flagged "
                                   "only when the variant leaves at most this fraction as many answers off its top "
                                   "label as the gold leaves items off the gold's top label (gold 78 % one label: "
                                   "the variant needs >= 92.7 % at 1/3), so a concentrated gold is no collapse.")


class Spec(Section):
    """A thinktrace experiment."""

    name: str = Field(..., description="Experiment name; runs go to `<output_dir>/<name>/<timestamp>/`.")
    description: str = Field("", description="Free text shown in the report.")
    seed: int = Field(0, description="Seed for splits, sampling and bootstrap.")
    data: DataConfig = Field(..., description="The human-annotated corpus.")
    codebook: str | None = Field(None, description="The original annotation guideline, inline.")
    codebook_file: str | None = Field(None, description="Or: a text/Markdown file with the guideline (relative "
                                      "to the spec's folder).")
    models: ModelsConfig = Field(..., description="The LMs: raters (required) and the trace generator.")
    programs: ProgramsConfig = Field(default_factory=ProgramsConfig, description="DSPy programs and prompt format.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Rejection sampling of traces.")
    trace_quality: TraceQualityConfig = Field(
        default_factory=TraceQualityConfig, description="Does each accepted trace carry its label? A reader is "
        "asked for the label with the trace, without it and with a rejected trace of the same item.")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="Use 1: LoRA fine-tuning of an "
                                     "open rater on the traces, with the label-only ablation.")
    guidelines: GuidelinesConfig = Field(default_factory=GuidelinesConfig, description="Use 2: synthesize and "
                                         "refine the guideline from the traces, scored on dev across all raters.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Evaluation against humans.")
    calls: CallsConfig = Field(default_factory=CallsConfig, description="Retries of failed LM calls, when an "
                               "endpoint counts as down (the stage stops, resumable), and how many final failures "
                               "a complete run may have.")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="Most tokens and dollars the run (with "
                                 "its resumes) may spend on LM calls; reaching a limit stops it cleanly and "
                                 "resumably (exit 5). May change on resume.")
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig, description="Where sampling, rating and "
                                       "guideline scoring run: threads here (local) or Ray actors (ray). May change "
                                       "on resume.")
    output_dir: str = Field("runs", description="Where run folders are written (relative to the working dir).")

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("use letters, digits, '_', '-' or '.' (it names a folder)")
        return v

    @model_validator(mode="after")
    def _one_codebook(self) -> "Spec":
        if (self.codebook is None) == (self.codebook_file is None):
            raise ValueError("codebook: give exactly one of `codebook` (inline text) or `codebook_file`")
        return self

    @model_validator(mode="after")
    def _tolerance_level(self) -> "Spec":
        if self.sampling.tolerance and self.data.level == "nominal":
            raise ValueError("sampling.tolerance needs data.level ordinal or interval")
        return self

    @model_validator(mode="after")
    def _finetune_needs_traces(self) -> "Spec":
        if self.finetune.enabled and not self.sampling.enabled:
            raise ValueError("finetune.enabled: fine-tuning trains on inferred traces; set sampling.enabled: true")
        return self

    @model_validator(mode="after")
    def _guidelines_need_traces(self) -> "Spec":
        g = self.guidelines
        if g.enabled and g.optimizer == "traces" and not self.sampling.enabled:
            raise ValueError("guidelines.enabled: trace-based synthesis reads inferred traces; set "
                             "sampling.enabled: true (or use optimizer gepa / mipro)")
        names = [r.name for r in self.models.raters] + ([self.models.generator.name] if self.models.generator else [])
        if isinstance(g.writer, str) and g.writer not in names:
            raise ValueError(f"guidelines.writer: {g.writer!r} is not a model of this spec; one of: {', '.join(names)}")
        return self

    @model_validator(mode="after")
    def _self_traces(self) -> "Spec":
        from thinktrace.run.roles import self_traces_problem

        problem = self_traces_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _trace_quality(self) -> "Spec":
        tq = self.trace_quality
        if tq.enabled and not self.sampling.enabled:
            raise ValueError("trace_quality.enabled: the check reads inferred traces; set sampling.enabled: true")
        names = [r.name for r in self.models.raters] + ([self.models.generator.name] if self.models.generator else [])
        if tq.reader is not None and tq.reader not in names:
            raise ValueError(f"trace_quality.reader: {tq.reader!r} is not a model of this spec; one of: "
                             f"{', '.join(names)}")
        return self

    def prompt_variants(self, rater: ModelConfig) -> list[tuple[str, str, str]]:
        """(variant name, format, order) of each `evaluate.prompts` entry that differs from the rater's own prompt
        (its format, rationale first), in spec order, without repeats."""
        own = rater.prompt_format or self.programs.adapter
        seen, out = {(own, "rationale_first")}, []
        for p in self.evaluate.prompts:
            fmt = p.format or own
            if (fmt, p.order) not in seen:
                seen.add((fmt, p.order))
                out.append((f"{rater.name}@{fmt}-{p.order.replace('_first', '')}", fmt, p.order))
        return out

    def model_named(self, name: str) -> ModelConfig:
        for cfg in [*self.models.raters, *([self.models.generator] if self.models.generator else [])]:
            if cfg.name == name:
                return cfg
        raise KeyError(name)

    @property
    def generator(self) -> ModelConfig:
        return self.models.generator or self.models.raters[0]


class LoadedSpec:
    """A validated spec with where it came from and its resolved guideline."""

    def __init__(self, spec: Spec, path: Path, guideline: str, base_dir: Path | None = None):
        self.spec = spec
        self.path = path  #: the spec file (a mapping's: `<mapping>` in base_dir)
        self.guideline = guideline
        self._base_dir = base_dir

    @property
    def base_dir(self) -> Path:
        """What relative paths in the spec resolve against: the spec file's folder (a mapping's: the folder given)."""
        return self._base_dir or self.path.parent


def _field_path(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-after")))


def _allowed(error: dict) -> str:
    msg = error["msg"]
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "literal_error":
        return msg.replace("Input should be", "allowed:")
    return msg.removeprefix("Value error, ")


def _section_model(model: type, loc: tuple) -> Any:
    """The pydantic model of the section at `loc` (list indices skipped), or None."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        found = None
        stack = [field.annotation]
        while stack and found is None:
            ann = stack.pop()
            if hasattr(ann, "model_fields"):
                found = ann
            stack.extend(getattr(ann, "__args__", ()) or ())
        if found is None:
            return None
        current = found
    return current


def _allowed_fields(model: type, loc: tuple) -> str:
    """For an unknown key: the fields its parent section allows."""
    fields = getattr(_section_model(model, loc[:-1]), "model_fields", None)
    return f"; allowed: {', '.join(fields)}" if fields else ""


def _refine_loc(model: type, loc: tuple, message: str) -> tuple:
    """A section-level check whose message starts with one of the section's field names (or a dotted path from
    it) is reported at that field: `sampling` + "keep (9) cannot exceed k" -> `sampling.keep`."""
    token = re.match(r"[A-Za-z_][\w.]*", message.removeprefix("Value error, "))
    if not token:
        return loc
    parts = tuple(token.group(0).rstrip(".").split("."))
    section = _section_model(model, loc)
    if section is not None and parts[0] in getattr(section, "model_fields", {}):
        if _section_model(model, loc + parts[:-1]) is not None:
            return loc + parts
    return loc


def parse_value(text: str) -> Any:
    """A `--set` value: YAML scalar/list/mapping syntax (`3`, `0.5`, `true`, `[a, b]`, `null`)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(raw: dict, assignment: str) -> None:
    """`a.b.c=value` (list elements by index: `models.raters.0.model=x`) applied to the raw YAML mapping."""
    if "=" not in assignment:
        raise SpecError("--set", f"expected key.path=value, got {assignment!r}")
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SpecError(".".join(parts[: i + 1]), f"--set: no list element {part}")
            node = node[int(part)]
        else:
            if not isinstance(node, dict):
                raise SpecError(".".join(parts[:i]), "--set: not a section")
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise SpecError(key, f"--set: no list element {last}")
        node[int(last)] = parse_value(value)
    elif isinstance(node, dict):
        node[last] = parse_value(value)
    else:
        raise SpecError(key, "--set: parent is not a section")


def load_spec(path: str | Path, overrides: list[str] | None = None) -> LoadedSpec:
    """Read, override and validate a spec. Raises SpecError (one line, names file and field)."""
    path = Path(path)
    shown = str(path)
    if not path.is_file():
        raise SpecError("", "spec file not found", shown)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SpecError("", "not UTF-8 text", shown) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError("", f"invalid YAML{where}: {problem}", shown) from None
    if not isinstance(raw, dict):
        raise SpecError("", "a spec is a YAML mapping (key: value lines)", shown)
    return _validated(raw, path, overrides)


def load_spec_mapping(raw: dict, overrides: list[str] | None = None, base_dir: str | Path = ".") -> LoadedSpec:
    """A spec given as a mapping (the Python API): validated like a file's; relative paths resolve against
    `base_dir`; errors name `<mapping>` as the file."""
    import copy

    base = Path(base_dir)
    return _validated(copy.deepcopy(raw), base / "<mapping>", overrides, base)


def _validated(raw: dict, path: Path, overrides: list[str] | None, base_dir: Path | None = None) -> LoadedSpec:
    shown = str(path) if base_dir is None else "<mapping>"
    if not isinstance(raw, dict):
        raise SpecError("", "a spec is a YAML mapping (key: value lines)", shown)
    for assignment in overrides or []:
        try:
            apply_override(raw, assignment)
        except SpecError as err:
            raise err.with_file(shown) from None
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        if first["type"] == "value_error":
            loc = _refine_loc(Spec, loc, first["msg"])
        extra = _allowed_fields(Spec, loc) if first["type"] == "extra_forbidden" else ""
        value = first.get("input")
        got = "" if first["type"] in ("missing", "extra_forbidden") or isinstance(value, (dict, list)) \
            else f" (got {value!r:.60})"
        more = f" [+{err.error_count() - 1} more]" if err.error_count() > 1 else ""
        raise SpecError(_field_path(loc), f"{_allowed(first)}{extra}{got}{more}", shown) from None
    if spec.codebook_file:
        from thinktrace.loader import resolve_path

        try:
            guideline = resolve_path(spec.codebook_file, [base_dir or path.parent], "codebook_file").read_text(
                encoding="utf-8")
        except SpecError as err:
            raise err.with_file(shown) from None
    else:
        guideline = spec.codebook or ""
    if not guideline.strip():
        raise SpecError("codebook", "the guideline is empty", shown)
    try:
        spec.data.labels()
    except ValueError as err:
        raise SpecError("data.label_set", str(err), shown) from None
    return LoadedSpec(spec, path, guideline, base_dir)
