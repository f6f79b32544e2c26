"""A run folder as the review page and the reviewed resume see it: its traces (read-only), each with its human
labels, its example's rejected attempts, the trace-quality reader's answers and what the label-leak detector finds;
and the review journal (thinktrace.review.records), read strictly (a line that is not a review, or names a trace
the run does not have, is a tampered file: one-line error) and appended to under a lock, fsynced."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import yaml
from pydantic import ValidationError

from thinktrace.journal import latest_settled
from thinktrace.labels import LabelSet
from thinktrace.leak import find_leaks, states_label
from thinktrace.records import record_cut
from thinktrace.review.records import JOURNAL, JudgeUnavailable, Review, ReviewError
from thinktrace.rundir import JsonlLog, json_safe
from thinktrace.trace_quality.units import trace_id

#: the agreement between reviewers is α on these two values (a confirmed edit keeps its trace: accept)
VERDICTS = ("accept", "reject")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _spec(path: Path) -> dict:
    try:
        spec = yaml.safe_load((path / "spec.resolved.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return spec if isinstance(spec, dict) else {}


def label_set_of(path: Path, spec: dict) -> LabelSet:
    """The run's label set (spec.resolved.yaml `data`, else metrics.json `data`), synonyms included."""
    data = spec.get("data") if isinstance(spec.get("data"), dict) else {}
    labels, level = data.get("label_set"), data.get("level") or "nominal"
    if not labels:
        try:
            metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
            labels, level = metrics["data"]["label_set"], metrics["data"].get("level") or level
        except (OSError, ValueError, KeyError, TypeError):
            raise ReviewError(f"{path}: no label set (neither spec.resolved.yaml nor metrics.json names one)") \
                from None
    if isinstance(labels, dict):  # label_set: {labels: [...], ...} forms
        labels = labels.get("labels") or list(labels)
    return LabelSet.of(labels, level=level, synonyms=data.get("label_synonyms") or {})


