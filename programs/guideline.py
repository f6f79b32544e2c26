"""GuidelineWriter: accepted thinking traces -> a clearer annotation guideline, by map-reduce.

1. map: per human label, the traces in batches of at most `batch_size` (traces of `priority` items first: the
   items the baseline raters got wrong) -> decision rules (`SummarizeTraces`), one call per batch;
2. reduce: a label with several rule lists gets them combined `batch_size` at a time (`CombineRules`), in rounds,
   until one list is left, so any number of traces fits the writer's context;
3. merge: the original guideline + every label's rules -> the new guideline (`MergeGuideline`).
`revise(guideline, errors)` rewrites a guideline from dev examples the raters got wrong (`ReviseGuideline`).

Small models break formats. Nothing is hidden: every departure from the plan is a `fallbacks` entry (stage,
label, what happened). A merge whose output is empty, much shorter than the original or drops a label the
original names is replaced by the original guideline with the rules appended under a heading; an unusable
revision leaves the guideline unchanged. LM/provider errors are not caught (they are not the model's format).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from typing import Collection, Sequence

import dspy
from dspy.utils.exceptions import AdapterParseError

from thinktrace.programs import load_relative

SummarizeTraces = load_relative(__file__, "../signatures/guideline.py", "SummarizeTraces")
CombineRules = load_relative(__file__, "../signatures/guideline.py", "CombineRules")
MergeGuideline = load_relative(__file__, "../signatures/guideline.py", "MergeGuideline")
ReviseGuideline = load_relative(__file__, "../signatures/guideline.py", "ReviseGuideline")

#: Heading of the rules appended to the original guideline when a merge is unusable.
APPENDIX_HEADING = "## Decision rules learned from the annotators' reasoning"

#: Heading of the section of human-labelled examples (with the reasoning of their traces) added to a candidate.
EXAMPLES_HEADING = "## Examples labelled by the human annotators"

_FENCE = re.compile(r"^```[\w-]*\n(.*?)\n?```$", re.S)
_HEAD = re.compile(r"^\W*(new|revised)[ _]guideline\W*:?\s*", re.I)


def clean_text(text: str | None) -> str:
    """Strip whitespace, one surrounding code fence and a leading `New guideline:` style heading."""
    text = (text or "").strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    return _HEAD.sub("", text, count=1).strip()


def _names_label(text: str, label: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(label)}(?![\w])", text, re.I) is not None


def unusable_reason(text: str, reference: str, labels: Sequence[str], min_ratio: float = 0.5) -> str | None:
    """Why `text` cannot replace `reference` as the guideline (None: usable): empty, shorter than `min_ratio` of
    the reference, or missing a label the reference names."""
    if not text.strip():
        return "empty output"
    if len(text.strip()) < min_ratio * len(reference.strip()):
        return f"output too short ({len(text.strip())} chars vs {len(reference.strip())} in the guideline)"
    lost = [lb for lb in labels if _names_label(reference, lb) and not _names_label(text, lb)]
    if lost:
        return f"output drops label(s) the guideline defines: {', '.join(lost)}"
    return None


def append_rules(guideline: str, rules_text: str) -> str:
    """The fallback guideline: the original, then the rules under `APPENDIX_HEADING`."""
    return f"{guideline.rstrip()}\n\n{APPENDIX_HEADING}\n\n{rules_text.strip()}\n"


def first_sentence(text: str | None) -> str:
    text = " ".join(str(text or "").split())
    m = re.search(r"(?<=[.!?])\s", text)
    return text[: m.start()] if m else text


def format_examples(examples: dict[str, list[dict]], reasoning: bool = True, max_chars: int = 160) -> str:
    """`- <item> -> <label>. Why: <first sentence of its trace>` lines (without `. Why: ...` when not reasoning or
    the trace is empty), label by label."""
    lines = []
    for label, traces in examples.items():
        for t in traces:
            why = _clip(first_sentence(t.get("rationale")), max_chars) if reasoning else ""
            lines.append(f"- {_clip(t['item'], max_chars)} -> {label}" + (f". Why: {why}" if why else ""))
    return "\n".join(lines)


def append_examples(guideline: str, examples_text: str) -> str:
    """The guideline, then the human-labelled examples under `EXAMPLES_HEADING` (nothing added when empty)."""
    if not examples_text.strip():
        return guideline
    return f"{guideline.rstrip()}\n\n{EXAMPLES_HEADING}\n\n{examples_text.strip()}\n"


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def format_traces(batch: Sequence[dict], max_chars: int = 800) -> str:
    """`[i] Item: ...` / `Reasoning: ...` blocks, each field clipped to max_chars."""
    return "\n\n".join(f"[{i}] Item: {_clip(t['item'], max_chars)}\nReasoning: {_clip(t['rationale'], max_chars)}"
                       for i, t in enumerate(batch, 1))


def format_numbered(texts: Sequence[str]) -> str:
    return "\n\n".join(f"[{i}]\n{t.strip()}" for i, t in enumerate(texts, 1))


def format_errors(errors: Sequence[dict], max_chars: int = 400) -> str:
    """Error rows {item, human, said: {rater: {label, rationale}}} as numbered blocks."""
    blocks = []
    for i, e in enumerate(errors, 1):
        said = "\n".join(f"- {name} said {v.get('label') or 'an unparseable label'}"
                         + (f": {_clip(v['rationale'], max_chars)}" if v.get("rationale") else "")
                         for name, v in e["said"].items())
        blocks.append(f"[{i}] Item: {_clip(e['item'], max_chars)}\nHuman label: {e['human']}\nRaters:\n{said}")
    return "\n\n".join(blocks)


class GuidelineWriter(dspy.Module):
    """`forward(guideline, traces, priority=())` -> Prediction(guideline, rules, batches, fallbacks, calls).

    traces: trace rows (keys item_id, item, human, rationale; thinktrace.traces / traces.jsonl), grouped by the
    human label. labels: the label order (a LabelSet or a list); traces of other labels come after, in order of
    appearance. batch_size (>= 2): most traces per map call and most rule lists per reduce call.
    max_traces_per_label: keep at most this many traces of a label (priority ones first); None = all.
    examples_per_label: also add this many human-labelled items per label, taken from the traces in the same
    order (priority first; a different mix per order_seed), under `EXAMPLES_HEADING`, each with the first
    sentence of its trace when example_reasoning; 0 = none. Anchors like these are what small raters use best
    (rules written by a small writer are often unusable).
    """

    def __init__(self, labels: Sequence[str] | object = (), batch_size: int = 8,
                 max_traces_per_label: int | None = None, max_chars: int = 800, max_errors: int | None = None,
                 examples_per_label: int = 0, example_reasoning: bool = True):
        super().__init__()
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (a reduce step combines at least two lists), got {batch_size}")
        self.labels = [str(lb) for lb in getattr(labels, "labels", labels)]
        self.batch_size = batch_size
        self.max_traces_per_label = max_traces_per_label
        self.max_chars = max_chars
        self.max_errors = max_errors or batch_size
        self.examples_per_label = examples_per_label
        self.example_reasoning = example_reasoning
        self.summarize = dspy.Predict(SummarizeTraces)
        self.combine = dspy.Predict(CombineRules)
        self.merge = dspy.Predict(MergeGuideline)
        self.rewrite = dspy.Predict(ReviseGuideline)

    # -- planning --------------------------------------------------------------------------------------------
    def batches(self, traces: Sequence[dict], priority: Collection[str] = (),
                order_seed: int | None = None) -> dict[str, list[list[dict]]]:
        """Per label (label order), the traces in batches of at most batch_size, priority items first. With
        order_seed, traces are shuffled within the priority and the other group (a different mix per
        candidate); priority ones stay first."""
        by_label: dict[str, list[dict]] = defaultdict(list)
        for t in traces:
            by_label[str(t["human"])].append(t)
        order = [lb for lb in self.labels if lb in by_label] + [lb for lb in by_label if lb not in self.labels]
        priority = set(priority)
        plan = {}
        for label in order:
            first = [t for t in by_label[label] if t["item_id"] in priority]
            rest = [t for t in by_label[label] if t["item_id"] not in priority]
            if order_seed is not None:
                rng = random.Random(f"{order_seed}|{label}")
                rng.shuffle(first)
                rng.shuffle(rest)
            chosen = (first + rest)[: self.max_traces_per_label or None]
            plan[label] = [chosen[i: i + self.batch_size] for i in range(0, len(chosen), self.batch_size)]
        return plan

    # -- one call --------------------------------------------------------------------------------------------
    def _ask(self, state: dict, predictor, field: str, **inputs) -> tuple[str, bool]:
        """(text, parsed): the output field, or the raw completion when the adapter could not parse it."""
        state["calls"] += 1
        try:
            return clean_text(predictor(**inputs).get(field)), True
        except AdapterParseError as err:
            return clean_text(err.lm_response), False

    @staticmethod
    def _note(state: dict, stage: str, label: str | None, what: str) -> None:
        state["fallbacks"].append({"stage": stage, "label": label, "what": what})

    # -- map / reduce / merge --------------------------------------------------------------------------------
    def rules_for(self, state: dict, guideline: str, label: str, batches: list[list[dict]]) -> str | None:
        lists = []
        for n, batch in enumerate(batches):
            text, parsed = self._ask(state, self.summarize, "decision_rules", guideline=guideline, label=label,
                                     traces=format_traces(batch, self.max_chars))
            if not text:
                self._note(state, "summarize", label, f"batch {n}: empty output, batch skipped")
                continue
            if not parsed:
                self._note(state, "summarize", label, f"batch {n}: output did not parse, its raw text used as rules")
            lists.append(text)
        level = 0
        while len(lists) > 1:
            level += 1
            merged = []
            for g in range(0, len(lists), self.batch_size):
                group = lists[g: g + self.batch_size]
                if len(group) == 1:
                    merged.append(group[0])
                    continue
                text, parsed = self._ask(state, self.combine, "decision_rules", guideline=guideline, label=label,
                                         rule_sets=format_numbered(group))
                if not text:
                    self._note(state, "combine", label, f"round {level}: empty output, rule lists concatenated")
                    text = "\n".join(group)
                elif not parsed:
                    self._note(state, "combine", label, f"round {level}: output did not parse, raw text used")
                merged.append(text)
            lists = merged
        return lists[0] if lists else None

    def forward(self, guideline: str, traces: Sequence[dict], priority: Collection[str] = (),
                order_seed: int | None = None) -> dspy.Prediction:
        state = {"calls": 0, "fallbacks": []}
        plan = self.batches(traces, priority, order_seed)
        rules = {}
        for label, batches in plan.items():
            text = self.rules_for(state, guideline, label, batches)
            if text:
                rules[label] = text
        if not rules:
            self._note(state, "merge", None, "no decision rules (no usable traces): guideline unchanged")
            new = guideline
        else:
            rules_text = "\n\n".join(f"### {label}\n{text}" for label, text in rules.items())
            text, parsed = self._ask(state, self.merge, "new_guideline", guideline=guideline, rules=rules_text)
            reason = unusable_reason(text, guideline, self.labels)
            if reason:
                self._note(state, "merge", None, f"{reason}: original guideline + appended rules")
                new = append_rules(guideline, rules_text)
            else:
                if not parsed:
                    self._note(state, "merge", None, "output did not parse, its raw text used (passed the checks)")
                new = text
        examples = {}
        if self.examples_per_label:
            examples = {lb: [t for b in bs for t in b][: self.examples_per_label] for lb, bs in plan.items()}
            new = append_examples(new, format_examples(examples, self.example_reasoning))
        return dspy.Prediction(guideline=new, rules=rules, fallbacks=state["fallbacks"], calls=state["calls"],
                               batches={lb: [[t["item_id"] for t in b] for b in bs] for lb, bs in plan.items()},
                               examples={lb: [t["item_id"] for t in ts] for lb, ts in examples.items()})

    def revise(self, guideline: str, errors: Sequence[dict]) -> dspy.Prediction:
        """errors: rows {item, human, said: {rater: {label, rationale}}}; at most max_errors are shown."""
        state = {"calls": 0, "fallbacks": []}
        if not errors:  # nothing to learn from: not a fallback, the guideline simply stays
            return dspy.Prediction(guideline=guideline, fallbacks=state["fallbacks"], calls=0)
        text, parsed = self._ask(state, self.rewrite, "revised_guideline", guideline=guideline,
                                 errors=format_errors(list(errors)[: self.max_errors]))
        reason = unusable_reason(text, guideline, self.labels)
        if reason:
            self._note(state, "revise", None, f"{reason}: guideline unchanged")
            text = guideline
        elif not parsed:
            self._note(state, "revise", None, "output did not parse, its raw text used (passed the checks)")
        return dspy.Prediction(guideline=text, fallbacks=state["fallbacks"], calls=state["calls"])
