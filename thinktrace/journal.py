"""What a journal record of an LM call means, for every journal of a run (attempts.jsonl, predictions.jsonl,
guidelines/ratings/*.jsonl).

Each record is one call's outcome for one unit of work (a sampling slot, an item rated by a variant): an answer
(``error`` is null; an unparseable answer is an answer), a final failure (``error_kind: final``: the same call
would fail again, e.g. a 400, an empty answer after its retries) or a retryable failure (``error_kind``
connection / transient / rejected: the call never got an answer). A unit is **settled** once it has an answer or
a final failure; a retryable failure stays in the journal for the record but settles nothing: the unit is done
again on resume, and it never counts as a result (no sampling attempt used up, no prediction). Records written
before this field existed count as settled.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Hashable, Iterable

# how a call failed (``error_kind``: connection / transient / rejected / final) and the guard's per-thread tally
from thinktrace.lm.outcome import FINAL, RETRYABLE, call_tally, classify, one_line, reset_tally

EMPTY_ANSWER = "EmptyAnswer: the LM returned no text"


def begin_call() -> None:
    """Start tallying the guard's work (retries, empty answers) for the record this thread is making."""
    reset_tally()


def answered(record: dict) -> dict:
    """Add what the guard did to an answered record; an empty completion given up on is a final failure."""
    tally = call_tally()
    record["retries"] = tally["retries"]
    if tally["empty"] and record.get("label") is None and not record.get("rationale"):
        record.update(error=EMPTY_ANSWER, error_kind=FINAL)
    else:
        record.setdefault("error", None)
        record["error_kind"] = None
    return record


def failed(record: dict, err: BaseException) -> dict:
    """Fill a record for a call that raised."""
    record.update(error=one_line(err), error_kind=classify(err), retries=call_tally()["retries"])
    return record


def prediction_key(r: dict) -> tuple:
    """The unit of predictions.jsonl / prompts_dev.jsonl: one rater on one item of one split."""
    return r["split"], r["rater"], r["item_id"]


def attempt_key(r: dict) -> tuple:
    """The unit of attempts.jsonl: one sampling slot of one example."""
    return r["key"], r["strategy"], r["attempt"]


def settled(record: dict) -> bool:
    return not record.get("error") or record.get("error_kind") not in RETRYABLE


def retryable(record: dict) -> bool:
    return not settled(record)


def latest_settled(records: Iterable[dict], key: Callable[[dict], Hashable]) -> dict:
    """{unit key: its last settled record}; units with only retryable failures are absent."""
    out: dict = {}
    for r in records:
        if settled(r):
            out[key(r)] = r
    return out


def summary(records: Iterable[dict], key: Callable[[dict], Hashable]) -> dict:
    """Counts for the report: units settled / left to do, final failures by type, retryable failures journalled
    (each was or will be done again), retries spent inside calls."""
    records = list(records)
    done = latest_settled(records, key)
    units = {key(r) for r in records}
    final = [r for r in done.values() if r.get("error")]
    retry = [r for r in records if retryable(r)]
    return {
        "units": len(units), "settled": len(done), "pending": len(units - set(done)),
        "final_failures": len(final),
        "final_by_type": dict(Counter(str(r["error"]).split(":")[0] for r in final)),
        "retryable_failures": len(retry),
        "retryable_by_kind": dict(Counter(r.get("error_kind") for r in retry)),
        "in_call_retries": sum(int(r.get("retries") or 0) for r in records),
    }
