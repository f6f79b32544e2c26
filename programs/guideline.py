"""GuidelineWriter: accepted thinking traces -> decision rules per label, assembled with the original guideline
and human-labelled examples into a clearer guideline.

1. map: per human label, the traces in batches of at most `batch_size` (traces of `priority` items first: the
   items the baseline raters got wrong) -> decision rules (`SummarizeTraces`), one call per batch;
2. reduce: a label with several rule lists gets them combined `batch_size` at a time (`CombineRules`), in rounds,
   until one list is left, so any number of traces fits the writer's context;
3. assemble (code, no LM): the original guideline, then `RULES_HEADING` with one `### <label>` section per label,
   then `EXAMPLES_HEADING` with human-labelled examples. Each part is a section the code knows, so the rules-only
   and examples-only ablations and "the rules cover every label the traces have" are structural.
`revise(original, rules, errors)` rewrites the rules of each label the raters got wrong on dev (`ReviseRules`).

Rules that generalise: each map call shows, beside the label's traces, up to `contrasts` traces of each
neighbouring label (the contrasts: what separates a 2 from a 3). Every rule line written (map/reduce/revise) is
checked (thinktrace.guidelines.rule_check): one that quotes an annotated item, states a label the way a trace
does, or restates the original guideline is rewritten once (`RewriteRule`) and dropped when the rewrite still has
a fault; `rule_faults` counts found / rewritten / dropped per reason. Neighbouring label sections whose content
words overlap (Jaccard) above `overlap_threshold` are rewritten apart (`SeparateRules`, one call per side); the
rewrite is kept when it lowers the overlap. `overlap` reports every neighbouring pair before and after.

Every writer output is checked. Cut by the token budget (finish reason "length"): asked again with twice the
budget (up to `max_tokens_cap`), then with half the batch. Empty, or no rule in it: asked again once as a new
sample. Still unusable: a fallback with its reason (the batch is skipped; a failed combine keeps the lists
concatenated; a failed revision keeps the label's rules). Nothing is hidden: `stats` counts calls, truncations,
retries and fallbacks per stage (map, reduce, revise) and `fallbacks` lists each departure from the plan. Prompts
fit the writer's context (`context_tokens`, counted with `count_tokens`) by batching smaller. LM/provider errors are not
caught (thinktrace's retry policy handles them).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from typing import Callable, Collection, Mapping, Sequence

import dspy
from dspy.utils.exceptions import AdapterParseError

from thinktrace.guidelines.rule_check import FAULT_TEXT, FAULTS, RuleChecker, neighbour_pairs, section_overlap
from thinktrace.labels import LabelSet
from thinktrace.loader import load_relative

SummarizeTraces = load_relative(__file__, "../signatures/guideline.py", "SummarizeTraces")
CombineRules = load_relative(__file__, "../signatures/guideline.py", "CombineRules")
ReviseRules = load_relative(__file__, "../signatures/guideline.py", "ReviseRules")
RewriteRule = load_relative(__file__, "../signatures/guideline.py", "RewriteRule")
SeparateRules = load_relative(__file__, "../signatures/guideline.py", "SeparateRules")

#: Heading of the decision rules section of a synthesized guideline (one `### <label>` subsection per label).
RULES_HEADING = "## Decision rules learned from the annotators' reasoning"

#: Heading of the section of human-labelled examples (with the reasoning of their traces) added to a candidate.
EXAMPLES_HEADING = "## Examples labelled by the human annotators"

STAGES = ("map", "reduce", "revise", "check", "separate")

_FENCE = re.compile(r"^```[\w-]*\n(.*?)\n?```$", re.S)
_HEAD = re.compile(r"^\W*(new|revised)?[ _]?(guideline|decision[ _]rules|rules)\W*:?\s*\n", re.I)
_WORD = re.compile(r"\w+")


def clean_text(text: str | None) -> str:
    """Strip whitespace, one surrounding code fence and a leading `Decision rules:` style heading line."""
    text = (text or "").strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    return _HEAD.sub("", text + "\n", count=1).strip()


def rule_lines(text: str) -> list[str]:
    """The lines of `text` that state something (not headings, at least three words)."""
    return [ln.strip() for ln in (text or "").splitlines()
            if ln.strip() and not ln.lstrip().startswith("#") and len(_WORD.findall(ln)) >= 3]


def render_guideline(original: str, rules: Mapping[str, str] | None = None, examples: str = "") -> str:
    """The guideline assembled from its sections: the original text, the rules per label under `RULES_HEADING`,
    the examples under `EXAMPLES_HEADING`. With neither rules nor examples: the original, unchanged."""
    rules = {lb: t.strip() for lb, t in (rules or {}).items() if t and t.strip()}
    if not rules and not examples.strip():
        return original
    parts = [original.rstrip()]
    if rules:
        parts.append(RULES_HEADING + "\n\n" + "\n\n".join(f"### {lb}\n{t}" for lb, t in rules.items()))
    if examples.strip():
        parts.append(EXAMPLES_HEADING + "\n\n" + examples.strip())
    return "\n\n".join(parts) + "\n"


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


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def format_traces(batch: Sequence[dict], max_chars: int = 800) -> str:
    """`[i] Item: ...` / `Reasoning: ...` blocks, each field clipped to max_chars."""
    return "\n\n".join(f"[{i}] Item: {_clip(t['item'], max_chars)}\nReasoning: {_clip(t['rationale'], max_chars)}"
                       for i, t in enumerate(batch, 1))


def format_contrasts(by_label: Mapping[str, Sequence[dict]], max_chars: int = 400) -> str:
    """`Neighbouring label <l>:` blocks, each trace as `- Item: ... / Reasoning: ...` ("none" without any)."""
    blocks = []
    for label, rows in by_label.items():
        if rows:
            blocks.append(f"Neighbouring label {label}:\n" + "\n".join(
                f"- Item: {_clip(t['item'], max_chars)}\n  Reasoning: {_clip(t['rationale'], max_chars)}"
                for t in rows))
    return "\n\n".join(blocks) or "none"


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


def approx_tokens(text: str) -> int:
    """A conservative token estimate when the writer's tokenizer is unknown (about 3 characters per token)."""
    return len(text) // 3 + 1