class ReviewStore:
    """One run folder's traces and reviews. Thread-safe appends (one server process, many tabs)."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir)
        if not self.path.is_dir():
            raise ReviewError(f"{self.path}: no such run folder")
        tpath = self.path / "traces.jsonl"
        if not tpath.is_file():
            raise ReviewError(f"{self.path}: no traces.jsonl in this run folder (nothing to review: run the traces "
                              "stage first, `thinktrace compile SPEC --resume RUN_DIR`)")
        try:
            self.traces = [dict(t, id=trace_id(t)) for t in JsonlLog(tpath)]
        except (KeyError, TypeError) as err:
            raise ReviewError(f"{tpath}: a line is not a trace (missing {err})") from None
        if not self.traces:
            raise ReviewError(f"{tpath}: no accepted trace in this run (nothing to review)")
        self.by_id = {t["id"]: t for t in self.traces}
        self.spec = _spec(self.path)
        self.label_set = label_set_of(self.path, self.spec)
        self.tolerance = float((self.spec.get("sampling") or {}).get("tolerance") or 0)
        attempts = list(latest_settled(JsonlLog(self.path / "attempts.jsonl"),
                                       lambda r: (r.get("key"), r.get("strategy"), r.get("attempt"))).values())
        self.rejected: dict[str, list[dict]] = defaultdict(list)
        for r in attempts:
            if not r.get("accepted") and not r.get("error") and (r.get("rationale") or "").strip():
                self.rejected[r["key"]].append(r)
        # trace id -> {condition: the reader's label}: its own units (masked / raw trace), its item's (without a
        # trace) and its example's (a rejected trace, masked / raw) (thinktrace.trace_quality.units)
        self.reads: dict[str, dict[str, str | None]] = defaultdict(dict)
        by_unit: dict[str, list[str]] = defaultdict(list)
        for t in self.traces:
            for unit in {t["id"], str(t["item_id"]), t["key"]}:
                by_unit[unit].append(t["id"])
        for r in JsonlLog(self.path / "trace_quality.jsonl"):
            if r.get("error") or not isinstance(r.get("unit"), str):
                continue
            own = r.get("condition") in ("masked_trace", "with_trace")
            for tid in by_unit.get(r["unit"], ()):
                if own == (tid == r["unit"]):
                    self.reads[tid][r.get("condition")] = r.get("label")
        self.journal = self.path / JOURNAL
        self._lock = threading.Lock()
        self._size = -1
        self._effective: dict[tuple, dict[str, Review]] = {}
        self.reviews: list[Review] = []
        self.refresh()

    # -- the journal -------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the journal again when it changed since this store last read or wrote it (another process, e.g. a
        second server or an import, appended to it); a tampered file raises ReviewError."""
        with self._lock:
            size = self.journal.stat().st_size if self.journal.exists() else 0
            if size != self._size:
                self.reviews, self._size = self._read(), size

    def _read(self) -> list[Review]:
        """Every review line, checked: a torn last line (a kill mid-write) is left out; any other line that is not
        a review of one of this run's traces makes the journal tampered (ReviewError naming the line)."""
        if not self.journal.exists():
            return []
        try:
            text = self.journal.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ReviewError(f"{self.journal}: unreadable ({err.__class__.__name__}: {err})") from None
        lines = text.split("\n")
        complete = lines[:-1]  # the part after the last newline is empty, or a torn line
        out = []
        for n, line in enumerate(complete, 1):
            if not line.strip():
                continue
            try:
                review = Review.model_validate(json.loads(line))
            except json.JSONDecodeError as err:
                raise ReviewError(f"{self.journal} line {n}: not JSON ({err.msg}); the file was edited by hand "
                                  "(fix or remove that line; no review was written)") from None
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(map(str, first["loc"])) or "record"
                raise ReviewError(f"{self.journal} line {n}: not a review record ({where}: {first['msg']})") from None
            if review.trace not in self.by_id:
                raise ReviewError(f"{self.journal} line {n}: names trace {review.trace!r}, which this run's "
                                  "traces.jsonl does not have (a reviews file of another run?)")
            out.append(review)
        return out

    def append(self, review: Review) -> Review:
        line = json.dumps(json_safe(review.model_dump(mode="json")), ensure_ascii=False) + "\n"
        with self._lock:
            self._set_aside_torn_tail()
            with open(self.journal, "ab") as fh:
                fh.write(line.encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
                size = fh.tell()
            if size == self._size + len(line.encode("utf-8")):
                self.reviews.append(review)  # nobody else wrote in between
                self._size = size
            else:
                self.reviews, self._size = self._read(), self.journal.stat().st_size
        return review

    def _set_aside_torn_tail(self) -> None:
        """A journal that ends inside a line (a kill mid-write): that fragment was never a review; it moves to
        reviews.jsonl.torn (kept for the record) so the next review starts a line of its own and the journal
        stays whole."""
        if not self.journal.exists():
            return
        with open(self.journal, "r+b") as fh:
            data = fh.read()
            if not data or data.endswith(b"\n"):
                return
            cut = data.rfind(b"\n") + 1
            with open(self.journal.with_name(self.journal.name + ".torn"), "ab") as torn:
                torn.write(data[cut:] + b"\n")
                torn.flush()
                os.fsync(torn.fileno())
            fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())

    def new_review(self, trace: str, action: str, reviewer: str, *, reason: str = "", source: str = "api",
                   rationale: str | None = None, judge=None) -> Review:
        """A review of `trace`, checked (unknown trace, empty edit: ReviewError), appended and returned. An edit
        needs `judge` (thinktrace.review.judge): the edited rationale is read blind before the line is written."""
        self.refresh()  # a tampered journal stops here: nothing is appended to it
        t = self.trace(trace)
        fields = dict(id=uuid.uuid4().hex, trace=trace, item_id=str(t["item_id"]), reviewer=reviewer, at=now(),
                      action=action, reason=reason or "", source=source)
        if action == "edit":
            text = (rationale or "").strip()
            if not text:
                raise ReviewError("an edit needs the new rationale (empty text)")
            if text == (self.current(t, reviewer)["rationale"] or "").strip():
                raise ReviewError("the edited rationale is the same as the current one (use accept)")
            if judge is None:
                raise ReviewError("no blind judge to check the edit with (start the review with the run's spec)")
            try:
                check = judge.check(t["item"], text)
            except ReviewError:
                raise
            except Exception as err:  # the judge's LM failed: the edit is not written, the page keeps its text
                from thinktrace.lm.outcome import one_line

                raise JudgeUnavailable(f"the blind judge could not read the edit ({one_line(err)}); nothing was "
                                       "written: try again") from None
            fields.update(rationale=text, before=t["rationale"],
                          judge={**check, "agrees": self.agrees(check.get("label"), t["human"])})
        try:
            review = Review.model_validate(fields)
        except ValidationError as err:
            first = err.errors()[0]
            raise ReviewError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        return self.append(review)

    def trace(self, trace: str) -> dict:
        if trace not in self.by_id:
            raise ReviewError(f"unknown trace id {trace!r} (ids are key|strategy|attempt, see GET /api/traces)")
        return self.by_id[trace]

    def agrees(self, label: str | None, human: str) -> bool:
        if label is None:
            return False
        if label == human:
            return True
        if self.tolerance and self.label_set.numeric:
            return abs(self.label_set.value(label) - self.label_set.value(human)) <= self.tolerance + 1e-9
        return False

    # -- effective reviews -------------------------------------------------------------------------------------
    def reviewers(self) -> list[str]:
        """Reviewers in the order of their first review."""
        return list(dict.fromkeys(r.reviewer for r in self.reviews))

    def primary(self, reviewer: str | None = None) -> str | None:
        """Whose reviews make the reviewed set: `reviewer`, else the first who reviewed."""
        return reviewer or next(iter(self.reviewers()), None)

    def effective(self, reviewer: str | None) -> dict[str, Review]:
        """{trace id: the last counting review of `reviewer`} (an unconfirmed edit never counts)."""
        reviews = self.reviews
        key = (reviewer, id(reviews), len(reviews))  # the journal as read now (a re-read is a new list)
        cached = self._effective.get(key)
        if cached is not None:
            return cached
        out: dict[str, Review] = {}
        for r in reviews:
            if r.reviewer == reviewer and r.counts:
                out[r.trace] = r
        self._effective = {k: v for k, v in self._effective.items() if k[1:] == key[1:]}
        self._effective[key] = out
        return out

    def current(self, t: dict, reviewer: str | None) -> dict:
        """The trace as `reviewer`'s reviews leave it: rationale (edited or not), status."""
        r = self.effective(reviewer).get(t["id"])
        status = "unreviewed" if r is None else {"accept": "accepted", "reject": "rejected", "edit": "edited"}[r.action]
        return {"status": status, "rationale": r.rationale if r is not None and r.action == "edit" else t["rationale"],
                "review": r.model_dump(mode="json") if r is not None else None}

    def reviewed_traces(self, reviewer: str | None = None) -> tuple[list[dict], dict]:
        """The reviewed trace set of `reviewer` (default: the first reviewer): rejected traces dropped, confirmed
        edits in place of their rationale (`reviewed: edited`, `raw_rationale`), the rest as they are; and the
        counts (traces, reviewed, accepted, rejected, edited, edits the judge did not confirm, unreviewed)."""
        who = self.primary(reviewer)
        eff = self.effective(who)
        out, counts = [], {"reviewer": who, "traces": len(self.traces), "reviewed": len(eff), "accepted": 0,
                           "rejected": 0, "edited": 0, "unreviewed": 0,
                           "edits_not_confirmed": sum(1 for r in self.reviews if r.reviewer == who and not r.counts)}
        for t in self.traces:
            r = eff.get(t["id"])
            row = {k: v for k, v in t.items() if k != "id"}
            if r is None:
                counts["unreviewed"] += 1
                out.append({**row, "reviewed": "unreviewed"})
            elif r.action == "reject":
                counts["rejected"] += 1
            elif r.action == "edit":
                counts["edited"] += 1
                out.append({**row, "rationale": r.rationale, "raw_rationale": t["rationale"], "reviewed": "edited"})
            else:
                counts["accepted"] += 1
                out.append({**row, "reviewed": "accepted"})
        return out, counts

    def agreement(self, n_boot: int = 1000, seed: int = 0) -> dict:
        """Krippendorff's α between reviewers on accept/reject (a confirmed edit: accept), over the traces two or
        more reviewers decided; None with fewer than two reviewers."""
        from thinktrace.agreement import inter_rater_alpha

        names = self.reviewers()
        decided = {name: self.effective(name) for name in names}
        both = [t["id"] for t in self.traces if sum(t["id"] in decided[n] for n in names) >= 2]
        out = {"reviewers": names, "traces_by_two_or_more": len(both)}
        if len(names) < 2:
            return {**out, "alpha": None, "why": "one reviewer"}
        ratings = {n: [decided[n][i].verdict if i in decided[n] else None for i in both] for n in names}
        disagree = sum(1 for k in range(len(both)) if len({ratings[n][k] for n in names} - {None}) > 1)
        est = inter_rater_alpha(ratings, LabelSet.of(VERDICTS), n_boot=n_boot, seed=seed)
        return {**out, "alpha": est, "disagreements": disagree}

    # -- rows for the page and the API -------------------------------------------------------------------------
    def row(self, t: dict, reviewer: str | None, history: dict[str, list[Review]] | None = None) -> dict:
        leaks = find_leaks(t["rationale"], self.label_set)
        cur = self.current(t, reviewer)
        others = {name: self.current(t, name)["status"] for name in self.reviewers() if name != reviewer}
        return {
            "id": t["id"], "key": t["key"], "item_id": t["item_id"], "annotator": t.get("annotator"),
            "item": t["item"], "human": t["human"], "human_labels": t.get("human_labels") or [t["human"]],
            "spread": len(set(t.get("human_labels") or [t["human"]])), "label": t["label"],
            "rationale": t["rationale"], "strategy": t["strategy"], "attempt": t["attempt"],
            "cut": record_cut(t), "states_label": states_label(t["rationale"], self.label_set, t["label"]),
            "leaks": [{"start": x.start, "end": x.end, "token": x.token, "kind": x.kind} for x in leaks],
            "rejected_attempts": [{"strategy": r["strategy"], "attempt": r["attempt"], "label": r.get("label"),
                                   "rationale": r.get("rationale"), "cut": record_cut(r)}
                                  for r in self.rejected.get(t["key"], [])],
            "reader": self.reads.get(t["id"], {}),
            **{k: cur[k] for k in ("status", "review")}, "current_rationale": cur["rationale"],
            "history": [r.model_dump(mode="json") for r in (history or {}).get(t["id"], [])] if history is not None
            else [r.model_dump(mode="json") for r in self.reviews if r.trace == t["id"]],
            "other_reviewers": others,
        }

    def rows(self, reviewer: str | None, *, label: str | None = None, strategy: str | None = None,
             cut: bool | None = None, states: bool | None = None, disagreement: bool | None = None,
             status: str | None = None) -> list[dict]:
        """The traces (ordered by label, then item) as `reviewer` sees them, filtered."""
        order = {lab: n for n, lab in enumerate(self.label_set.labels)}
        history: dict[str, list[Review]] = defaultdict(list)
        for r in self.reviews:
            history[r.trace].append(r)
        out = []
        for t in sorted(self.traces, key=lambda t: (order.get(t["label"], 99), str(t["item_id"]), t["id"])):
            row = self.row(t, reviewer, history)
            if (label is not None and row["label"] != label) or (strategy is not None and row["strategy"] != strategy) \
                    or (cut is not None and row["cut"] != cut) or (states is not None and row["states_label"] != states) \
                    or (disagreement is not None and (row["spread"] > 1) != disagreement) \
                    or (status is not None and row["status"] != status):
                continue
            out.append(row)
        return out

    def summary(self, reviewer: str | None) -> dict:
        _, counts = self.reviewed_traces(reviewer)
        return {"run": str(self.path), "labels": list(self.label_set.labels),
                "strategies": sorted({t["strategy"] for t in self.traces}), "counts": counts,
                "reviewers": self.reviewers(), "agreement": self.agreement()}
