"""The `guidelines` section of the spec, the checks and LM-call plans of the built-in optimizers, and the LM-call
plan of a refinement. The optimizers themselves are registered by name in `thinktrace.registry.guideline_optimizers`
(the built-ins by thinktrace.guidelines.strategies)."""

from __future__ import annotations

import importlib.util
import math
from typing import Mapping

from pydantic import Field, field_validator, model_validator

from thinktrace.config import Section
from thinktrace.errors import SpecError
from thinktrace.lm.config import ModelConfig
from thinktrace.registry import guideline_optimizers



DEFAULT_WRITER = "thinktrace.programs.guideline:GuidelineWriter"
GEPA_GUIDANCE = ("The instruction is an annotation guideline for raters. Keep the task's scope and the definition "
                 "of every label; add decision rules that make raters give the human label.")
KEPT_ORIGINAL_NOTE = ("the original guideline is candidate 0-0 and is scored like every other candidate; the "
                      "refined guideline (guideline.md) is the best other candidate, evaluated on test whether or not "
                      "it beats the original on dev; `best` is the dev winner (ties go to the earlier candidate)")




class GuidelinesConfig(Section):
    """Use 2: synthesize a clearer guideline from the traces and refine it on the dev split."""

    enabled: bool = Field(False, description="Synthesize and refine the guideline (needs a dev split).")
    optimizer: str = Field(
        "traces", description="How candidates are written. traces: map-reduce over the accepted thinking traces "
        "(decision rules per label, merged into the guideline), later rounds revise the best so far from its dev "
        "errors; gepa: dspy.GEPA (the writer reflects on rater outputs); mipro: dspy.MIPROv2 instruction-only "
        "(needs the optional package optuna); or the name of an optimizer registered in "
        "`thinktrace.registry.guideline_optimizers` (docs/extending.md). Every candidate is scored on dev the same "
        "way.")
    writer: str | ModelConfig | None = Field(
        None, description="The LM that writes the rules: the name of an entry in `models`, or a model entry of its "
        "own (`{provider, model, ...}` like a rater; its name defaults to `writer`). Default: the generator. The "
        "writer always gets its own LM object with writer-sized token budgets, never the rater's.")
    writer_max_tokens: int = Field(768, ge=64, description="First token budget of a writing call (the writer is "
                                   "usually also a generator or rater whose `max_tokens` fits a label and a "
                                   "sentence). A call cut by the budget is asked again with up to 4x as much, as "
                                   "far as the writer's context allows, then with half the batch.")
    writer_context: int | None = Field(None, ge=512, description="The writer's context window in tokens, which "
                                       "the writing prompts are batched to fit. Null: `llama.context` for a local "
                                       "writer (its own tokenizer counts), 8192 for a remote one (about 3 "
                                       "characters per token).")
    ablation: bool = Field(True, description="Also evaluate on test the refined guideline's rules alone and its "
                           "examples alone (each added to the original), so the report shows where the gain "
                           "comes from: Δα for rules, examples and both, paired against the original.")
    rounds: int = Field(1, ge=1, le=20, description="Refinement rounds (round 1 synthesizes, later rounds "
                        "revise / re-optimize the best guideline so far).")
    candidates: int = Field(2, ge=1, le=50, description="Candidates per round, each sampled with its own "
                            "rollout id/seed; each costs one dev evaluation of every rater.")
    batch_size: int = Field(8, ge=2, le=256, description="Most traces per writer call (map), and most rule "
                            "lists combined per call (reduce): any number of traces fits the writer's context.")
    max_traces_per_label: int | None = Field(None, ge=1, description="Use at most this many traces per label "
                                             "(traces of items the baseline raters got wrong first). Null: all.")
    examples_per_label: int = Field(0, ge=0, le=50, description="traces: also add this many human-labelled "
                                    "items per label (from the accepted traces, priority items first, a different "
                                    "mix per candidate) to each synthesized guideline, each with the first sentence "
                                    "of its trace. 0: rules only.")
    example_reasoning: bool = Field(True, description="traces: show the first sentence of each example's trace "
                                    "next to it (false: the item and its human label only).")
    contrasts: int = Field(2, ge=0, le=20, description="traces: each writing call for a label also shows up to "
                           "this many accepted traces of each neighbouring label (label order), so the rules say what "
                           "separates the label from its neighbours (a 2 from a 3). 0: the label's traces alone.")
    check_rules: bool = Field(True, description="Check every rule the writer writes: a rule that quotes an "
                              "annotated item (train traces, dev errors), states a label the way a trace does (the "
                              "label-leak detector's statement) or restates the original guideline is rewritten "
                              "once and dropped when the rewrite still has a fault; counted per reason in the "
                              "report and metrics.json (`guidelines.rule_faults`).")
    overlap_threshold: float | None = Field(0.5, ge=0.0, le=1.0, description="Neighbouring label sections (label "
                                            "order) whose content words have a Jaccard similarity above this are "
                                            "rewritten apart (one writer call per side; kept when the overlap "
                                            "drops). Every pair's overlap is reported. Null: report only.")
    compete: list[str] = Field(default_factory=list, description="Other optimizers (gepa, mipro, or registered "
                               "names) whose candidates join the same selection: each writes `candidates` "
                               "candidates per round (see `compete_rounds`, `compete_candidates`) from the best "
                               "guideline so far, scored on dev like the "
                               "main optimizer's; the best on dev wins, whatever wrote it.")
    compete_rounds: int | None = Field(None, ge=1, description="The optimizers in `compete` write in the first "
                                       "this many rounds only (later rounds: the main optimizer alone revises the "
                                       "best so far, whoever wrote it). Null: every round.")
    compete_candidates: int | None = Field(None, ge=1, description="Candidates each optimizer in `compete` writes "
                                           "per round it writes in (gepa and mipro also rate dev items inside each "
                                           "candidate run, so they cost more per candidate). Null: `candidates`.")
    max_dev_items: int | None = Field(None, ge=1, description="Score candidates on at most this many dev items "
                                      "(the first in split order). Null: the whole dev split.")
    max_train_items: int | None = Field(50, ge=1, description="gepa / mipro: most train items given to the "
                                        "optimizer as examples.")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Writer sampling temperature; > 0 so that "
                               "candidates differ.")
    gepa_max_metric_calls: int = Field(60, ge=1, description="gepa: budget in rater-program evaluations of one "
                                       "example (each runs every rater once) per candidate.")
    mipro_num_candidates: int = Field(3, ge=1, description="mipro: instructions proposed per candidate run "
                                      "(the current guideline is one of them).")
    mipro_num_trials: int = Field(4, ge=1, description="mipro: instruction trials per candidate run, each a "
                                  "full evaluation of every rater on the dev items.")

    @field_validator("optimizer")
    @classmethod
    def _registered(cls, name: str) -> str:
        try:
            guideline_optimizers.get(name, "guidelines.optimizer")
        except SpecError as err:
            raise ValueError(err.message) from None
        return name

    @field_validator("compete")
    @classmethod
    def _competitors(cls, names: list[str]) -> list[str]:
        for name in names:
            try:
                guideline_optimizers.get(name, "guidelines.compete")
            except SpecError as err:
                raise ValueError(err.message) from None
        if len(set(names)) != len(names):
            raise ValueError(f"compete names an optimizer twice: {names}")
        return names

    @model_validator(mode="after")
    def _compete_not_main(self) -> "GuidelinesConfig":
        if self.optimizer in self.compete:
            raise ValueError(f"compete names the main optimizer {self.optimizer!r}; list only the others")
        return self

    @model_validator(mode="after")
    def _writer_name(self) -> "GuidelinesConfig":
        if isinstance(self.writer, ModelConfig) and "name" not in self.writer.model_fields_set:
            object.__setattr__(self, "writer", self.writer.model_copy(update={"name": "writer"}))
        return self

    @model_validator(mode="after")
    def _diverse(self) -> "GuidelinesConfig":
        if self.temperature == 0 and self.candidates > 1:
            raise ValueError("temperature 0 makes every candidate of a round the same; use temperature > 0 or "
                             "candidates: 1")
        return self


