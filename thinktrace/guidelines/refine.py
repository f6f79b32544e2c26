"""The refinement loop: candidates written by a strategy, scored on dev by mean α across raters, resumable
from its log folder; `refine_guideline` is the entry point."""

from __future__ import annotations

import inspect
import json
from collections import defaultdict
from pathlib import Path
from typing import Callable, Collection, Mapping, Sequence

import dspy

from thinktrace.agreement import rater_vs_human
from thinktrace.data import Item
from thinktrace.errors import RunIncomplete, SpecError
from thinktrace.journal import settled
from thinktrace.evaluate import rate_items
from thinktrace.labels import LabelSet
from thinktrace.loader import load_object
from thinktrace.records import Prediction
from thinktrace.rundir import JsonlLog, json_safe, write_atomic

from thinktrace.guidelines.config import (DEFAULT_WRITER, KEPT_ORIGINAL_NOTE, GuidelinesConfig, candidates_in,
                                          check_optimizer, optimizer_of)
from thinktrace.guidelines.rater_programs import adapter_of, factory_of
from thinktrace.guidelines.rule_check import FAULTS
from thinktrace.guidelines.selection import select
from thinktrace.guidelines.writer import rollout_seed, writer_limits
from thinktrace.registry import guideline_optimizers


#: candidate kinds that are programs (a guideline with demos), never the refined guideline nor a text copy
PROGRAM_KINDS = ("demos-only", "compiled")


