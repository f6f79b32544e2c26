"""The reader calls of the trace-quality check, one unit each, built from traces.jsonl and attempts.jsonl.

Per accepted trace: `masked_trace` (item + the trace with every label leak masked by `thinktrace.leak.mask`, the
main condition) and `with_trace` (item + the raw trace). Per item: `without_trace` (the item alone; shared by the
traces of an item, e.g. one per annotator). Per example (sampling key) that also has a rejected attempt with a
rationale: `masked_rejected_trace` and `rejected_trace` (item + that rationale, masked the same way, and raw; the
first one by strategy, blind before hinted, then attempt number, so the choice never depends on the order threads
finished in). A unit is journalled under (condition, unit). A masked unit whose trace the mask leaves unchanged is
the same prompt as its raw twin: it is not read again but takes the raw answer (`Unit.same_as`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from thinktrace.labels import LabelSet
from thinktrace.leak import mask
from thinktrace.records import record_cut

WITH, WITHOUT, REJECTED = "with_trace", "without_trace", "rejected_trace"
MASKED, MASKED_REJECTED = "masked_trace", "masked_rejected_trace"
CONDITIONS = (MASKED, WITH, WITHOUT, MASKED_REJECTED, REJECTED)
_STRATEGY_RANK = {"blind": 0, "hinted": 1}


@dataclass(frozen=True)
class Unit:
    """One reader call: its condition, its id within the condition, and what the reader is shown."""

    condition: str
    unit: str
    key: str  #: the sampling example (item, or item::annotator)
    item_id: str
    text: str
    human: str
    trace: str | None  #: None: the item alone
    trace_strategy: str | None = None
    trace_attempt: int | None = None
    #: (condition, unit) whose answer this unit takes: a masked trace the mask left unchanged (not read again)
    same_as: tuple[str, str] | None = None

    @property
    def trace_sha(self) -> str | None:
        """A short hash of the trace shown (journalled: a masked answer read under another mask is not reused)."""
        return None if self.trace is None else hashlib.sha1(self.trace.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:  # read by thinktrace.evaluate.rate_one as the record's `human`
        return self.human


def trace_id(trace: dict) -> str:
    """A trace's id: its example key, strategy and attempt (unique even with `sampling.keep` > 1)."""
    return f"{trace['key']}|{trace['strategy']}|{trace['attempt']}"


def first_rejected(attempts: list[dict]) -> dict[str, dict]:
    """{example key: its first rejected attempt that has a whole rationale (not cut by max_tokens) and no error}:
    the accepted traces are whole rationales by default (`sampling.accept_cut`), so the rejected ones they are
    compared with are too."""
    out: dict[str, dict] = {}
    rank = lambda r: (_STRATEGY_RANK.get(r.get("strategy"), 9), r.get("strategy") or "", r.get("attempt") or 0)  # noqa: E731
    for r in attempts:
        if r.get("accepted") or r.get("error") or not (r.get("rationale") or "").strip() or record_cut(r):
            continue
        best = out.get(r["key"])
        if best is None or rank(r) < rank(best):
            out[r["key"]] = r
    return out


def _pair(raw: Unit, condition: str, label_set: LabelSet) -> list[Unit]:
    """A raw trace's unit and its masked twin (which takes the raw answer when the mask changes nothing)."""
    masked = mask(raw.trace or "", label_set)
    same = (raw.condition, raw.unit) if masked == raw.trace else None
    twin = Unit(condition, raw.unit, raw.key, raw.item_id, raw.text, raw.human, masked, raw.trace_strategy,
                raw.trace_attempt, same_as=same)
    return [twin, raw]


def build_units(traces: list[dict], attempts: list[dict], label_set: LabelSet) -> list[Unit]:
    """Every unit of the check for these traces, in trace order: masked and raw trace, without (once per item),
    masked and raw rejected trace."""
    rejected = first_rejected(attempts)
    units: list[Unit] = []
    seen_items: set[str] = set()
    seen_keys: set[str] = set()
    for t in traces:
        base = dict(key=t["key"], item_id=t["item_id"], text=t["item"], human=t["human"])
        units += _pair(Unit(WITH, trace_id(t), trace=t["rationale"], trace_strategy=t["strategy"],
                            trace_attempt=t["attempt"], **base), MASKED, label_set)
        if t["item_id"] not in seen_items:
            seen_items.add(t["item_id"])
            units.append(Unit(WITHOUT, t["item_id"], trace=None, **base))
        r = rejected.get(t["key"])
        if r is not None and t["key"] not in seen_keys:
            seen_keys.add(t["key"])
            units += _pair(Unit(REJECTED, t["key"], trace=r["rationale"], trace_strategy=r.get("strategy"),
                                trace_attempt=r.get("attempt"), **base), MASKED_REJECTED, label_set)
    return units
