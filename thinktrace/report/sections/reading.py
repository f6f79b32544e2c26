"""The plain reading of a run's findings: sentences whose every number is read off metrics.json, so the prose under a
published results table can never outrun the data (issue: "prose outruns the data").

For each paired comparison of the findings table: both variants' α, the difference with its CI and what the CI
says, how often each variant's answer was cut before its label (its label then written under the label grammar),
and the flags of a variant that failed or collapsed. Then each of the paper's claims as *shown* (every comparison
that tests it reads better), *contradicted* (one reads worse) or *not shown*; the change of agreement among LLM
raters; the human ceiling against the best rater. What a reading does not show is said with it: a CI that spans 0
is no evidence of no effect, and a collapsed variant's α is not a rater's agreement.
"""

from __future__ import annotations

from dataclasses import dataclass

from thinktrace.report.flags import rater_flags
from thinktrace.report.format import fmt_diff, fmt_est
from thinktrace.report.model import Block, Bullets, Strong, Text
from thinktrace.report.sections.findings import QUESTIONS, reading, rows
from thinktrace.runview import RunView

@dataclass(frozen=True)
class Claim:
    """One of the paper's claims and the (kind of b, kind of a) comparisons that test it."""

    name: str
    text: str
    tests: tuple[tuple[str, str], ...]
    per_rater: bool = False  #: read for each rater (the comparison's a)
    optional: bool = False  #: read only when the run made one of its comparisons
    any_test: bool = False  #: shown when one comparison reads better (default: every comparison made must)


#: the paper's claims; optional ones: the other finetune formats, and the practical baseline of labels on every item
CLAIMS: tuple[Claim, ...] = (
    Claim("(1)", "an open rater fine-tuned on inferred traces agrees with humans better than one fine-tuned on labels "
          "alone, and better than one fine-tuned on the same rows with the rationales shuffled",
          (("trace-sft", "label-sft"), ("trace-sft", "shuffled-trace-sft"))),
    Claim("(1), multitask format", "trained on the traces as a second task (distilling step-by-step) and rated by "
          "its label alone, the rater agrees with humans better than one fine-tuned on labels alone (same items)",
          (("trace-sft-multitask", "label-sft"),), optional=True),
    Claim("(1), multitask format, against shuffled traces", "trained on the traces as a second task, the rater "
          "agrees with humans better than one trained the same way with the rationales shuffled",
          (("trace-sft-multitask", "shuffled-trace-sft-multitask"),), optional=True),
    Claim("(1), label-then-rationale format", "trained to write the label, then the trace, the rater agrees with "
          "humans better than one fine-tuned on labels alone (same items)",
          (("trace-sft-label-first", "label-sft"),), optional=True),
    Claim("(1), label-then-rationale format, against shuffled traces", "trained to write the label, then the trace, "
          "the rater agrees with humans better than one trained the same way on the same rows with the rationales "
          "shuffled (so the traces' content, not the extra answer tokens, is what helps)",
          (("trace-sft-label-first", "shuffled-trace-sft-label-first"),), optional=True),
    Claim("(1) against labels on every train item", "some trace format beats label-only fine-tuning on every train "
          "item (the practical baseline: a user has labels for every item, traces only for the explained ones)",
          (("trace-sft", "label-sft-all"), ("trace-sft-multitask", "label-sft-all"),
           ("trace-sft-label-first", "label-sft-all")), optional=True, any_test=True),
    Claim("(2)", "a guideline refined from the traces raises LLM-human agreement", (("refined-guideline", "baseline"),),
          per_rater=True),
)


def _cut(m: dict | None) -> str:
    if not m:
        return "n/a"
    return f"{m.get('n_label_by_choice', 0)}/{m.get('n_items', 0)}"


def comparison_sentences(run: RunView, split: str) -> list[tuple[str, str, str, str, list]]:
    """(kind of b, kind of a, name of a, reading, sentence parts) per findings comparison, in findings order."""
    kinds = {v["name"]: v.get("kind", "") for v in run.variants(split)}
    data = run.split(split)
    raters = data.get("raters") or {}
    holm = {row[1]: row[-1] for row in rows(run, split)}  # the findings table's Holm reading per comparison
    out = []
    for b_kind, a_kind, question in QUESTIONS:
        for c in data.get("comparisons") or []:
            if kinds.get(c.get("b")) != b_kind or kinds.get(c.get("a")) != a_kind:
                continue
            a, b = c["a"], c["b"]
            ma, mb = raters.get(a), raters.get(b)
            says, adjusted = reading(c), holm.get(f"{b} − {a}", "n/a")
            parts: list = [Strong(f"{question[0].upper()}{question[1:]}"),
                           f" ({b} − {a}): α {fmt_est({'value': c.get('value_a')})} → {fmt_est({'value': c.get('value_b')})}, Δα {fmt_diff(c)}, "
                           f"{says}; Holm over the table's rows: {adjusted}. Answers cut before their label: {a} "
                           f"{_cut(ma)}, {b} {_cut(mb)}."]
            flagged = False
            for name, m in ((a, ma), (b, mb)):
                flags = rater_flags(m)
                if flags:
                    flagged = True
                    parts.append(f" {name}: {'; '.join(flags)} — its α is not a rater's agreement.")
            if flagged:  # a difference to a rater that failed or collapsed is no evidence for or against a claim
                says = adjusted = FLAGGED
            out.append((b_kind, a_kind, a, (says, adjusted), parts))
    return out


