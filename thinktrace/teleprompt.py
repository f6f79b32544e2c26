"""Rejection sampling of thinking traces (Zhang et al., "Through the Judge's Eyes", arXiv 2510.25860).

For each training example (an item and a human label), sample up to `k` (rationale, label) pairs from the
generator LM at temperature `T`, each attempt with its own rollout id and seed; accept a rationale iff its parsed
label equals the human label (or lies within `tolerance` on an ordinal/interval scale) and its answer was not cut
(`accept_cut`, default False: an answer cut by max_tokens, or one whose label had to be written under the grammar
after it stopped short of it, has a rationale that may end mid-thought and a label the model never wrote freely, so
it never becomes a trace; it is journalled with its finish reason and counted). Sampling stops for an example once
`keep` traces are accepted. Strategies:

- blind: the generator sees guideline and item only (the paper).
- hinted: InferRationale sees the human label; the rationale is accepted only if a blind judge, given the item
  and the rationale but not the label, returns the human label.
- blind_then_hinted: hinted attempts only for examples that blind sampling left short of `keep` after k attempts.

A strategy is a `SamplingStrategy` registered by name in `thinktrace.registry.sampling_strategies` (the three above
are registered in thinktrace.sampling): the (attempt kind, attempt index) slots an example may use, in order; an attempt kind is
`blind` or `hinted` (ATTEMPT_KINDS). `RejectionSampling` looks the strategy up by name (`sampling.strategy`).

Every attempt is appended to a journal (attempts.jsonl) the moment it finishes; on resume, settled attempts are
replayed, never repeated, and an attempt whose call failed retryably (connection, 429, 5xx: see
thinktrace.journal) is made again with the same seed: it used up none of the example's k attempts. A replayed
attempt's acceptance is derived again from what the record holds (label, rationale, error, finish reason, label
source) under this run's settings (`settle`), never taken from its stored `accepted`: an attempt journalled by an
older version without a finish reason counts as cut when its label source is "choice" (the label was written after
a cut), so a resumed old journal does not keep a cut attempt as a trace; its hinted attempts recorded no sign of a
cut and count as uncut. The compiled program is the student with accepted traces as demos.
Only this process writes the journal: attempts made on Ray workers (thinktrace.execution) come back here first.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import Generator, Iterable, Iterator, Sequence

import dspy
from dspy.teleprompt import Teleprompter
from tqdm.auto import tqdm

from thinktrace.errors import EndpointDown, SpecError
from thinktrace.evaluate import usage_tokens
from thinktrace.journal import answered, begin_call, failed, latest_settled, retryable
from thinktrace.labels import LabelSet
from thinktrace.lm.guard import forget_finish, last_finish
from thinktrace.records import ITEM, LABEL, RATIONALE, record_cut
from thinktrace.sampling import ATTEMPT_KINDS, SamplingStrategy, sampling_strategy  # noqa: F401  (re-exported)
from thinktrace.rundir import JsonlLog

def attempt_seed(seed: int, key: str, strategy: str, attempt: int) -> int:
    """A stable 31-bit seed per (run seed, example, strategy, attempt): distinct rollouts, same on resume."""
    digest = hashlib.sha1(f"{seed}|{key}|{strategy}|{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class RejectionSampling(Teleprompter):
    """A DSPy teleprompter: `compile(student, trainset=..., teacher=...)` returns the student with accepted traces
    as demos; `self.attempts` holds every attempt record (also journalled to `attempts_log`)."""

    def __init__(self, label_set: LabelSet, *, generator: dspy.LM, judge: dspy.LM | None = None, k: int = 8,
                 keep: int = 1, temperature: float = 1.0, strategy: str = "blind", tolerance: float = 0.0,
                 seed: int = 0, num_threads: int = 4, attempts_log: JsonlLog | None = None, max_demos: int = 4,
                 progress: bool = True, adapter: dspy.Adapter | None = None, accept_cut: bool = False):
        super().__init__()
        self.sampling = sampling_strategy(strategy, k)  #: the SamplingStrategy named `strategy`
        if k < 1 or keep < 1 or keep > k:
            raise ValueError(f"need 1 <= keep <= k, got k={k}, keep={keep}")
        if tolerance and label_set.level == "nominal":
            raise ValueError("tolerance needs an ordinal or interval label set")
        self.label_set, self.generator, self.judge = label_set, generator, judge or generator
        self.k, self.keep, self.temperature, self.strategy = k, keep, temperature, strategy
        self.tolerance, self.seed, self.num_threads = tolerance, seed, num_threads
        self.attempts_log, self.max_demos, self.progress = attempts_log, max_demos, progress
        self.adapter, self.accept_cut = adapter, accept_cut
        self.attempts: list[dict] = []
        self.pending: dict[str, str] = {}  #: examples left short by a retryable failure -> its error

    # -- acceptance ------------------------------------------------------------------------------------------
    def accepts(self, sampled: str | None, human: str) -> bool:
        if sampled is None:
            return False
        if sampled == human:
            return True
        if self.tolerance:
            return abs(self.label_set.value(sampled) - self.label_set.value(human)) <= self.tolerance + 1e-9
        return False

    def settle(self, record: dict) -> dict:
        """Set the record's `label_match` and `accepted` from what it holds, under this sampler's settings: an
        answered attempt with a rationale whose label matches, and whose answer was not cut unless `accept_cut`
        (`thinktrace.records.record_cut`). Used for new attempts and for replayed ones alike."""
        match = self.accepts(record.get("label"), record["human"])
        record["label_match"] = match
        record["accepted"] = not record.get("error") and bool(record.get("rationale")) and match and \
            (self.accept_cut or not record_cut(record))
        return record

    # -- one attempt -----------------------------------------------------------------------------------------
    def _lm(self, seed: int, generator: dspy.LM | None = None) -> dspy.LM:
        return (generator or self.generator).copy(rollout_id=seed, temperature=self.temperature, seed=seed)

    def attempt(self, teacher, example: dspy.Example, strategy: str, index: int, *, generator: dspy.LM | None = None,
                judge: dspy.LM | None = None) -> dict:
        """One sampling slot's record (generator / judge: another process's copies of this sampler's LMs)."""
        judge = judge or self.judge
        key = example.key
        seed = attempt_seed(self.seed, key, strategy, index)
        record = {"key": key, "item_id": example.item_id, "annotator": example.get("annotator"),
                  "human": example.label, "strategy": strategy, "attempt": index, "seed": seed}
        start = time.perf_counter()
        tokens = {"prompt": 0, "completion": 0}
        begin_call()
        forget_finish()
        try:
            # finish_reason: of the call that wrote the rationale, as the program reports it (before any label
            # written under the grammar), else the LM's last one (thinktrace.lm.guard.last_finish)
            if strategy == "blind":
                with dspy.context(lm=self._lm(seed, generator), adapter=self.adapter, track_usage=True):
                    pred = teacher.blind(item=example.item)
                tokens = usage_tokens(pred)
                record.update(rationale=pred.get("rationale") or None, label=pred.label,
                              label_source=pred.get("label_source"), raw_label=pred.get("raw_label"),
                              raw=pred.get("raw"), finish_reason=pred.get("finish_reason", last_finish()),
                              error=None)
            else:
                with dspy.context(lm=self._lm(seed, generator), adapter=self.adapter, track_usage=True):
                    hint = teacher.rationalize(example.item, example.label)
                tokens = usage_tokens(hint)
                rationale = (hint.get("rationale") or "").strip() or None
                record.update(rationale=rationale, raw=hint.get("raw"), label=None, raw_label=None,
                              label_source=None, finish_reason=hint.get("finish_reason", last_finish()), error=None)
                if rationale:
                    with dspy.context(lm=judge.copy(temperature=0.0), adapter=self.adapter, track_usage=True):
                        check = teacher.verify(example.item, rationale)
                    more = usage_tokens(check)
                    tokens = {k: tokens[k] + more[k] for k in tokens}
                    record.update(label=check.label, raw_label=check.get("raw_label"),
                                  label_source=check.get("label_source",
                                                         "output" if check.label is not None else None))
            answered(record)
        except EndpointDown:
            raise
        except Exception as err:  # a faulty attempt is recorded; a retryable one uses up no attempt (journal.py)
            record.update(rationale=None, label=None, raw_label=None, raw=None, finish_reason=None)
            failed(record, err)
        self.settle(record)
        record["tokens"] = tokens
        record["latency_s"] = round(time.perf_counter() - start, 3)
        return record

    # -- one example -----------------------------------------------------------------------------------------
    def _slots(self, example: dspy.Example, journal: Sequence[dict]) -> Generator[tuple[str, int], dict, list[dict]]:
        """One example's sampling, as a generator: it yields each (strategy, attempt) slot that needs a call and
        is sent that slot's record; it returns the example's settled attempts in order. A slot whose call failed
        retryably ends the example for this run (it is in `self.pending`); resume tries that slot again."""
        done = latest_settled(journal, lambda r: (r["strategy"], r["attempt"]))
        records: list[dict] = []
        accepted = 0
        for strategy, index in self.sampling.slots(self.k):  # strategy: the attempt kind (blind / hinted)
            if accepted >= self.keep:
                break
            record = done.get((strategy, index))
            if record is None:
                record = yield strategy, index
                if retryable(record):
                    self.pending[example.key] = record["error"]
                    return records
            else:  # replayed: accepted or not under this run's settings, whatever the journal says
                record = self.settle(dict(record))
            records.append(record)
            accepted += record["accepted"]
        return records

    def _journal(self, record: dict) -> None:
        if self.attempts_log is not None:
            self.attempts_log.append(record)

    # -- the teleprompter ------------------------------------------------------------------------------------
    def sample(self, teacher, trainset: Sequence[dspy.Example], journal: Iterable[dict] = (),
               executor=None) -> list[dict]:
        """Sample every example (in parallel: `num_threads` threads, or the run's Ray workers; see
        thinktrace.execution); returns all attempt records in trainset order. Each attempt is journalled here, in
        this process, as its result arrives; an example's next slot is sampled once the last one is in."""
        from thinktrace.execution import current_executor, drive

        by_key: dict[str, list[dict]] = defaultdict(list)
        for record in journal:
            by_key[record["key"]].append(record)
        results: dict[str, list[dict]] = {}
        self.pending = {}
        plans = {ex.key: self._slots(ex, by_key.get(ex.key, ())) for ex in trainset}
        examples = {ex.key: ex for ex in trainset}
        with tqdm(total=len(trainset), desc="sample traces", unit="item", disable=not self.progress) as bar:
            n_ok = 0

            def advance(key: str, record: dict | None = None) -> list:
                nonlocal n_ok
                try:
                    strategy, index = next(plans[key]) if record is None else plans[key].send(record)
                except StopIteration as stop:
                    results[key] = stop.value
                    n_ok += any(r["accepted"] for r in stop.value)
                    bar.update(1)
                    bar.set_postfix(explained=f"{n_ok}/{bar.n}")
                    return []
                return [(examples[key], strategy, index)]

            def handle(unit, record: dict) -> list:
                self._journal(record)
                return advance(unit[0].key, record)

            first = [unit for ex in trainset for unit in advance(ex.key)]
            executor = executor or current_executor()
            pool = executor.pool(partial(_sample_slot, self, teacher),
                                 {"generator": self.generator, "judge": self.judge}, self.num_threads)
            drive(pool, first, handle)
        return [r for ex in trainset for r in results[ex.key]]

    def __getstate__(self) -> dict:  # what a Ray worker needs: the settings, not the LMs, journal or results
        drop = ("generator", "judge", "attempts_log", "attempts", "pending", "sampling")
        return {k: v for k, v in self.__dict__.items() if k not in drop}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.generator = self.judge = self.attempts_log = self.sampling = None  # a worker makes single attempts
        self.attempts, self.pending = [], {}

    def compile(self, student, *, trainset, teacher=None, valset=None, journal: Iterable[dict] = ()):
        if teacher is None:
            raise ValueError("RejectionSampling needs teacher= (a TraceInferrer: blind / rationalize / verify)")
        for ex in trainset:
            if not ex.get("key"):
                raise ValueError("every training example needs a unique `key` (item id, or item id + annotator)")
        self.attempts = self.sample(teacher, trainset, journal)
        compiled = student.deepcopy()
        demos = select_demos(accepted_traces(self.attempts, trainset), self.label_set, self.max_demos)
        predictor = judge_predictor(compiled)
        predictor.demos = demo_examples(demos)
        compiled._compiled = True
        return compiled


