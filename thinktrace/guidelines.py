"""Use 2: synthesize and refine the annotation guideline, scored by agreement with humans across all raters.

`refine_guideline` runs R rounds x C candidates. The original guideline is candidate `0-0`; every candidate is
scored on the dev items by the MEAN Krippendorff α (rater vs human) over all configured raters, so the guideline
is not tuned to one model. The best candidate other than the original is the refined guideline (`refined`), which
the pipeline evaluates on test beside the original whether or not it won on dev, so the report always shows what
synthesis did; `best` is the dev winner among all candidates, the original included (ties go to the earlier
candidate, so a synthesis that does not beat the original on dev is never called the winner), and later rounds
revise it.

- optimizer `traces`: round 1 candidates are written from the accepted thinking traces by
  the writer program (`programs.writer`, default thinktrace.programs.guideline:GuidelineWriter: map-reduce per
  label, priority items first, rules assembled with the original in code); round r+1
  candidates revise the best guideline so far from the dev items its raters got wrong.
- optimizer `gepa` / `mipro`: each candidate is one run of DSPy's own instruction optimizer (dspy.GEPA with the
  writer as reflection LM; dspy.MIPROv2 instruction-only, the writer as prompt model) on the rater program over
  train/dev examples, starting from the best guideline so far; the optimized instructions are read back as the
  guideline and scored on dev exactly like trace candidates. The rater program they optimize runs every rater on
  each item (metric: the fraction of raters that give the human label).

Everything is written under `log_dir` as it happens, so a rerun resumes: `candidates/<round>-<index>.md` (the
text) with `<id>.json` (how it was made: parent, writer calls, fallbacks, rules), `ratings/<id>.jsonl` (one dev
prediction per rater and item) and `candidates.jsonl` (one row per scored candidate). Finished candidates are
neither regenerated nor rescored; a candidate killed while being scored keeps its text and its finished ratings.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Collection, Literal, Mapping, Sequence

import dspy
from pydantic import Field, model_validator

from thinktrace.agreement import rater_vs_human
from thinktrace.config import Section
from thinktrace.data import Item
from thinktrace.errors import RunIncomplete, SpecError
from thinktrace.journal import settled
from thinktrace.evaluate import rate_items
from thinktrace.labels import LabelSet
from thinktrace.lm.config import ModelConfig
from thinktrace.loader import load_object
from thinktrace.records import Prediction
from thinktrace.rundir import JsonlLog, json_safe, write_atomic

logger = logging.getLogger(__name__)

OPTIMIZERS = ("traces", "gepa", "mipro")
DEFAULT_WRITER = "thinktrace.programs.guideline:GuidelineWriter"
GEPA_GUIDANCE = ("The instruction is an annotation guideline for raters. Keep the task's scope and the definition "
                 "of every label; add decision rules that make raters give the human label.")
KEPT_ORIGINAL_NOTE = ("the original guideline is candidate 0-0 and is scored like every other candidate; the "
                      "refined guideline (guideline.md) is the best other candidate, evaluated on test whether or not "
                      "it beats the original on dev; `best` is the dev winner (ties go to the earlier candidate)")


class GuidelinesConfig(Section):
    """Use 2: synthesize a clearer guideline from the traces and refine it on the dev split."""

    enabled: bool = Field(False, description="Synthesize and refine the guideline (needs a dev split).")
    optimizer: Literal["traces", "gepa", "mipro"] = Field(
        "traces", description="How candidates are written. traces: map-reduce over the accepted thinking traces "
        "(decision rules per label, merged into the guideline), later rounds revise the best so far from its dev "
        "errors; gepa: dspy.GEPA (the writer reflects on rater outputs); mipro: dspy.MIPROv2 instruction-only "
        "(needs the optional package optuna). Every candidate is scored on dev the same way.")
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


# -- helpers --------------------------------------------------------------------------------------------------
def _module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def check_optimizer(cfg: GuidelinesConfig) -> None:
    """Raise a SpecError naming `guidelines.optimizer` when the chosen optimizer cannot run here."""
    if cfg.optimizer == "gepa" and not _module_available("gepa"):
        raise SpecError("guidelines.optimizer", "gepa needs the package `gepa` (a dependency of dspy), which is "
                        "not installed: pip install gepa; or use optimizer: traces")
    if cfg.optimizer == "mipro" and not _module_available("optuna"):
        raise SpecError("guidelines.optimizer", "mipro (dspy.MIPROv2) needs the optional package optuna, which is "
                        "not installed: pip install optuna (or dspy[optuna]); or use optimizer: traces or gepa")


def plan_calls(cfg: GuidelinesConfig, traces_per_label: Mapping[str, int], n_raters: int, n_dev: int,
               n_train: int = 0, n_labels: int | None = None) -> dict:
    """LM calls of a refinement, per round and in total (for a dry-run plan); an upper bound for a fresh run.

    traces (B = batch_size, n_l = traces of label l, capped by max_traces_per_label):
      round 1 writer calls per candidate = sum_l [ceil(n_l / B) + reduce(ceil(n_l / B))], where
      reduce(m) = 0 for m <= 1, else floor(m / B) + [m mod B >= 2] + reduce(ceil(m / B)) (combine calls);
      round r >= 2: at most one writer call (revise) per label per candidate.
    Writer calls are counted without retries of cut or empty answers (the report counts those).
    every round: C x n_raters x n_dev rater calls (dev scoring), plus n_raters x n_dev once for the original.
    gepa: <= gepa_max_metric_calls x n_raters rater calls inside the optimizer per candidate; writer (reflection)
      calls about one per reflective step, at most gepa_max_metric_calls / 2.
    mipro: mipro_num_trials x n_dev x n_raters rater calls per candidate; writer calls about
      mipro_num_candidates + ceil(n_train / 10) + 2 (dataset summary and proposals).
    """
    c = cfg.candidates
    dev = min(n_dev, cfg.max_dev_items or n_dev)
    scoring = n_raters * dev

    def reduce_calls(m: int) -> int:
        total = 0
        while m > 1:
            total += m // cfg.batch_size + (1 if m % cfg.batch_size >= 2 else 0)
            m = math.ceil(m / cfg.batch_size)
        return total

    rounds = []
    for r in range(1, cfg.rounds + 1):
        if cfg.optimizer == "traces":
            if r == 1:
                counts = [min(n, cfg.max_traces_per_label or n) for n in traces_per_label.values() if n > 0]
                maps = [math.ceil(n / cfg.batch_size) for n in counts]
                writer = sum(m + reduce_calls(m) for m in maps)
            else:
                writer = n_labels or max(1, len(traces_per_label))
            inner = 0
        elif cfg.optimizer == "gepa":
            writer = max(1, cfg.gepa_max_metric_calls // 2)
            inner = cfg.gepa_max_metric_calls * n_raters
        else:
            train = min(n_train, cfg.max_train_items or n_train)
            writer = cfg.mipro_num_candidates + math.ceil(train / 10) + 2
            inner = cfg.mipro_num_trials * dev * n_raters
        rounds.append({"round": r, "writer_calls": c * writer, "rater_calls": c * (scoring + inner)})
    return {"original_rater_calls": scoring, "rounds": rounds,
            "writer_calls": sum(r["writer_calls"] for r in rounds),
            "rater_calls": scoring + sum(r["rater_calls"] for r in rounds)}


def priority_from_traces(traces: Sequence[dict]) -> set[str]:
    """Items the generator first got wrong with the original guideline (no extra LM calls): those whose accepted
    trace is not the first blind attempt (a later attempt, or the hinted strategy)."""
    return {t["item_id"] for t in traces if t.get("strategy") != "blind" or (t.get("attempt") or 0) > 0}


def priority_from_ratings(records: Sequence[dict], raters: Collection[str] | None = None) -> set[str]:
    """Items some rater labelled differently from the human (prediction records: item_id, rater, human, label;
    unparsed outputs count as wrong)."""
    return {r["item_id"] for r in records if (raters is None or r.get("rater") in raters)
            and r.get("label") != r.get("human")}


def rollout_seed(seed: int, optimizer: str, round_: int, index: int) -> int:
    """A stable 31-bit rollout id / seed per candidate (distinct samples, the same on resume)."""
    digest = hashlib.sha1(f"{seed}|guideline|{optimizer}|{round_}|{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def writer_copy(lm: dspy.LM, rollout: int, temperature: float, max_tokens: int = 768) -> dspy.LM:
    """The writer LM for one candidate: a writer-sized token budget (at least `max_tokens`), its own rollout id
    (its own cache entries) and, for in-process engines (`local/...`), its own sampling seed. Remote providers get
    no seed (some reject it)."""
    budget = max(int(lm.kwargs.get("max_tokens") or 0), int(max_tokens))
    if temperature == 0:
        return lm.copy(temperature=0.0, max_tokens=budget)
    kwargs = {"rollout_id": rollout, "temperature": temperature, "max_tokens": budget}
    if str(getattr(lm, "model", "")).startswith("local/"):
        kwargs["seed"] = rollout
    return lm.copy(**kwargs)


def writer_limits(lm: dspy.LM, cfg: GuidelinesConfig) -> dict:
    """How the writer program sizes its calls for this LM: the first budget, the cap of a retry, the context
    window and a token counter (a local model's own tokenizer; else about 3 characters per token)."""
    engine = getattr(lm, "_engine_spec", None)
    server = getattr(engine, "server", None)
    count = None
    context = cfg.writer_context
    if server is not None and hasattr(server, "settings"):
        context = context or int(server.settings.context)
        tokenizer = server.tokenizer

        def count(text: str) -> int:  # noqa: F811
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    context = context or 8192
    first = min(cfg.writer_max_tokens, context // 2)
    return {"max_tokens": first, "max_tokens_cap": max(first, min(4 * first, context - 256)),
            "context_tokens": context, "count_tokens": count}


_SENTINEL = "@@THINKTRACE-GUIDELINE@@"


def _judge(program: dspy.Module):
    from thinktrace.teleprompt import judge_predictor

    return judge_predictor(program)


def guideline_from_instructions(instructions: str, rater_factory: Callable[[str], dspy.Module]) -> str:
    """The guideline inside a rater's judge instructions: what rater_factory adds around a guideline (found by
    building a rater around a sentinel) is stripped, so rater_factory(result) does not repeat it."""
    probe = _judge(rater_factory(_SENTINEL)).signature.instructions
    text = instructions.strip()
    if _SENTINEL in probe:
        prefix, suffix = (p.strip() for p in probe.split(_SENTINEL, 1))
        if prefix and text.startswith(prefix):
            text = text[len(prefix):].strip()
        if suffix and text.endswith(suffix):
            text = text[: -len(suffix)].strip()
    return text


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "rater"


def write_rater_programs(best_guideline: str, raters: Collection[str] | Mapping[str, object],
                         rater_factory: Callable[[str], dspy.Module] | Mapping[str, Callable], out_dir: str | Path, *,
                         original: str | None = None) -> dict:
    """Write `guideline.md` (and `guideline.original.md` when `original` is given) and one compiled rater
    program per rater, `programs/<rater>.json` (DSPy JSON, `program.save`): the judge's instructions carry the
    guideline. The programs name no LM (no provider state, no keys): load one with
    `rater_factory(...).load(path)` and run it under `dspy.context(lm=...)`. Returns the paths written."""
    out = Path(out_dir)
    (out / "programs").mkdir(parents=True, exist_ok=True)
    paths: dict = {"guideline": out / "guideline.md", "programs": {}}
    write_atomic(paths["guideline"], best_guideline.rstrip() + "\n")
    if original is not None:
        paths["original"] = out / "guideline.original.md"
        write_atomic(paths["original"], original.rstrip() + "\n")
    for name in raters:
        program = factory_of(rater_factory, str(name))(best_guideline)
        program._compiled = True
        path = out / "programs" / f"{_slug(str(name))}.json"
        program.save(str(path))
        paths["programs"][str(name)] = path
    return paths


def factory_of(rater_factory, rater: str | None = None):
    """The rater program factory of one rater: `rater_factory` itself, or its entry in a {rater: factory} mapping
    (the first entry when rater is None or not in it)."""
    if isinstance(rater_factory, Mapping):
        return rater_factory.get(rater) or next(iter(rater_factory.values()))
    return rater_factory


def adapter_of(adapter: "dspy.Adapter | Mapping[str, dspy.Adapter] | None", rater: str):
    """The prompt format of one rater: `adapter` itself, or its entry when it is a {rater: adapter} mapping."""
    return adapter.get(rater) if isinstance(adapter, Mapping) else adapter


# -- the rater panel optimized by gepa / mipro ----------------------------------------------------------------
class _Shared:
    """LMs and the adapter, shared (not copied) by deep copies of the panel: LMs hold engines and locks."""

    def __init__(self, raters: Mapping[str, dspy.LM], adapter):
        self.raters = dict(raters)
        self.adapters = {name: adapter_of(adapter, name) for name in self.raters}

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self


class RaterPanel(dspy.Module):
    """The rater program run by every rater on each item: what gepa / mipro optimize, so the instructions they
    find are judged by all raters at once. Prediction: `label` (the most frequent parsed label) and `said`
    ({rater: {label, rationale}})."""

    def __init__(self, rater: dspy.Module, raters: Mapping[str, dspy.LM], adapter=None):
        super().__init__()
        self.rater = rater
        self.shared = _Shared(raters, adapter)

    def forward(self, item: str) -> dspy.Prediction:
        said = {}
        for name, lm in self.shared.raters.items():
            with dspy.context(lm=lm, adapter=self.shared.adapters[name]):
                pred = self.rater(item=item)
            said[name] = {"label": pred.get("label"), "rationale": pred.get("rationale")}
        top = Counter(v["label"] for v in said.values() if v["label"]).most_common(1)
        return dspy.Prediction(label=top[0][0] if top else None, said=said)


def panel_score(gold, pred) -> float:
    said = (pred.get("said") if pred is not None else None) or {}
    return sum(v["label"] == gold.label for v in said.values()) / len(said) if said else 0.0


def panel_metric(gold, pred, trace=None) -> float:
    """MIPROv2 / Evaluate metric: the fraction of raters that gave the human label."""
    return panel_score(gold, pred)


def panel_feedback_metric(gold, pred, trace=None, pred_name=None, pred_trace=None) -> dspy.Prediction:
    """GEPA metric: the same score, with feedback naming the human label and what each rater said."""
    score = panel_score(gold, pred)
    said = (pred.get("said") if pred is not None else None) or {}
    parts = [f"The human label is {gold.label}."]
    for name, v in said.items():
        verdict = "right" if v["label"] == gold.label else "wrong"
        parts.append(f"Rater {name} said {v['label'] or 'an unparseable label'} ({verdict})"
                     + (f", reasoning: {' '.join(str(v['rationale']).split())[:300]}" if v.get("rationale") else ""))
    return dspy.Prediction(score=score, feedback=" ".join(parts))


# -- the refinement -------------------------------------------------------------------------------------------
class _Refinement:
    def __init__(self, cfg: GuidelinesConfig, *, original, traces, writer_lm, raters, rater_factory, dev_items,
                 label_set, adapter, seed, n_boot, log_dir, priority, train_items, threads, writer_adapter,
                 writer_program=None):
        self.cfg, self.original, self.traces = cfg, original, list(traces)
        self.writer_lm, self.raters, self.rater_factory = writer_lm, dict(raters), rater_factory
        self.dev = list(dev_items)[: cfg.max_dev_items or None]
        self.label_set, self.adapter, self.seed, self.n_boot = label_set, adapter, seed, n_boot
        self.writer_adapter = writer_adapter if writer_adapter is not None else \
            adapter_of(adapter, next(iter(self.raters), ""))
        self.priority, self.train_items = set(priority or ()), train_items
        self.threads = threads
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
        return self.writer_program(self.label_set, batch_size=self.cfg.batch_size,
                   max_traces_per_label=self.cfg.max_traces_per_label,
                   examples_per_label=self.cfg.examples_per_label, example_reasoning=self.cfg.example_reasoning,
                   **writer_limits(self.writer_lm, self.cfg))

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

    def score(self, cid: str, text: str) -> dict:
        log = JsonlLog(self.log_dir / "ratings" / f"{cid}.jsonl", model=Prediction)
        have = self.ratings(cid)
        ids = [it.item_id for it in self.dev]
        for name, lm in self.raters.items():
            if all(i in have[name] for i in ids):
                continue
            program = factory_of(self.rater_factory, name)(text)
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
    def candidate(self, round_: int, index: int, parent: dict | None, make: Callable[[int], tuple[str, dict]]) -> dict:
        cid = f"{round_}-{index}"
        md = self.log_dir / "candidates" / f"{cid}.md"
        meta_path = self.log_dir / "candidates" / f"{cid}.json"
        if md.exists() and meta_path.exists():  # written before: never regenerated
            text = md.read_text(encoding="utf-8")
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        else:
            rollout = rollout_seed(self.seed, self.cfg.optimizer, round_, index)
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
            same = next((r for r in self.rows if self.texts[r["id"]] == text), None)
            scores = {k: same[k] for k in ("alpha", "alpha_est", "coverage", "mean", "n_dev")} if same else \
                self.score(cid, text)
            row = {"id": cid, "round": round_, "index": index, "parent": meta.get("parent"),
                   "kind": meta.get("kind"), "file": f"candidates/{cid}.md", "chars": len(text),
                   **scores, "same_as": same["id"] if same else None,
                   "writer_calls": meta.get("writer_calls", 0), "fallbacks": meta.get("fallbacks", [])}
            self.table.append(row)
        self.rows.append(row)
        return row

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
        return self._top(self.rows[1:])

    # -- how candidates are made -----------------------------------------------------------------------------
    def from_traces(self, index: int) -> Callable[[int], tuple[str, dict]]:
        def make(rollout: int) -> tuple[str, dict]:
            writer = self._writer()
            wlm = writer_copy(self.writer_lm, rollout, self.cfg.temperature, self.cfg.writer_max_tokens)
            with dspy.context(lm=wlm, adapter=self.writer_adapter):
                pred = writer(guideline=self.original, traces=self.traces, priority=self.priority,
                              order_seed=None if index == 0 else rollout)
            return pred.guideline, {"kind": "traces", "writer_calls": pred.calls, "fallbacks": pred.fallbacks,
                                    "writer_stats": pred.stats, "rules": pred.rules,
                                    "examples_text": pred.examples_text, "missing_rules": pred.missing,
                                    "batches": pred.batches, "examples": pred.get("examples") or {}}
        return make

    def dev_errors(self, cid: str) -> list[dict]:
        """Dev items some rater labelled (parsable and) differently from the human; most-missed first,
        alternating over human labels."""
        have = self.ratings(cid)
        rows = []
        for n, it in enumerate(self.dev):
            said = {name: {"label": have[name][it.item_id]["label"], "rationale": have[name][it.item_id]["rationale"]}
                    for name in self.raters if it.item_id in have[name]}
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

    def revision(self, parent: dict) -> Callable[[int], tuple[str, dict]]:
        def make(rollout: int) -> tuple[str, dict]:
            errors = self.dev_errors(parent["id"])
            writer = self._writer()
            wlm = writer_copy(self.writer_lm, rollout, self.cfg.temperature, self.cfg.writer_max_tokens)
            sections = self.sections.get(parent["id"]) or {}
            with dspy.context(lm=wlm, adapter=self.writer_adapter):
                pred = writer.revise(self.original, sections.get("rules") or {}, errors,
                                     examples_text=sections.get("examples_text") or "")
            return pred.guideline, {"kind": "revision", "writer_calls": pred.calls, "fallbacks": pred.fallbacks,
                                    "writer_stats": pred.stats, "rules": pred.rules,
                                    "examples_text": pred.examples_text, "missing_rules": [],
                                    "errors_shown": pred.errors_shown}
        return make

    def examples(self, items: Sequence) -> list[dspy.Example]:
        return [dspy.Example(item_id=it.item_id, item=it.text, label=it.label).with_inputs("item") for it in items]

    def trainset(self) -> list[dspy.Example]:
        if self.train_items is not None:
            items = list(self.train_items)
        else:  # the traced train items, one per item, with the human label
            seen, items = set(), []
            for t in self.traces:
                if t["item_id"] not in seen:
                    seen.add(t["item_id"])
                    items.append(Item(t["item_id"], t["item"], str(t["human"]), [], [], "train"))
        items = items[: self.cfg.max_train_items or None]
        if not items:
            raise SpecError("guidelines.optimizer", f"{self.cfg.optimizer} needs train items (none given, no traces)")
        return self.examples(items)

    def optimized(self, parent: dict) -> Callable[[int], tuple[str, dict]]:
        def make(rollout: int) -> tuple[str, dict]:
            cfg = self.cfg
            student = RaterPanel(factory_of(self.rater_factory)(self.texts[parent["id"]]), self.raters, self.adapter)
            wlm = writer_copy(self.writer_lm, rollout, cfg.temperature, cfg.writer_max_tokens)
            trainset, devset = self.trainset(), self.examples(self.dev)
            threads = max(self._threads(n) for n in self.raters)
            with dspy.context(adapter=self.writer_adapter):
                if cfg.optimizer == "gepa":
                    from dspy.teleprompt.gepa import InstructionProposer

                    # GEPA's own proposer, in the writer's prompt format (its default, JSON, is hard for small LMs)
                    proposer = InstructionProposer(additional_instructions=GEPA_GUIDANCE, adapter=self.writer_adapter)
                    opt = dspy.GEPA(metric=panel_feedback_metric, max_metric_calls=cfg.gepa_max_metric_calls,
                                    reflection_lm=wlm, instruction_proposer=proposer,
                                    reflection_minibatch_size=min(3, len(trainset)),
                                    use_merge=False, num_threads=threads, seed=rollout,
                                    log_dir=str(self.log_dir / "gepa" / f"{rollout}"))
                    compiled = opt.compile(student, trainset=trainset, valset=devset)
                else:
                    opt = dspy.MIPROv2(metric=panel_metric, prompt_model=wlm, task_model=next(iter(self.raters.values())),
                                       max_bootstrapped_demos=0, max_labeled_demos=0, auto=None,
                                       num_candidates=cfg.mipro_num_candidates, num_threads=threads, seed=rollout,
                                       verbose=False, track_stats=False)
                    compiled = opt.compile(student, trainset=trainset, valset=devset,
                                           num_trials=cfg.mipro_num_trials, minibatch=False,
                                           program_aware_proposer=False, data_aware_proposer=True,
                                           tip_aware_proposer=True, fewshot_aware_proposer=False)
            instructions = _judge(compiled).signature.instructions
            text = guideline_from_instructions(instructions, factory_of(self.rater_factory))
            fallbacks = []
            if not text.strip():
                fallbacks.append({"stage": cfg.optimizer, "label": None,
                                  "what": "the optimizer returned empty instructions: guideline unchanged"})
                text = self.texts[parent["id"]]
            # writer calls as DSPy's history of this candidate's writer copy records them (cache hits included)
            return text, {"kind": cfg.optimizer, "writer_calls": len(getattr(wlm, "history", None) or []),
                          "fallbacks": fallbacks,
                          "instructions": instructions}
        return make

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
        for round_ in range(1, self.cfg.rounds + 1):
            parent = self.best()
            for index in range(self.cfg.candidates):
                if self.cfg.optimizer != "traces":
                    make = self.optimized(parent)
                elif round_ == 1:
                    make = self.from_traces(index)
                else:
                    make = self.revision(parent)
                self.candidate(round_, index, parent, make)
        best = self.best()
        refined = self.best_synthesized()
        result = {
            "optimizer": self.cfg.optimizer,
            "best": self.texts[best["id"]],
            "best_id": best["id"],
            "best_dev": {k: best[k] for k in ("alpha", "alpha_est", "coverage", "mean")},
            "original_dev": {k: original[k] for k in ("alpha", "alpha_est", "coverage", "mean")},
            "kept_original": best["id"] == original["id"],
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
                     writer_adapter: dspy.Adapter | None = None, writer_program: type | None = None) -> dict:
    """Refine `original` over cfg.rounds x cfg.candidates candidates; return the best on dev.

    traces: accepted trace rows (item_id, item, human, rationale, ...). writer_lm: the LM that writes candidates
    (each candidate uses `writer_lm.copy(rollout_id=..., temperature=cfg.temperature)`). raters: {name: LM}, all
    of which score every candidate. rater_factory(guideline) -> the rater program (e.g. Rater(guideline,
    label_set)), one for all or {rater: factory} (a rater prompted with its own answer order). dev_items: the dev split (the first cfg.max_dev_items are used). adapter: the raters' prompt
    format, one for all or {rater: adapter} (the writer uses writer_adapter, default: the first rater's). priority: item ids whose traces the writer reads
    first (items the baseline raters got wrong). train_items: gepa / mipro examples (default: the traced items).
    threads: parallel dev ratings per rater (an int or {rater: n}).

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
                       threads=threads, writer_adapter=writer_adapter, writer_program=writer_program).run()
