"""Run a rater program over items with one LM, in parallel, appending one prediction record per item.

A record: split, rater, item_id, human (gold label), label (parsed, None = unparseable), label_source ("output":
parsed from the answer; "choice": a cut answer completed by a local model under the label grammar), raw_label, rationale,
raw (the completion when the adapter could not parse it), error (an exception's one-line text), error_kind (see
thinktrace.journal), retries (spent inside the call), latency_s, tokens. Items with a settled record in the log
(a resumed run) are skipped; items whose calls failed retryably are rated again.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Callable, Sequence

import dspy
from tqdm.auto import tqdm

from thinktrace.data import Item
from thinktrace.errors import EndpointDown
from thinktrace.journal import answered, begin_call, failed
from thinktrace.records import ITEM, LABEL, RATIONALE
from thinktrace.rundir import JsonlLog


def usage_tokens(prediction) -> dict:
    """Prompt/completion tokens of one prediction (DSPy usage tracking), summed over LMs."""
    total = {"prompt": 0, "completion": 0}
    get = getattr(prediction, "get_lm_usage", None)
    for usage in ((get() if get else None) or {}).values():
        total["prompt"] += int(usage.get("prompt_tokens") or 0)
        total["completion"] += int(usage.get("completion_tokens") or 0)
    return total


def rate_one(program: dspy.Module, lm: dspy.LM, item: Item, adapter: dspy.Adapter | None = None) -> dict:
    """One item's prediction record. An LM error is a failed record (kept in the journal; see
    `thinktrace.journal` for which failures are done again on resume); an endpoint that is down raises."""
    start = time.perf_counter()
    record: dict = {"item_id": item.item_id, "human": item.label}
    begin_call()
    try:
        with dspy.context(lm=lm, adapter=adapter, track_usage=True):
            pred = program(**{ITEM: item.text})
        record.update(label=pred.get(LABEL), label_source=pred.get("label_source"), raw_label=pred.get("raw_label"),
                      rationale=pred.get(RATIONALE), raw=pred.get("raw"), tokens=usage_tokens(pred))
        answered(record)
    except EndpointDown:
        raise
    except Exception as err:  # an LM fault is a failed prediction, counted in the report, never a crash
        record.update(label=None, raw_label=None, rationale=None, raw=None, tokens={"prompt": 0, "completion": 0})
        failed(record, err)
    record["latency_s"] = round(time.perf_counter() - start, 3)
    return record


def _rate(program: dspy.Module, adapter: dspy.Adapter | None, lms: dict, item: Item) -> dict:
    """The rating task (picklable: a Ray worker runs it with its own LM)."""
    return rate_one(program, lms["rater"], item, adapter)


def rate_items(program: dspy.Module, lm: dspy.LM, items: Sequence[Item], log: JsonlLog, *, split: str,
               rater: str, threads: int = 4, done: set | None = None, desc: str | None = None,
               on_record: Callable[[dict], None] | None = None, adapter: dspy.Adapter | None = None,
               executor=None) -> list[dict]:
    """Rate `items` not yet in `done` (a set of item ids whose records are settled); returns the new records
    (also appended to `log`, in this process only), retryable failures included. `executor`: where the calls run
    (default: the run's, `thinktrace.execution.current_executor()`; threads: `threads` of them). EndpointDown stops
    it at once: queued items are dropped, finished ones are already journalled."""
    from thinktrace.execution import current_executor, drive

    todo = [it for it in items if not done or it.item_id not in done]
    records: list[dict] = []
    if not todo:
        return records
    executor = executor or current_executor()
    with tqdm(total=len(todo), desc=desc or f"rate {rater} [{split}]", unit="item") as bar:
        def keep(item: Item, result: dict) -> None:
            record = {"split": split, "rater": rater, **result}
            log.append(record)
            records.append(record)
            if on_record:
                on_record(record)
            bar.update(1)

        drive(executor.pool(partial(_rate, program, adapter), {"rater": lm}, threads), todo, keep)
    return records