# -- the refinement -------------------------------------------------------------------------------------------
class _Refinement:
    def __init__(self, cfg: GuidelinesConfig, *, original, traces, writer_lm, raters, rater_factory, dev_items,
                 label_set, adapter, seed, n_boot, log_dir, priority, train_items, threads, writer_adapter,
                 writer_program=None, demo_factory=None):
        self.cfg, self.original, self.traces = cfg, original, list(traces)
        self.writer_lm, self.raters, self.rater_factory = writer_lm, dict(raters), rater_factory
        self.dev = list(dev_items)[: cfg.max_dev_items or None]
        self.label_set, self.adapter, self.seed, self.n_boot = label_set, adapter, seed, n_boot
        self.writer_adapter = writer_adapter if writer_adapter is not None else \
            adapter_of(adapter, next(iter(self.raters), ""))
        self.priority, self.train_items = set(priority or ()), train_items
        self.threads = threads
        self.demo_factory = demo_factory
        self.optimizer_name = cfg.optimizer  #: the optimizer writing the current candidate (main or competitor)
        self.writer_program = writer_program or load_object(DEFAULT_WRITER, [], "programs.writer")
        self.log_dir = Path(log_dir)
        (self.log_dir / "candidates").mkdir(parents=True, exist_ok=True)
        (self.log_dir / "ratings").mkdir(parents=True, exist_ok=True)
        self.table = JsonlLog(self.log_dir / "candidates.jsonl")
        self.rows: list[dict] = []
        self.texts: dict[str, str] = {}
        self.sections: dict[str, dict] = {}  #: per candidate: rules {label: text}, examples_text (code-assembled)
        self.metas: dict[str, dict] = {}
        self._finished = self._read_finished()

    # -- bookkeeping -----------------------------------------------------------------------------------------
    def _read_finished(self) -> dict[str, dict]:
        """Rows of candidates.jsonl scored with the same raters on the same number of dev items (last wins)."""
        finished = {}
        for row in self.table:
            if set(row.get("alpha", {})) == set(self.raters) and row.get("n_dev") == len(self.dev):
                finished[row["id"]] = row
        return finished

    def _threads(self, name: str) -> int:
        return self.threads.get(name, 4) if isinstance(self.threads, Mapping) else self.threads

    def _writer(self):
        cfg = self.cfg
        generalise = {"contrasts": cfg.contrasts, "check_rules": cfg.check_rules,
                      "overlap_threshold": cfg.overlap_threshold,
                      "train_texts": [it.text for it in self.train_items or ()]}
        try:  # a user's writer program without these options still runs (it gets none of them)
            accepted = inspect.signature(self.writer_program).parameters
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
                generalise = {k: v for k, v in generalise.items() if k in accepted}
        except (TypeError, ValueError):
            generalise = {}
        return self.writer_program(self.label_set, batch_size=cfg.batch_size,
                   max_traces_per_label=cfg.max_traces_per_label,
                   examples_per_label=cfg.examples_per_label, example_reasoning=cfg.example_reasoning,
                   **writer_limits(self.writer_lm, cfg), **generalise)

    # -- scoring ---------------------------------------------------------------------------------------------
    def ratings(self, cid: str) -> dict[str, dict[str, dict]]:
        """{rater: {item_id: record}} of a candidate's dev ratings log (a copy's: its original's)."""
        row = next((r for r in self.rows if r["id"] == cid), None)
        cid = (row or {}).get("same_as") or cid
        out: dict[str, dict[str, dict]] = defaultdict(dict)
        for r in JsonlLog(self.log_dir / "ratings" / f"{cid}.jsonl", model=Prediction):
            if settled(r):  # a rating whose call failed retryably is no rating: it is made again
                out[r["rater"]][r["item_id"]] = r
        return out

    def score(self, cid: str, text: str, factory=None) -> dict:
        log = JsonlLog(self.log_dir / "ratings" / f"{cid}.jsonl", model=Prediction)
        have = self.ratings(cid)
        ids = [it.item_id for it in self.dev]
        for name, lm in self.raters.items():
            if all(i in have[name] for i in ids):
                continue
            program = factory_of(factory or self.rater_factory, name)(text)
            for r in rate_items(program, lm, self.dev, log, split="dev", rater=name, threads=self._threads(name),
                                done=set(have[name]), adapter=adapter_of(self.adapter, name),
                                desc=f"guideline {cid} [{name}]"):
                if settled(r):
                    have[name][r["item_id"]] = r
        left = {name: sum(1 for i in ids if i not in have[name]) for name in self.raters}
        if any(left.values()):  # a candidate is scored only on complete ratings, never on the survivors
            raise RunIncomplete("guidelines", f"candidate {cid}: " + ", ".join(
                f"{n} dev ratings of {name} failed retryably" for name, n in left.items() if n))
        human = [it.label for it in self.dev]
        alpha, est, coverage = {}, {}, {}
        for name in self.raters:
            result = rater_vs_human(human, [have[name][i]["label"] for i in ids], self.label_set,
                                    n_boot=self.n_boot, seed=self.seed)
            est[name] = result["alpha"]
            alpha[name] = result["alpha"]["value"]
            coverage[name] = result["coverage"]
        # an undefined α (e.g. nothing parsed) counts as 0: chance level
        mean = sum(a if a is not None else 0.0 for a in alpha.values()) / len(alpha)
        return {"alpha": alpha, "alpha_est": est, "coverage": coverage, "mean": mean, "n_dev": len(ids)}

    # -- candidates ------------------------------------------------------------------------------------------
    def candidate(self, round_: int, index: int, parent: dict | None, make: Callable[[int], tuple[str, dict]],
                  optimizer: str | None = None, cid: str | None = None, factory=None) -> dict:
        """Write (or read back) and score one candidate. optimizer: the competitor writing it (its id is then
        `<round>-<optimizer><index>`); cid + factory: a program candidate (demos only, compiled) whose text is
        rated by `factory`'s programs, never taken for a copy of a text candidate."""
        optimizer = optimizer or self.cfg.optimizer
        cid = cid or (f"{round_}-{index}" if optimizer == self.cfg.optimizer else f"{round_}-{optimizer}{index}")
        md = self.log_dir / "candidates" / f"{cid}.md"
        meta_path = self.log_dir / "candidates" / f"{cid}.json"
        if md.exists() and meta_path.exists():  # written before: never regenerated
            text = md.read_text(encoding="utf-8")
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        else:
            rollout = rollout_seed(self.seed, optimizer, round_, index)
            text, meta = make(rollout)
            meta = {"id": cid, "round": round_, "index": index, "parent": parent["id"] if parent else None,
                    "rollout_id": rollout if round_ else None, **meta}
            write_atomic(md, text)
            write_atomic(meta_path, json.dumps(json_safe(meta), indent=2, ensure_ascii=False) + "\n")
        self.texts[cid] = text
        self.sections[cid] = {"rules": meta.get("rules") or {}, "examples_text": meta.get("examples_text") or "",
                              "missing_rules": meta.get("missing_rules") or [],
                              "structured": "examples_text" in meta}
        self.metas[cid] = meta
        row = self._finished.get(cid)
        if row is None:
            same = None if factory is not None else next(
                (r for r in self.rows if self.texts[r["id"]] == text and r.get("kind") not in PROGRAM_KINDS), None)
            scores = {k: same[k] for k in ("alpha", "alpha_est", "coverage", "mean", "n_dev")} if same else \
                self.score(cid, text, factory)
            row = {"id": cid, "round": round_, "index": index, "parent": meta.get("parent"),
                   "kind": meta.get("kind"), "file": f"candidates/{cid}.md", "chars": len(text),
                   **scores, "same_as": same["id"] if same else None,
                   "writer_calls": meta.get("writer_calls", 0), "fallbacks": meta.get("fallbacks", [])}
            self.table.append(row)
        self.rows.append(row)
        return row

    def labels_of(self, cid: str) -> dict[str, list]:
        """{rater: dev labels in dev order} of a scored candidate."""
        have = self.ratings(cid)
        return {name: [have[name][it.item_id]["label"] for it in self.dev] for name in self.raters}

    def rule_report(self, cid: str) -> dict:
        """What the rule check and the overlap check did for one candidate (none for gepa / mipro texts)."""
        meta = self.metas.get(cid) or {}
        return {"rule_faults": meta.get("rule_faults"), "overlap": meta.get("overlap"),
                "rules_dropped": len(meta.get("dropped_rules") or [])}

    def rule_faults_total(self) -> dict:
        total = {f: {"found": 0, "rewritten": 0, "dropped": 0} for f in FAULTS}
        for meta in self.metas.values():
            for fault, counts in (meta.get("rule_faults") or {}).items():
                row = total.setdefault(fault, {"found": 0, "rewritten": 0, "dropped": 0})
                for k in row:
                    row[k] += int(counts.get(k) or 0)
        return total

    @staticmethod
    def _top(rows: Sequence[dict]) -> dict:
        """The row with the highest mean dev α; ties go to the earlier row."""
        best = rows[0]
        for row in rows[1:]:
            if row["mean"] > best["mean"]:
                best = row
        return best

    def best(self) -> dict:
        """The dev winner among all candidates, the original included."""
        return self._top(self.rows)

    def best_synthesized(self) -> dict:
        """The best candidate other than the original (the refinement's own output, reported on test whether or
        not it beats the original on dev)."""
        written = [r for r in self.rows[1:] if r.get("kind") not in PROGRAM_KINDS]
        # a candidate that left the original unchanged (e.g. a competitor that found nothing) is the original
        changed = [r for r in written if self.texts[r["id"]].strip() != self.original.strip()]
        return self._top(changed or written)

    # -- what the writer did, and what the refined guideline is made of ---------------------------------------
    def writer_stats(self) -> dict:
        """Calls, truncations, retries and fallbacks per writer stage (map, reduce, revise), over candidates
        written in this run folder (a resumed run reads them back from the candidates' json)."""
        total: dict[str, dict[str, int]] = {}
        for meta in self.metas.values():
            for stage, st in (meta.get("writer_stats") or {}).items():
                row = total.setdefault(stage, {"calls": 0, "truncated": 0, "retries": 0, "fallbacks": 0})
                for k in row:
                    row[k] += int(st.get(k) or 0)
        return total

    def refined_parts(self, cid: str) -> dict:
        """The refined guideline's sections, whether its rules cover every label its traces have, and the texts
        of its ablations (original + rules only, original + examples only) when it has both parts."""
        sec = self.sections.get(cid) or {}
        if not sec.get("structured"):  # gepa / mipro instructions: one text, no sections
            return {"refined_sections": None, "ablation_texts": {}}
        rules, examples = sec["rules"], sec["examples_text"]
        traced = sorted({str(t["human"]) for t in self.traces}, key=lambda lb: (lb not in self.label_set.labels,
                        self.label_set.labels.index(lb) if lb in self.label_set.labels else 0, lb))
        out = {"refined_sections": {"rules_labels": list(rules), "traced_labels": traced,
                                    "labels_without_rules": [lb for lb in traced if lb not in rules],
                                    "rules_chars": sum(len(t) for t in rules.values()),
                                    "examples_lines": len([ln for ln in examples.splitlines() if ln.strip()]),
                                    "rules_empty": not rules},
               "ablation_texts": {}}
        if self.cfg.ablation and rules and examples.strip():
            render = self.writer_program.render
            out["ablation_texts"] = {"rules": render(self.original, rules, ""),
                                     "examples": render(self.original, {}, examples)}
        return out

    # -- the loop --------------------------------------------------------------------------------------------
    def run(self) -> dict:
        original = self.candidate(0, 0, None, lambda _: (self.original, {"kind": "original", "writer_calls": 0,
                                                                         "fallbacks": []}))
        names = [self.cfg.optimizer, *self.cfg.compete]
        for round_ in range(1, self.cfg.rounds + 1):
            parent = self.best()
            for name in names:  # competitors write into the same pool, from the same best-so-far
                optimizer = guideline_optimizers.get(name, "guidelines.optimizer")
                self.optimizer_name = name
                for index in range(candidates_in(self.cfg, name, round_)):
                    make = optimizer(self, round_, index, parent)
                    self.candidate(round_, index, parent, make, optimizer=name)
            self.optimizer_name = self.cfg.optimizer
        best = self.best()
        refined = self.best_synthesized()
        if self.demo_factory is not None:  # the trace demos compete too: alone, and with the refined guideline
            for cid, kind, text in (("demos", "demos-only", self.original),
                                    ("compiled", "compiled", self.texts[refined["id"]])):
                self.candidate(0, 0, None, lambda _, k=kind, t=text: (t, {"kind": k, "writer_calls": 0,
                                                                          "fallbacks": []}),
                               cid=cid, factory=self.demo_factory)
        # the pool: the original, every candidate that changed it, and the programs with demos
        pool = [original] + [r for r in self.rows[1:] if r.get("kind") in PROGRAM_KINDS
                             or self.texts[r["id"]].strip() != self.original.strip()]
        selection = select(pool, original["id"], self.labels_of, [it.label for it in self.dev],
                           self.label_set, self.n_boot, self.seed)
        result = {
            "optimizer": self.cfg.optimizer,
            "best": self.texts[best["id"]],
            "best_id": best["id"],
            "best_dev": {k: best[k] for k in ("alpha", "alpha_est", "coverage", "mean")},
            "original_dev": {k: original[k] for k in ("alpha", "alpha_est", "coverage", "mean")},
            "kept_original": selection["kept_original"],
            "selection": selection,
            # what the run hands out (programs/<rater>.json): the candidate the selection chose, with the trace
            # demos when it is a program with demos (demos only: the original guideline; compiled: the refined one)
            "chosen": self.texts[selection["chosen"]],
            "chosen_demos": selection.get("chosen_kind") in PROGRAM_KINDS,
            "rule_faults": self.rule_report(refined["id"])["rule_faults"],
            "overlap": self.rule_report(refined["id"])["overlap"],
            "rules_dropped": self.rule_report(refined["id"])["rules_dropped"],
            "rule_faults_all_candidates": self.rule_faults_total(),
            "overlap_threshold": self.cfg.overlap_threshold,
            "compete": list(self.cfg.compete),
            "refined": self.texts[refined["id"]],
            "refined_id": refined["id"],
            "refined_dev": {k: refined[k] for k in ("alpha", "alpha_est", "coverage", "mean")},
            "refined_beats_original": refined["mean"] > original["mean"],
            "refined_changed": self.texts[refined["id"]].strip() != self.original.strip(),
            "note": KEPT_ORIGINAL_NOTE,
            "candidates": self.rows,
            "fallbacks": sum(len(r.get("fallbacks") or []) for r in self.rows),
            "writer_calls": sum(r.get("writer_calls") or 0 for r in self.rows),
            "writer_stats": self.writer_stats(),
            **self.refined_parts(refined["id"]),
            "n_dev": len(self.dev),
            "raters": list(self.raters),
        }
        (self.log_dir / "summary.json").write_text(
            json.dumps(json_safe({k: v for k, v in result.items() if k not in ("best", "refined", "ablation_texts")}),
                       indent=2, ensure_ascii=False)
            + "\n", encoding="utf-8")
        return result




