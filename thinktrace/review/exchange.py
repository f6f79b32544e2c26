"""Review elsewhere: the traces as a Label Studio task file (JSON tasks + a labeling config: a choice accept /
reject / edit, a reason, an edited rationale), and a Label Studio JSON export read back as reviews (each
annotation's author becomes the reviewer, so a team's reviewers stay apart). The whole export is checked before
any review is written: an unknown trace or an answer that is not accept/reject/edit writes nothing."""

from __future__ import annotations

from thinktrace.review.records import ReviewError
from thinktrace.review.store import ReviewStore

LABEL_CONFIG = """<View>
  <Header value="Item"/>
  <Text name="item" value="$item"/>
  <Header value="Human labels: $human_labels (gold $human); the trace's label: $label"/>
  <Text name="rationale" value="$rationale"/>
  <Choices name="verdict" toName="rationale" choice="single" required="true">
    <Choice value="accept"/>
    <Choice value="reject"/>
    <Choice value="edit"/>
  </Choices>
  <TextArea name="reason" toName="rationale" placeholder="reason" maxSubmissions="1"/>
  <TextArea name="edited" toName="rationale" placeholder="the edited rationale (with edit)" maxSubmissions="1"/>
</View>
"""


def to_label_studio(store: ReviewStore) -> dict:
    """{"label_config": the labeling config XML, "tasks": one Label Studio task per trace (data: trace_id, item,
    human, human_labels, label, rationale, strategy)}."""
    tasks = [{"data": {"trace_id": t["id"], "item": t["item"], "human": t["human"],
                       "human_labels": ", ".join(t.get("human_labels") or [t["human"]]), "label": t["label"],
                       "rationale": t["rationale"], "strategy": t["strategy"]}} for t in store.traces]
    return {"label_config": LABEL_CONFIG, "tasks": tasks}


def _who(annotation: dict, default: str | None) -> str:
    by = annotation.get("completed_by")
    if isinstance(by, dict):
        by = by.get("email") or by.get("username") or by.get("id")
    return str(by) if by not in (None, "") else (default or "label-studio")


def _answer(annotation: dict) -> tuple[str | None, str, str | None]:
    verdict, reason, edited = None, "", None
    for r in annotation.get("result") or []:
        value = r.get("value") or {}
        if r.get("from_name") == "verdict" and value.get("choices"):
            verdict = str(value["choices"][0])
        elif r.get("from_name") == "reason" and value.get("text"):
            reason = "\n".join(map(str, value["text"]))
        elif r.get("from_name") == "edited" and value.get("text"):
            edited = "\n".join(map(str, value["text"]))
    return verdict, reason, edited


def from_label_studio(store: ReviewStore, export, reviewer: str | None = None, judge=None) -> dict:
    """Read a Label Studio JSON export (a list of tasks with `annotations`) into reviews; returns the counts."""
    if isinstance(export, dict) and "tasks" in export:
        export = export["tasks"]
    if not isinstance(export, list):
        raise ReviewError("a Label Studio export is a JSON list of tasks")
    todo, skipped = [], 0
    for n, task in enumerate(export):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise ReviewError(f"task {n}: not a Label Studio task (no `data`)")
        trace = task["data"].get("trace_id")
        store.trace(str(trace))  # unknown: ReviewError, nothing written
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
        if not annotations:
            skipped += 1
        for a in annotations:
            verdict, reason, edited = _answer(a)
            if verdict not in ("accept", "reject", "edit"):
                raise ReviewError(f"task {n} ({trace}): verdict {verdict!r} is not accept, reject or edit")
            if verdict == "edit" and not (edited or "").strip():
                raise ReviewError(f"task {n} ({trace}): an edit without the edited rationale")
            todo.append((str(trace), verdict, _who(a, reviewer), reason, edited))
    written = [store.new_review(trace, verdict, who, reason=reason, rationale=edited, judge=judge,
                                source="import:label-studio") for trace, verdict, who, reason, edited in todo]
    return {"written": len(written), "tasks_without_annotation": skipped,
            "reviewers": sorted({r.reviewer for r in written}),
            "edits_not_confirmed": sum(1 for r in written if not r.counts)}