def _sample_slot(sampler: RejectionSampling, teacher, lms: dict, unit: tuple) -> dict:
    """The sampling task (picklable: a Ray worker runs it with its own generator and judge)."""
    example, strategy, index = unit
    return sampler.attempt(teacher, example, strategy, index, generator=lms["generator"], judge=lms["judge"])


def demo_examples(traces: Sequence[dict]) -> list[dspy.Example]:
    """Accepted traces as the judge's few-shot demos (its item input, rationale and label outputs)."""
    return [dspy.Example(**{ITEM: t[ITEM], RATIONALE: t[RATIONALE], LABEL: t[LABEL]}) for t in traces]


def judge_predictor(program: dspy.Module):
    """The program's predictor that writes the rationale and the label (the Rater's judge)."""
    for _, predictor in program.named_predictors():
        fields = predictor.signature.output_fields
        if LABEL in fields and RATIONALE in fields:
            return predictor
    raise ValueError(f"the rater program has no predictor with `{RATIONALE}` and `{LABEL}` outputs")


def accepted_traces(attempts: Sequence[dict], trainset: Sequence[dspy.Example]) -> list[dict]:
    """The trace corpus: one row per accepted attempt, in trainset order, with where its label came from and how
    its rationale's answer ended (`label_source`, `finish_reason`: a cut one is there only under `accept_cut`)."""
    items = {ex.key: ex for ex in trainset}
    rows = []
    for r in attempts:
        if r["accepted"] and r["key"] in items:
            ex = items[r["key"]]
            rows.append({"key": r["key"], "item_id": r["item_id"], "annotator": r.get("annotator"), "item": ex.item,
                         "human": r["human"], "human_labels": list(ex.get("human_labels") or [r["human"]]),
                         "label": r["label"], "rationale": r["rationale"], "strategy": r["strategy"],
                         "attempt": r["attempt"], "label_source": r.get("label_source"),
                         "finish_reason": r.get("finish_reason")})
    return rows


def select_demos(traces: Sequence[dict], label_set: LabelSet, n: int) -> list[dict]:
    """Up to n traces, balanced over labels (round robin in label-set order), deterministic."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for t in traces:
        by_label[t["label"]].append(t)
    chosen: list[dict] = []
    while len(chosen) < n and any(by_label.values()):
        for label in label_set.labels:
            if by_label.get(label) and len(chosen) < n:
                chosen.append(by_label[label].pop(0))
    return chosen