def refine_guideline(cfg: GuidelinesConfig, *, original: str, traces: Sequence[dict], writer_lm: dspy.LM,
                     raters: Mapping[str, dspy.LM],
                     rater_factory: Callable[[str], dspy.Module] | Mapping[str, Callable[[str], dspy.Module]],
                     dev_items: Sequence[Item], label_set: LabelSet,
                     adapter: dspy.Adapter | Mapping[str, dspy.Adapter] | None = None,
                     seed: int = 0, n_boot: int = 200, log_dir: str | Path, priority: Collection[str] = (),
                     train_items: Sequence[Item] | None = None, threads: int | Mapping[str, int] = 4,
                     writer_adapter: dspy.Adapter | None = None, writer_program: type | None = None,
                     demo_factory: Callable[[str], dspy.Module] | Mapping[str, Callable[[str], dspy.Module]] | None
                     = None) -> dict:
    """Refine `original` over cfg.rounds x cfg.candidates candidates; return the best on dev.

    traces: accepted trace rows (item_id, item, human, rationale, ...). writer_lm: the LM that writes candidates
    (each candidate uses `writer_lm.copy(rollout_id=..., temperature=cfg.temperature)`). raters: {name: LM}, all
    of which score every candidate. rater_factory(guideline) -> the rater program (e.g. Rater(guideline,
    label_set)), one for all or {rater: factory} (a rater prompted with its own answer order). dev_items: the dev split (the first cfg.max_dev_items are used). adapter: the raters' prompt
    format, one for all or {rater: adapter} (the writer uses writer_adapter, default: the first rater's). priority: item ids whose traces the writer reads
    first (items the baseline raters got wrong). train_items: gepa / mipro examples (default: the traced items).
    threads: parallel dev ratings per rater (an int or {rater: n}). demo_factory(guideline) -> the rater program
    with the trace demos (one for all or {rater: factory}): the demos-only program (original guideline) and the
    compiled program (refined guideline) then compete in the selection as candidates `demos` and `compiled`.

    Selection (`selection`, thinktrace.guidelines.selection): the dev winner among all candidates is chosen only
    when a paired bootstrap of mean Δα against the original has its 95 % CI above 0; else the original is kept
    (`kept_original`), with the reason. `selection.power` states the dev size needed to detect Δα 0.10 at 80 %
    power from dev's paired variance. `rule_faults`, `rules_dropped` and `overlap`: what the rule check and the
    overlap check did for the refined guideline (`rule_faults_all_candidates`: summed over candidates).

    Returns {"best": text, "best_id": "<round>-<index>", "best_dev", "original_dev": {"alpha": {rater: value},
    "alpha_est": {rater: Estimate dict}, "coverage", "mean"}, "kept_original", "note", "candidates": [rows in
    order], "fallbacks": n (writer fallbacks recorded over all candidates), "writer_calls", "n_dev", "raters"}.
    Raises SpecError (field guidelines.optimizer) when the optimizer cannot run here.
    """
    check_optimizer(cfg)
    if not raters:
        raise SpecError("models.raters", "guideline refinement needs at least one rater")
    if not dev_items:
        raise SpecError("data.split.dev", "guideline refinement scores candidates on the dev split, which is empty")
    return _Refinement(cfg, original=original, traces=traces, writer_lm=writer_lm, raters=raters,
                       rater_factory=rater_factory, dev_items=dev_items, label_set=label_set, adapter=adapter,
                       seed=seed, n_boot=n_boot, log_dir=log_dir, priority=priority, train_items=train_items,
                       threads=threads, writer_adapter=writer_adapter, writer_program=writer_program,
                       demo_factory=demo_factory).run()
