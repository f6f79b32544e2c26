"""The reader calls of the trace-quality check, one unit each, built from traces.jsonl and attempts.jsonl.

Per accepted trace: `with_trace` (item + the trace). Per item: `without_trace` (the item alone; shared by the
traces of an item, e.g. one per annotator). Per example (sampling key) that also has a rejected attempt with a
rationale: `rejected_trace` (item + that rationale; the first one by strategy, blind before hinted, then attempt
number, so the choice never depends on the order threads finished in). A unit is journalled under (condition, unit).
"""

from __future__ import annotations

from dataclasses import dataclass

WITH, WITHOUT, REJECTED = "with_trace", "without_trace", "rejected_trace"
CONDITIONS = (WITH, WITHOUT, REJECTED)
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

    @property
    def label(self) -> str:  # read by thinktrace.evaluate.rate_one as the record's `human`
        return self.human


def trace_id(trace: dict) -> str:
    """A trace's id: its example key, strategy and attempt (unique even with `sampling.keep` > 1)."""
    return f"{trace['key']}|{trace['strategy']}|{trace['attempt']}"


def first_rejected(attempts: list[dict]) -> dict[str, dict]:
    """{example key: its first rejected attempt that has a rationale and no error}."""
    out: dict[str, dict] = {}
    rank = lambda r: (_STRATEGY_RANK.get(r.get("strategy"), 9), r.get("strategy") or "", r.get("attempt") or 0)  # noqa: E731
    for r in attempts:
        if r.get("accepted") or r.get("error") or not (r.get("rationale") or "").strip():
            continue
        best = out.get(r["key"])
        if best is None or rank(r) < rank(best):
            out[r["key"]] = r
    return out


def build_units(traces: list[dict], attempts: list[dict]) -> list[Unit]:
    """Every unit of the check for these traces, in trace order: with, without (once per item), rejected."""
    rejected = first_rejected(attempts)
    units: list[Unit] = []
    seen_items: set[str] = set()
    seen_keys: set[str] = set()
    for t in traces:
        base = dict(key=t["key"], item_id=t["item_id"], text=t["item"], human=t["human"])
        units.append(Unit(WITH, trace_id(t), trace=t["rationale"], trace_strategy=t["strategy"],
                          trace_attempt=t["attempt"], **base))
        if t["item_id"] not in seen_items:
            seen_items.add(t["item_id"])
            units.append(Unit(WITHOUT, t["item_id"], trace=None, **base))
        r = rejected.get(t["key"])
        if r is not None and t["key"] not in seen_keys:
            seen_keys.add(t["key"])
            units.append(Unit(REJECTED, t["key"], trace=r["rationale"], trace_strategy=r.get("strategy"),
                              trace_attempt=r.get("attempt"), **base))
    return units