#: a claim's reading of a comparison in which a rater failed or collapsed (the sentence keeps its CI reading)
FLAGGED = "flagged: a compared rater failed or collapsed"


def claim_verdict(readings: list[str], adjusted: list[str] | None = None) -> str:
    """shown / contradicted / not shown / not tested, from the readings (raw 95 % CIs) of the comparisons that test
    a claim; `adjusted`: their Holm readings (over the findings table's rows), which qualify a raw verdict they
    do not share."""
    if not readings:
        return "not tested by this run"
    holm_note = ""
    if adjusted is not None:
        if any(r.startswith("worse") for r in readings) and not any(h.startswith("worse") for h in adjusted):
            holm_note = "; not after Holm's adjustment over the table's rows"
        elif all(r.startswith("better") for r in readings) and not all(h.startswith("better") for h in adjusted):
            holm_note = "; not after Holm's adjustment over the table's rows"
    if any(r.startswith("worse") for r in readings):
        return f"contradicted (a comparison reads worse){holm_note}"
    if all(r.startswith("better") for r in readings):
        return f"shown (every comparison that tests it reads better){holm_note}"
    if any(r == FLAGGED for r in readings):
        return ("not shown (a comparison is to a rater that failed or collapsed, whose α is not a rater's agreement; "
                "no other comparison reads worse)")
    return "not shown (a comparison's CI spans 0 or is undefined; that is no evidence of no effect either)"


def any_format_verdict(found: list[tuple[str, str]]) -> str:
    """"Some trace format beats labels on every item", from (raw reading, Holm reading) per format: shown when one
    reads better (mixed when another reads worse), contradicted when every one reads worse, else not shown; a raw
    verdict the Holm readings do not share says so, as in claim_verdict."""
    raw = [r for r, _ in found]
    if not raw:
        return claim_verdict([])
    better = [adj for r, adj in found if r.startswith("better")]
    worse = [adj for r, adj in found if r.startswith("worse")]
    holm = "; not after Holm's adjustment over the table's rows"
    if better and worse:
        return "mixed (one format reads better, another worse)"
    if better:
        return "shown (a format reads better)" + ("" if any(a.startswith("better") for a in better) else holm)
    if len(worse) == len(raw):
        return "contradicted (every format reads worse)" + ("" if any(a.startswith("worse") for a in worse) else holm)
    return claim_verdict([FLAGGED] if all(r == FLAGGED for r in raw) else ["no clear difference"])


def reading_blocks(run: RunView) -> list[Block]:
    """The reading of the run's main split: comparisons, claims, agreement among LLMs, the human ceiling."""
    split = run.main_split()
    if split is None:
        return []
    sentences = comparison_sentences(run, split)
    items: list = [parts for *_, parts in sentences]
    for c in CLAIMS:
        made = [(a_name, says) for b, a, a_name, says, _ in sentences if (b, a) in c.tests]
        if c.optional and not made:
            continue

        def verdict_of(found: list[tuple[str, str]]) -> str:
            if c.any_test:
                return any_format_verdict(found)
            return claim_verdict([raw for raw, _ in found], [adj for _, adj in found])

        if c.per_rater and made:
            names = list(dict.fromkeys(a_name for a_name, _ in made))
            verdict = "; ".join(f"for {r}, {verdict_of([s for n, s in made if n == r])}" for r in names)
        else:
            verdict = verdict_of([s for _, s in made])
        items.append([Strong(f"Claim {c.name}"), f", {c.text}: {verdict}."])
    data = run.split(split)
    change = data.get("inter_rater_change")
    for ch in change if isinstance(change, list) else [change] if change else []:
        items.append([Strong("Agreement among LLM raters"), f", refined vs original guideline: Δα {fmt_diff(ch)}, "
                      f"{reading(ch)}."])
    ceiling = ((data.get("human_ceiling") or {}).get("loo_alpha")) or {}
    raters = {n: m for n, m in (data.get("raters") or {}).items() if (m.get("alpha") or {}).get("value") is not None}
    if ceiling.get("value") is not None and raters:
        best = max(raters, key=lambda n: raters[n]["alpha"]["value"])
        est = raters[best]["alpha"]
        low = (ceiling.get("ci") or [None])[0]
        where = ("below the ceiling's CI" if low is not None and est["value"] < low else
                 "within or above the ceiling's CI" if low is not None else "(the ceiling has no CI)")
        items.append([Strong("Human ceiling"), f" (leave-one-annotator-out α): {fmt_est(ceiling)}. The best rater "
                      f"here, {best} (α {fmt_est(est)}), is {where}."])
    if not items:
        return []
    return [Text([Strong("Reading"), f" ({split} split; every number below is read off metrics.json):"]),
            Bullets(items)]