def candidates_in(cfg: GuidelinesConfig, optimizer: str, round_: int) -> int:
    """How many candidates `optimizer` writes in round `round_` (the main one: `candidates`; a competitor:
    `compete_candidates`, none after `compete_rounds`)."""
    if optimizer == cfg.optimizer:
        return cfg.candidates
    if cfg.compete_rounds is not None and round_ > cfg.compete_rounds:
        return 0
    return cfg.compete_candidates or cfg.candidates


def _module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def check_gepa(cfg: GuidelinesConfig) -> None:
    if not _module_available("gepa"):
        raise SpecError("guidelines.optimizer", "gepa needs the package `gepa` (a dependency of dspy), which is "
                        "not installed: pip install gepa; or use optimizer: traces")


def check_mipro(cfg: GuidelinesConfig) -> None:
    if not _module_available("optuna"):
        raise SpecError("guidelines.optimizer", "mipro (dspy.MIPROv2) needs the optional package optuna, which is "
                        "not installed: pip install optuna (or dspy[optuna]); or use optimizer: traces or gepa")


def optimizer_of(cfg: GuidelinesConfig):
    """The optimizer `guidelines.optimizer` names (a SpecError on that field, naming every registered one, if
    none is registered under that name)."""
    return guideline_optimizers.get(cfg.optimizer, "guidelines.optimizer")