class GuidelineWriter(dspy.Module):
    """`forward(guideline, traces, priority=(), order_seed=None)` -> Prediction(guideline, rules, examples_text,
    examples, missing, stats, fallbacks, calls, batches).

    traces: trace rows (keys item_id, item, human, rationale; thinktrace.traces / traces.jsonl), grouped by the
    human label. labels: the label order (a LabelSet or a list); traces of other labels come after, in order of
    appearance. batch_size (>= 2): most traces per map call and most rule lists per reduce call.
    max_traces_per_label: keep at most this many traces of a label (priority ones first); None = all.
    examples_per_label: also add this many human-labelled items per label, taken from the traces in the same
    order (priority first; a different mix per order_seed), under `EXAMPLES_HEADING`, each with the first
    sentence of its trace when example_reasoning; 0 = none.
    max_tokens: the first budget of a writing call; max_tokens_cap: the most a retry of a cut answer may ask
    (default 4 x max_tokens). context_tokens: the writer's context window (None: no limit); a call's inputs,
    instructions and answer budget must fit in it, counted with count_tokens (default: about 3 characters per
    token), else the batch is split. retries: new samples of an empty or rule-less answer before it is a
    fallback.
    """

    #: the guideline from its sections (the ablations render their parts with it)
    render = staticmethod(render_guideline)

    def __init__(self, labels: Sequence[str] | object = (), batch_size: int = 8,
                 max_traces_per_label: int | None = None, max_chars: int = 800, max_errors: int | None = None,
                 examples_per_label: int = 0, example_reasoning: bool = True, max_tokens: int = 768,
                 max_tokens_cap: int | None = None, context_tokens: int | None = None,
                 count_tokens: Callable[[str], int] | None = None, retries: int = 1, contrasts: int = 0,
                 check_rules: bool = False, overlap_threshold: float | None = None,
                 train_texts: Sequence[str] = ()):
        super().__init__()
        self.label_set = labels if isinstance(labels, LabelSet) else None
        self.contrasts = int(contrasts)
        self.check_rules = check_rules
        self.overlap_threshold = overlap_threshold
        self.train_texts = list(train_texts)
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (a reduce step combines at least two lists), got {batch_size}")
        self.labels = [str(lb) for lb in getattr(labels, "labels", labels)]
        self.batch_size = batch_size
        self.max_traces_per_label = max_traces_per_label
        self.max_chars = max_chars
        self.max_errors = max_errors or batch_size
        self.examples_per_label = examples_per_label
        self.example_reasoning = example_reasoning
        self.max_tokens = int(max_tokens)
        self.max_tokens_cap = max(self.max_tokens, int(max_tokens_cap or 4 * self.max_tokens))
        self.context_tokens = context_tokens
        self.count_tokens = count_tokens or approx_tokens
        self.retries = retries
        self.summarize = dspy.Predict(SummarizeTraces)
        self.combine = dspy.Predict(CombineRules)
        self.rewrite = dspy.Predict(ReviseRules)
        self.fix = dspy.Predict(RewriteRule)
        self.separate = dspy.Predict(SeparateRules)

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

    # -- one checked call ------------------------------------------------------------------------------------
    @staticmethod
    def _state() -> dict:
        return {"calls": 0, "fallbacks": [], "rule_faults": {f: {"found": 0, "rewritten": 0, "dropped": 0}
                                                             for f in FAULTS}, "dropped_rules": [],
                "stats": {s: {"calls": 0, "truncated": 0, "retries": 0, "fallbacks": 0} for s in STAGES}}

    def _room(self, predictor, inputs: dict) -> int | None:
        """Tokens left for the answer once the call's inputs and instructions are in the context (None: no limit)."""
        if self.context_tokens is None:
            return None
        used = self.count_tokens("\n".join(map(str, inputs.values()))) + \
            self.count_tokens(predictor.signature.instructions) + 120  # field names, descriptions, chat markup
        return self.context_tokens - used

    def _fits(self, predictor, **inputs) -> bool:
        room = self._room(predictor, inputs)
        return room is None or room >= min(self.max_tokens, 256)

    def _ask(self, state: dict, stage: str, predictor, **inputs) -> tuple[str, str | None]:
        """(rules text, None) or ("", why it is unusable). Cut answers are asked again with a doubled budget up
        to max_tokens_cap; empty or rule-less ones once more as a new sample."""
        from thinktrace.lm.guard import last_finish

        from thinktrace.lm.guard import forget_finish

        st = state["stats"][stage]
        room = self._room(predictor, inputs)
        cap = self.max_tokens_cap if room is None else max(16, min(self.max_tokens_cap, room))
        budget, resample = min(self.max_tokens, cap), 0
        while True:
            state["calls"] += 1
            st["calls"] += 1
            config = {"max_tokens": budget}
            if resample:
                config["rollout_id"] = 1_000_003 * resample + (dspy.settings.lm.kwargs.get("rollout_id") or 0)
                config["temperature"] = max(float(dspy.settings.lm.kwargs.get("temperature") or 0.0), 0.7)
            forget_finish()
            try:
                text = clean_text(predictor(**inputs, config=config).get("decision_rules"))
            except AdapterParseError as err:
                text = clean_text(err.lm_response)
            if last_finish() == "length":
                st["truncated"] += 1
                if budget < cap:
                    budget = min(cap, budget * 2)
                    st["retries"] += 1
                    continue
                return "", f"cut at {budget} tokens (finish reason length)"
            why = "empty output" if not text else ("no decision rule in the output" if not rule_lines(text) else None)
            if why is None:
                return text, None
            if resample < self.retries:
                resample += 1
                st["retries"] += 1
                continue
            return "", why

    @staticmethod
    def _note(state: dict, stage: str, label: str | None, what: str) -> None:
        state["fallbacks"].append({"stage": stage, "label": label, "what": what})
        state["stats"][stage]["fallbacks"] += 1

    # -- map / reduce ----------------------------------------------------------------------------------------
    def _map(self, state: dict, guideline: str, label: str, batch: list[dict], where: str,
             contrasts: str = "none") -> list[str]:
        """Rules from one batch (beside the neighbours' contrasts); a batch too long for the prompt budget, or cut
        at the cap, goes in halves."""
        traces_text = format_traces(batch, self.max_chars)
        if len(batch) > 1 and not self._fits(self.summarize, guideline=guideline, label=label, traces=traces_text,
                                             contrasts=contrasts):
            half = len(batch) // 2
            return self._map(state, guideline, label, batch[:half], where, contrasts) + \
                self._map(state, guideline, label, batch[half:], where, contrasts)
        text, why = self._ask(state, "map", self.summarize, guideline=guideline, label=label, traces=traces_text,
                              contrasts=contrasts)
        if why and why.startswith("cut") and len(batch) > 1:
            state["stats"]["map"]["retries"] += 1
            half = len(batch) // 2
            return self._map(state, guideline, label, batch[:half], where, contrasts) + \
                self._map(state, guideline, label, batch[half:], where, contrasts)
        if why:
            self._note(state, "map", label, f"{where} ({len(batch)} traces): {why}; batch skipped")
            return []
        return [text]

    def _combine(self, state: dict, guideline: str, label: str, group: list[str], level: int) -> list[str]:
        rule_sets = format_numbered(group)
        if len(group) > 2 and not self._fits(self.combine, guideline=guideline, label=label, rule_sets=rule_sets):
            half = len(group) // 2
            return self._combine(state, guideline, label, group[:half], level) + \
                self._combine(state, guideline, label, group[half:], level)
        text, why = self._ask(state, "reduce", self.combine, guideline=guideline, label=label, rule_sets=rule_sets)
        if why and why.startswith("cut") and len(group) > 2:
            state["stats"]["reduce"]["retries"] += 1
            half = len(group) // 2
            return self._combine(state, guideline, label, group[:half], level) + \
                self._combine(state, guideline, label, group[half:], level)
        if why:
            self._note(state, "reduce", label, f"round {level}: {why}; the {len(group)} rule lists kept concatenated")
            return ["\n".join(group)]
        return [text]

    def contrasts_for(self, label: str, plan: Mapping[str, list[list[dict]]]) -> str:
        """Up to `contrasts` traces of each neighbouring label (label order), the first of its plan."""
        if not self.contrasts:
            return "none"
        near = {}
        for a, b in neighbour_pairs(self.labels, list(plan)):
            if label in (a, b):
                other = b if a == label else a
                near[other] = [t for bt in plan[other] for t in bt][: self.contrasts]
        return format_contrasts(near, self.max_chars // 2)

    def rules_for(self, state: dict, guideline: str, label: str, batches: list[list[dict]],
                  contrasts: str = "none") -> str | None:
        lists = []
        for n, batch in enumerate(batches):
            lists += self._map(state, guideline, label, batch, f"batch {n}", contrasts)
        level = 0
        while len(lists) > 1:
            level += 1
            merged = []
            for g in range(0, len(lists), self.batch_size):
                group = lists[g: g + self.batch_size]
                merged += group if len(group) == 1 else self._combine(state, guideline, label, group, level)
            if len(merged) >= len(lists):  # nothing could be combined (every combine failed): stop here
                merged = ["\n".join(merged)]
            lists = merged
        return lists[0] if lists else None

    # -- rules that generalise -------------------------------------------------------------------------------
    def checker(self, guideline: str, items: Sequence[str] = ()) -> RuleChecker:
        return RuleChecker(self.label_set, guideline, list(items) + self.train_texts)

    def checked(self, state: dict, guideline: str, label: str, text: str, checker: RuleChecker) -> str:
        """`text` with every faulty rule line rewritten once (kept when the rewrite is clean) or dropped."""
        if not self.check_rules or not text:
            return text
        out = []
        for line in text.splitlines():
            fault = checker.fault(line) if line.strip() in rule_lines(line) else None
            if fault is None:
                out.append(line)
                continue
            counts = state["rule_faults"][fault]
            counts["found"] += 1
            fixed, why = self._ask(state, "check", self.fix, guideline=guideline, label=label, rule=line.strip(),
                                   problem=FAULT_TEXT[fault])
            new = rule_lines(fixed) if not why else []
            if new and all(checker.fault(ln) is None for ln in new):
                counts["rewritten"] += 1
                out += new
            else:
                counts["dropped"] += 1
                state["dropped_rules"].append({"label": label, "fault": fault, "rule": line.strip(),
                                               "rewrite": fixed or why})
        return "\n".join(out).strip()

    def separated(self, state: dict, guideline: str, rules: dict[str, str], checker: RuleChecker) -> list[dict]:
        """Rewrite the rules of each neighbouring pair above overlap_threshold apart (both sides, one call each);
        keep the rewrite when it lowers the pair's overlap. Returns every pair with its overlap before / after."""
        report = []
        for a, b in neighbour_pairs(self.labels, [lb for lb, t in rules.items() if t and t.strip()]):
            before = section_overlap({a: rules[a], b: rules[b]}, [a, b])[0]["jaccard"]
            row = {"a": a, "b": b, "before": before, "after": before, "rewritten": False}
            limit = self.overlap_threshold
            if limit is not None and before is not None and before > limit:
                new = dict(rules)
                for label, other in ((a, b), (b, a)):
                    text, why = self._ask(state, "separate", self.separate, guideline=guideline, label=label,
                                          rules=rules[label], neighbour_label=other, neighbour_rules=rules[other])
                    if not why:
                        text = self.checked(state, guideline, label, text, checker)
                        if rule_lines(text):
                            new[label] = text
                after = section_overlap({a: new[a], b: new[b]}, [a, b])[0]["jaccard"]
                if after is not None and after < row["before"]:
                    rules[a], rules[b] = new[a], new[b]
                    row.update(after=after, rewritten=True)
                else:
                    self._note(state, "separate", f"{a}|{b}", f"the rewrite did not lower the overlap "
                               f"({row['before']} -> {after}); both sections kept")
            report.append(row)
        # a rewritten pair changes its other neighbours' overlap: report the final values
        final = {(r["a"], r["b"]): r["jaccard"] for r in section_overlap(rules, self.labels)}
        for row in report:
            row["after"] = final.get((row["a"], row["b"]), row["after"])
        return report

    def forward(self, guideline: str, traces: Sequence[dict], priority: Collection[str] = (),
                order_seed: int | None = None) -> dspy.Prediction:
        state = self._state()
        plan = self.batches(traces, priority, order_seed)
        rules = {}
        checker = self.checker(guideline, [t["item"] for t in traces])
        for label, batches in plan.items():
            text = self.rules_for(state, guideline, label, batches, self.contrasts_for(label, plan))
            text = self.checked(state, guideline, label, text, checker) if text else text
            if text:
                rules[label] = text
        overlap = self.separated(state, guideline, rules, checker)
        missing = [lb for lb in plan if lb not in rules]
        examples, examples_text = {}, ""
        if self.examples_per_label:
            examples = {lb: [t for b in bs for t in b][: self.examples_per_label] for lb, bs in plan.items()}
            examples_text = format_examples(examples, self.example_reasoning)
        return dspy.Prediction(guideline=render_guideline(guideline, rules, examples_text), rules=rules,
                               examples_text=examples_text, missing=missing, stats=state["stats"],
                               rule_faults=state["rule_faults"], dropped_rules=state["dropped_rules"],
                               overlap=overlap,
                               fallbacks=state["fallbacks"], calls=state["calls"],
                               batches={lb: [[t["item_id"] for t in b] for b in bs] for lb, bs in plan.items()},
                               examples={lb: [t["item_id"] for t in ts] for lb, ts in examples.items()})

    def revise(self, original: str, rules: Mapping[str, str], errors: Sequence[dict],
               examples_text: str = "") -> dspy.Prediction:
        """Rewrite the rules of every label among `errors` (rows {item, human, said: {rater: {label,
        rationale}}}; at most max_errors shown per label); other labels keep theirs. Returns the same fields as
        forward()."""
        state = self._state()
        new = dict(rules)
        by_label: dict[str, list[dict]] = defaultdict(list)
        for e in errors:
            by_label[str(e["human"])].append(e)
        checker = self.checker(original, [e["item"] for e in errors])
        for label, rows in by_label.items():
            text, why = self._ask(state, "revise", self.rewrite, guideline=original, label=label,
                                  rules=rules.get(label) or "(no rules yet)",
                                  errors=format_errors(rows[: self.max_errors]))
            text = self.checked(state, original, label, text, checker) if not why else text
            if why:
                self._note(state, "revise", label, f"{why}; the label's rules unchanged")
            elif not rule_lines(text):
                self._note(state, "revise", label, "every revised rule was dropped by the rule check; the label's "
                           "rules unchanged")
            else:
                new[label] = text
        order = [lb for lb in self.labels if lb in new] + [lb for lb in new if lb not in self.labels]
        new = {lb: new[lb] for lb in order}
        overlap = self.separated(state, original, new, checker)
        return dspy.Prediction(guideline=render_guideline(original, new, examples_text), rules=new,
                               examples_text=examples_text, missing=[], stats=state["stats"],
                               rule_faults=state["rule_faults"], dropped_rules=state["dropped_rules"],
                               overlap=overlap,
                               fallbacks=state["fallbacks"], calls=state["calls"],
                               errors_shown={lb: [e.get("item_id") for e in rows[: self.max_errors]]
                                             for lb, rows in by_label.items()})