def _num_text(x) -> str:
    return "n/a" if x is None else f"{x:g}"


def _minutes(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds / 60:.1f} min"


def what_ran(run: RunView) -> list[Block]:
    """What the run did, in numbers read off metrics.json and the resolved spec: data and gold ties, traces (cut
    attempts among them), trace leaks, fine-tuning rows and steps, stage times (summed over the run's sessions; a
    resume adds the seconds it spends). Peak memory is per session, so a resume would misstate it: it stays in the
    report, not here."""
    m, spec = run.metrics, run.spec
    items: list = []
    stats = (m.get("data") or {}).get("stats") or {}
    per_split = stats.get("per_split") or {}
    if per_split:
        ties = stats.get("ties") or {}
        tie_text = (f"; gold ties broken: {ties.get('midpoint', 0)} mean/median midpoints and {ties.get('majority', 0)} "
                    f"majority ties, rule `{stats.get('tie_break', 'lower')}`" if ties else
                    "; gold ties: not counted (a run from before the tie count: mean/median midpoints went to the lower label "
                    "uncounted, majority ties to the label first in label_set)")
        data_cfg = spec.get("data") or {}
        items.append([Strong("Data"), f": {stats.get('items', sum(per_split.values()))} items ("
                      + ", ".join(f"{k} {v}" for k, v in per_split.items())
                      + f"), {_num_text((stats.get('labels_per_item') or {}).get('median'))} human labels per "
                      f"item (median), gold = {data_cfg.get('aggregate', 'n/a')}{tie_text}."])
    t = m.get("traces") or {}
    if t.get("examples"):
        s = spec.get("sampling") or {}
        cut = t.get("cut") or {}
        cut_text = (f"; {cut.get('attempts', 0)} samples were cut by max_tokens ({cut.get('label_matched_rejected', 0)} of "
                    f"them matched the human label and were rejected as cut)" if cut else "")
        reused = (f"; {t['reused_attempts']} of the samples (of {t.get('reused_examples', 0)} examples) were replayed "
                  f"from {t.get('attempts_from') or 'another run'} (`sampling.attempts_from`), not sampled again"
                  if t.get("reused_attempts") else "")
        items.append([Strong("Traces"), f": strategy {s.get('strategy', 'n/a')}, k = {s.get('k', 'n/a')}, temperature "
                      f"{s.get('temperature', 'n/a')}; {t.get('explained', 0)} of {t['examples']} train items explained, "
                      f"{t.get('accepted', 0)} of {t.get('attempts', 0)} samples accepted{cut_text}{reused}."])
    leaks = (m.get("trace_quality") or {}).get("leaks") or {}
    if leaks.get("accepted"):
        acc, rej = leaks["accepted"], leaks.get("rejected") or {}
        items.append([Strong("Traces that state their label"), f": {acc.get('states_own_label', 0)} of {acc.get('n', 0)} "
                      f"accepted" + (f", {rej.get('states_own_label', 0)} of {rej.get('n', 0)} rejected" if rej else "")
                      + f"; leaks left after masking: {leaks.get('residual_after_mask', 'n/a')}."])
    ft = {k: v for k, v in (m.get("finetune") or {}).items() if isinstance(v, dict) and v.get("rows")}
    if ft:
        items.append([Strong("Fine-tuning"), ": " + "; ".join(
            f"{k} {v['rows']} rows, {v.get('steps', 'n/a')} steps" for k, v in ft.items()) + "."])
    timing = run.timing()
    if timing:
        items.append([Strong("Wall time of the stages"), f" (summed over the run's sessions): "
                      f"{_minutes(sum(timing.values()))}: " + ", ".join(f"{k} {_minutes(v)}" for k, v in timing.items())
                      + "."])
    return [Text([Strong("What ran"), " (read off metrics.json and spec.resolved.yaml):"]), Bullets(items)] if items else []
