"""How candidates are made, one optimizer per `guidelines.optimizer`, registered by name in
`thinktrace.registry.guideline_optimizers`: from traces (map-reduce rules, then revisions from dev errors) or by
DSPy's instruction optimizers (GEPA, MIPROv2).

A guideline optimizer is a callable `(refinement, round_, index, parent) -> make`, called once per candidate
(round_ >= 1, index < guidelines.candidates; parent: the candidates.jsonl row of the best candidate so far, the
original `0-0` in round 1); `make(rollout) -> (text, meta)` writes the candidate's guideline text, with `rollout` its
stable seed / rollout id, and `meta` a JSON-able dict stored in `candidates/<id>.json` (`kind`, `writer_calls`,
`fallbacks`: a list; optional `rules` {label: text} and `examples_text` for the rules / examples ablation). The
refinement (`thinktrace.guidelines.refine._Refinement`) offers cfg, original, traces, dev, train_items, writer_lm,
writer_adapter, raters, rater_factory, texts {id: text}, ratings(id), log_dir. Optional attributes of the callable:
`check(cfg)` (raise a SpecError on `guidelines.optimizer` when it cannot run here) and `plan(cfg, round_, sizes)
-> {"writer_calls", "rater_calls"}` per candidate, for the dry-run plan (thinktrace.guidelines.config.plan_calls).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Collection, Sequence

import dspy

from thinktrace.data import Item
from thinktrace.errors import SpecError
from thinktrace.registry import guideline_optimizers

from thinktrace.guidelines.config import (GEPA_GUIDANCE, check_gepa, check_mipro, plan_gepa, plan_mipro,
                                          plan_traces)
from thinktrace.guidelines.panel import RaterPanel, panel_feedback_metric, panel_metric
from thinktrace.guidelines.rater_programs import _judge, guideline_from_instructions, factory_of
from thinktrace.guidelines.writer import writer_copy


def priority_from_traces(traces: Sequence[dict]) -> set[str]:
    """Items the generator first got wrong with the original guideline (no extra LM calls): those whose accepted
    trace is not the first blind attempt (a later attempt, or the hinted strategy)."""
    return {t["item_id"] for t in traces if t.get("strategy") != "blind" or (t.get("attempt") or 0) > 0}


def priority_from_ratings(records: Sequence[dict], raters: Collection[str] | None = None) -> set[str]:
    """Items some rater labelled differently from the human (prediction records: item_id, rater, human, label;
    unparsed outputs count as wrong)."""
    return {r["item_id"] for r in records if (raters is None or r.get("rater") in raters)
            and r.get("label") != r.get("human")}




# -- how candidates are made (called with the refinement) -----------------------------------------------------------------------------
def from_traces(ref, index: int) -> Callable[[int], tuple[str, dict]]:
    def make(rollout: int) -> tuple[str, dict]:
        writer = ref._writer()
        wlm = writer_copy(ref.writer_lm, rollout, ref.cfg.temperature, ref.cfg.writer_max_tokens)
        with dspy.context(lm=wlm, adapter=ref.writer_adapter):
            pred = writer(guideline=ref.original, traces=ref.traces, priority=ref.priority,
                          order_seed=None if index == 0 else rollout)
        return pred.guideline, {"kind": "traces", "writer_calls": pred.calls, "fallbacks": pred.fallbacks,
                                "writer_stats": pred.stats, "rules": pred.rules,
                                "examples_text": pred.examples_text, "missing_rules": pred.missing,
                                "batches": pred.batches, "examples": pred.get("examples") or {},
                                **_generalise(pred)}
    return make

def _generalise(pred) -> dict:
    """What the rule check and the overlap check did (a writer program without them: nothing)."""
    return {k: pred.get(k) for k in ("rule_faults", "dropped_rules", "overlap") if pred.get(k) is not None}


def dev_errors(ref, cid: str) -> list[dict]:
    """Dev items some rater labelled (parsable and) differently from the human; most-missed first,
    alternating over human labels."""
    have = ref.ratings(cid)
    rows = []
    for n, it in enumerate(ref.dev):
        said = {name: {"label": have[name][it.item_id]["label"], "rationale": have[name][it.item_id]["rationale"]}
                for name in ref.raters if it.item_id in have[name]}
        wrong = sum(1 for v in said.values() if v["label"] is not None and v["label"] != it.label)
        if wrong:
            rows.append((-wrong, n, {"item_id": it.item_id, "item": it.text, "human": it.label, "said": said}))
    by_label: dict[str, list[dict]] = defaultdict(list)
    for _, _, row in sorted(rows, key=lambda r: r[:2]):
        by_label[row["human"]].append(row)
    out = []
    while any(by_label.values()):
        for label in list(by_label):
            if by_label[label]:
                out.append(by_label[label].pop(0))
    return out

def revision(ref, parent: dict) -> Callable[[int], tuple[str, dict]]:
    def make(rollout: int) -> tuple[str, dict]:
        errors = dev_errors(ref, parent["id"])
        writer = ref._writer()
        wlm = writer_copy(ref.writer_lm, rollout, ref.cfg.temperature, ref.cfg.writer_max_tokens)
        sections = ref.sections.get(parent["id"]) or {}
        with dspy.context(lm=wlm, adapter=ref.writer_adapter):
            pred = writer.revise(ref.original, sections.get("rules") or {}, errors,
                                 examples_text=sections.get("examples_text") or "")
        return pred.guideline, {"kind": "revision", "writer_calls": pred.calls, "fallbacks": pred.fallbacks,
                                "writer_stats": pred.stats, "rules": pred.rules,
                                "examples_text": pred.examples_text, "missing_rules": [],
                                "errors_shown": pred.errors_shown, **_generalise(pred)}
    return make

def examples(ref, items: Sequence) -> list[dspy.Example]:
    return [dspy.Example(item_id=it.item_id, item=it.text, label=it.label).with_inputs("item") for it in items]

def trainset(ref) -> list[dspy.Example]:
    if ref.train_items is not None:
        items = list(ref.train_items)
    else:  # the traced train items, one per item, with the human label
        seen, items = set(), []
        for t in ref.traces:
            if t["item_id"] not in seen:
                seen.add(t["item_id"])
                items.append(Item(t["item_id"], t["item"], str(t["human"]), [], [], "train"))
    items = items[: ref.cfg.max_train_items or None]
    if not items:
        raise SpecError("guidelines.optimizer", f"{ref.optimizer_name} needs train items (none given, no traces)")
    return examples(ref, items)


def optimized(ref, parent: dict, name: str) -> Callable[[int], tuple[str, dict]]:
    """One run of dspy.GEPA (name "gepa") or dspy.MIPROv2 (any other) from the parent guideline."""
    def make(rollout: int) -> tuple[str, dict]:
        cfg = ref.cfg
        student = RaterPanel(factory_of(ref.rater_factory)(ref.texts[parent["id"]]), ref.raters, ref.adapter)
        wlm = writer_copy(ref.writer_lm, rollout, cfg.temperature, cfg.writer_max_tokens)
        train, devset = trainset(ref), examples(ref, ref.dev)
        threads = max(ref._threads(n) for n in ref.raters)
        with dspy.context(adapter=ref.writer_adapter):
            if name == "gepa":
                from dspy.teleprompt.gepa import InstructionProposer

                # GEPA's own proposer, in the writer's prompt format (its default, JSON, is hard for small LMs)
                proposer = InstructionProposer(additional_instructions=GEPA_GUIDANCE, adapter=ref.writer_adapter)
                opt = dspy.GEPA(metric=panel_feedback_metric, max_metric_calls=cfg.gepa_max_metric_calls,
                                reflection_lm=wlm, instruction_proposer=proposer,
                                reflection_minibatch_size=min(3, len(train)),
                                use_merge=False, num_threads=threads, seed=rollout,
                                log_dir=str(ref.log_dir / "gepa" / f"{rollout}"))
                compiled = opt.compile(student, trainset=train, valset=devset)
            else:
                opt = dspy.MIPROv2(metric=panel_metric, prompt_model=wlm, task_model=next(iter(ref.raters.values())),
                                   max_bootstrapped_demos=0, max_labeled_demos=0, auto=None,
                                   num_candidates=cfg.mipro_num_candidates, num_threads=threads, seed=rollout,
                                   verbose=False, track_stats=False)
                compiled = opt.compile(student, trainset=train, valset=devset,
                                       num_trials=cfg.mipro_num_trials, minibatch=False,
                                       program_aware_proposer=False, data_aware_proposer=True,
                                       tip_aware_proposer=True, fewshot_aware_proposer=False)
        instructions = _judge(compiled).signature.instructions
        text = guideline_from_instructions(instructions, factory_of(ref.rater_factory))
        fallbacks = []
        if not text.strip():
            fallbacks.append({"stage": name, "label": None,
                              "what": "the optimizer returned empty instructions: guideline unchanged"})
            text = ref.texts[parent["id"]]
        # writer calls as DSPy's history of this candidate's writer copy records them (cache hits included)
        return text, {"kind": name, "writer_calls": len(getattr(wlm, "history", None) or []),
                      "fallbacks": fallbacks,
                      "instructions": instructions}
    return make



def traces_strategy(ref, round_: int, index: int, parent: dict):
    """optimizer `traces`: round 1 writes rules from the traces, later rounds revise the best so far."""
    return from_traces(ref, index) if round_ == 1 else revision(ref, parent)


def gepa_strategy(ref, round_: int, index: int, parent: dict):
    """optimizer `gepa`: one run of dspy.GEPA from the best guideline so far."""
    return optimized(ref, parent, "gepa")


def mipro_strategy(ref, round_: int, index: int, parent: dict):
    """optimizer `mipro`: one run of dspy.MIPROv2 (instructions only) from the best guideline so far."""
    return optimized(ref, parent, "mipro")


traces_strategy.plan = plan_traces
gepa_strategy.check, gepa_strategy.plan = check_gepa, plan_gepa
mipro_strategy.check, mipro_strategy.plan = check_mipro, plan_mipro

#: the built-in optimizers: how each `guidelines.optimizer` makes a candidate
BUILTIN_OPTIMIZERS = {"traces": traces_strategy, "gepa": gepa_strategy, "mipro": mipro_strategy}
for _name, _optimizer in BUILTIN_OPTIMIZERS.items():
    try:
        guideline_optimizers.register(_name, _optimizer)
    except ValueError:  # the user's own, registered under a built-in name before this import: theirs is kept
        pass