def check_optimizer(cfg: GuidelinesConfig) -> None:
    """Raise a SpecError naming `guidelines.optimizer` when the chosen optimizer is not registered or cannot run
    here (its optional `check(cfg)`)."""
    for name in [cfg.optimizer, *cfg.compete]:
        check = getattr(guideline_optimizers.get(name, "guidelines.optimizer"), "check", None)
        if check is not None:
            check(cfg)


def plan_calls(cfg: GuidelinesConfig, traces_per_label: Mapping[str, int], n_raters: int, n_dev: int,
               n_train: int = 0, n_labels: int | None = None, with_demos: bool = False) -> dict:
    """LM calls of a refinement, per round and in total (for a dry-run plan); an upper bound for a fresh run.

    every round, for the main optimizer and each one in `compete` (C = its candidates that round,
    `candidates_in`): C x n_raters x n_dev rater calls (dev
    scoring), plus n_raters x n_dev once for the original (and twice more with `with_demos`: the demos-only and
    the compiled program are selection candidates too);
    per candidate, the optimizer's own calls, from its optional `plan(cfg, round_, sizes)` hook (sizes: the
    arguments here, n_dev capped by max_dev_items) -> {"writer_calls", "rater_calls"} (an optimizer without one
    is counted as none):
    traces (B = batch_size, n_l = traces of label l, capped by max_traces_per_label):
      round 1 writer calls per candidate = sum_l [ceil(n_l / B) + reduce(ceil(n_l / B))], where
      reduce(m) = 0 for m <= 1, else floor(m / B) + [m mod B >= 2] + reduce(ceil(m / B)) (combine calls);
      round r >= 2: at most one writer call (revise) per label per candidate.
    Writer calls are counted without retries of cut or empty answers, rewrites of faulty rules and rewrites of
    overlapping label sections (the report counts those).
    gepa: <= gepa_max_metric_calls x n_raters rater calls inside the optimizer per candidate; writer (reflection)
      calls about one per reflective step, at most gepa_max_metric_calls / 2.
    mipro: mipro_num_trials x n_dev x n_raters rater calls per candidate; writer calls about
      mipro_num_candidates + ceil(n_train / 10) + 2 (dataset summary and proposals).
    """
    dev = min(n_dev, cfg.max_dev_items or n_dev)
    scoring = n_raters * dev
    names = [cfg.optimizer, *cfg.compete]
    plans = [getattr(guideline_optimizers.get(name, "guidelines.optimizer"), "plan", None) for name in names]
    sizes = {"traces_per_label": dict(traces_per_label), "n_raters": n_raters, "n_dev": dev, "n_train": n_train,
             "n_labels": n_labels}
    rounds = []
    for r in range(1, cfg.rounds + 1):
        writer = rater = 0
        for name, plan in zip(names, plans):
            c = candidates_in(cfg, name, r)
            own = plan(cfg, r, sizes) if plan is not None and c else {}
            writer += c * own.get("writer_calls", 0)
            rater += c * (scoring + own.get("rater_calls", 0))
        rounds.append({"round": r, "writer_calls": writer, "rater_calls": rater})
    once = scoring * (3 if with_demos else 1)
    return {"original_rater_calls": scoring, "rounds": rounds,
            "writer_calls": sum(r["writer_calls"] for r in rounds),
            "rater_calls": once + sum(r["rater_calls"] for r in rounds)}


def plan_traces(cfg: GuidelinesConfig, round_: int, sizes: dict) -> dict:
    """optimizer `traces`: writer calls of one candidate (see plan_calls)."""
    def reduce_calls(m: int) -> int:
        total = 0
        while m > 1:
            total += m // cfg.batch_size + (1 if m % cfg.batch_size >= 2 else 0)
            m = math.ceil(m / cfg.batch_size)
        return total

    per_label = sizes["traces_per_label"]
    if round_ == 1:
        counts = [min(n, cfg.max_traces_per_label or n) for n in per_label.values() if n > 0]
        maps = [math.ceil(n / cfg.batch_size) for n in counts]
        return {"writer_calls": sum(m + reduce_calls(m) for m in maps), "rater_calls": 0}
    return {"writer_calls": sizes["n_labels"] or max(1, len(per_label)), "rater_calls": 0}


def plan_gepa(cfg: GuidelinesConfig, round_: int, sizes: dict) -> dict:
    return {"writer_calls": max(1, cfg.gepa_max_metric_calls // 2),
            "rater_calls": cfg.gepa_max_metric_calls * sizes["n_raters"]}


def plan_mipro(cfg: GuidelinesConfig, round_: int, sizes: dict) -> dict:
    train = min(sizes["n_train"], cfg.max_train_items or sizes["n_train"])
    return {"writer_calls": cfg.mipro_num_candidates + math.ceil(train / 10) + 2,
            "rater_calls": cfg.mipro_num_trials * sizes["n_dev"] * sizes["n_raters"]}
