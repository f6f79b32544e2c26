"""The report's answer to the paper's two questions, read off the run's paired comparisons: (1) does an open rater
fine-tuned on inferred traces agree with humans better than one fine-tuned on labels alone (and is it the traces
or the stronger teacher)? (2) does a guideline refined from the traces raise LLM-human agreement and agreement
among the LLM raters? One row per comparison the run made, with α, τ-b and ICC differences, a plain reading of
the α difference's 95 % CI, and a reading of it adjusted for the table's many comparisons (Holm–Bonferroni over
the table's Δα rows, on the two-sided paired-bootstrap p). Rows a run did not make (no fine-tuning, no
self-traces, ...) are simply absent."""

from __future__ import annotations

from thinktrace.agreement import holm
from thinktrace.report.format import ci_is_undefined, fmt_diff, pct
from thinktrace.report.model import Block, Strong, Table, Text
from thinktrace.report.flags import variant_flags
from thinktrace.runview import RunView

#: (kind of b, kind of a, the question the paired difference b − a answers), in reading order
QUESTIONS: tuple[tuple[str, str, str], ...] = (
    ("compiled-rater", "baseline", "compiled rater (refined guideline + trace demos) vs the original zero-shot rater"),
    ("compiled-rater", "trace-demos", "compiled rater vs trace demos alone"),
    ("compiled-rater", "refined-guideline", "compiled rater vs the refined guideline alone"),
    ("trace-sft", "label-sft", "traces vs labels alone (fine-tuned student)"),
    ("trace-sft-multitask", "label-sft", "traces vs labels alone, multitask format (rated by its label alone)"),
    ("trace-sft-label-first", "label-sft", "traces vs labels alone, label-then-rationale format"),
    ("trace-sft", "label-sft-all", "traces vs labels on all train items (the practical baseline)"),
    ("trace-sft-multitask", "label-sft-all", "traces (multitask) vs labels on all train items"),
    ("trace-sft-label-first", "label-sft-all", "traces (label then rationale) vs labels on all train items"),
    ("trace-sft-multitask", "trace-sft", "multitask vs rationale-then-label format"),
    ("trace-sft-label-first", "trace-sft", "label-then-rationale vs rationale-then-label format"),
    ("trace-sft", "shuffled-trace-sft",
     "traces vs shuffled traces (same rows, rationales moved to another item of the same label)"),
    ("trace-sft-multitask", "shuffled-trace-sft-multitask", "traces vs shuffled traces, multitask format"),
    ("trace-sft-label-first", "shuffled-trace-sft-label-first",
     "traces vs shuffled traces, label-then-rationale format"),
    ("label-sft-all", "label-sft", "labels on all train items vs on the explained items only"),
    ("trace-sft", "baseline", "fine-tuned on traces vs untuned"),
    ("trace-sft-multitask", "baseline", "fine-tuned on traces (multitask) vs untuned"),
    ("trace-sft-label-first", "baseline", "fine-tuned on traces (label then rationale) vs untuned"),
    ("label-sft", "baseline", "fine-tuned on labels vs untuned"),
    ("label-sft-all", "baseline", "fine-tuned on labels of all train items vs untuned"),
    ("trace-sft-common", "self-trace-sft", "teacher's traces vs the student's own (same items, same rows)"),
    ("refined-guideline", "baseline", "refined vs original guideline"),
    ("trace-demos", "baseline", "accepted traces as few-shot demos vs zero-shot"),
    # a reviewed resume (`compile --reviewed`, thinktrace.review): the same uses on the reviewed traces vs the raw
    ("reviewed-trace-sft", "trace-sft", "reviewed vs raw traces (fine-tuned student)"),
    ("reviewed-trace-demos", "trace-demos", "reviewed vs raw traces as few-shot demos"),
    ("reviewed-refined-guideline", "refined-guideline", "guideline refined from reviewed vs raw traces"),
)


#: the family-wise level the Holm reading tests at
LEVEL = 0.05


def reading(diff: dict | None) -> str:
    """What a paired difference's 95 % CI says, in words: better / worse only when the CI excludes 0; "undefined"
    when fewer than 95 % of its resamples gave a defined difference (the CI is then not a number)."""
    ci = (diff or {}).get("ci") or [None, None]
    if not diff or diff.get("diff") is None:
        return "n/a"
    if ci_is_undefined(diff):
        return "undefined"
    if ci[0] is None or ci[1] is None:
        return "no CI (evaluate.bootstrap 0)"
    if ci[0] > 0:
        return "better (CI above 0)"
    if ci[1] < 0:
        return "worse (CI below 0)"
    return "no clear difference (CI spans 0)"


def _p_two_sided(diff: dict | None) -> float | None:
    """The two-sided bootstrap p a row enters the Holm family with; None (taken as 1) when it has none: no
    difference, an undefined CI, no bootstrap, or a metrics.json written before p_two_sided existed."""
    if not diff or diff.get("diff") is None or ci_is_undefined(diff):
        return None
    return diff.get("p_two_sided")


def holm_readings(diffs: list[dict | None], level: float = LEVEL) -> list[str]:
    """The Holm–Bonferroni reading of each Δα row of one findings table (the family: all its rows).

    Each row's two-sided paired-bootstrap p (`paired_difference`'s p_two_sided) is Holm-adjusted over the family
    (`thinktrace.agreement.holm`; a row without a p counts in the family as p = 1). A row reads better / worse when
    its adjusted p is below `level` (the direction: the side most resamples fall on, i.e. the one-sided p below
    0.5), else "no clear difference"; "undefined" when its CI is undefined, "n/a" without a difference or a p."""
    adjusted = holm([_p_two_sided(d) for d in diffs])
    out = []
    for d, adj in zip(diffs, adjusted):
        if not d or d.get("diff") is None:
            out.append("n/a")
        elif ci_is_undefined(d):
            out.append("undefined")
        elif adj is None:
            out.append("n/a (no two-sided p)")
        else:
            shown = "< 0.001" if adj < 0.001 else f"{adj:.3f}"
            if adj < level:
                one_sided = d.get("p_b_not_better", d.get("p_after_not_better"))
                better = one_sided < 0.5 if one_sided is not None else d["diff"] > 0
                out.append(f"{'better' if better else 'worse'} (p_adj {shown})")
            else:
                out.append(f"no clear difference (p_adj {shown})")
    return out


def flags_note(run: RunView, split: str, *names: str) -> str:
    """`; flagged: NAME answers 1 for 149/150 items` for the compared variants that failed or collapsed."""
    flags = [f"{name} {', '.join(found)}" for name in names if (found := variant_flags(run, split, name))]
    return f"; flagged: {'; '.join(flags)}" if flags else ""


def rows(run: RunView, split: str) -> list[list[str]]:
    """One row per comparison of `split` whose kinds answer a question in `QUESTIONS`, then the change of
    agreement among LLM raters when the guideline was refined. The last column is the Holm reading over the
    table's rows (`holm_readings`)."""
    kinds = {v["name"]: v.get("kind", "") for v in run.variants(split)}
    data = run.split(split)
    comparisons = data.get("comparisons") or []
    out, diffs = [], []
    for b_kind, a_kind, question in QUESTIONS:
        for c in comparisons:
            if kinds.get(c.get("b")) == b_kind and kinds.get(c.get("a")) == a_kind:
                out.append([question, f"{c['b']} − {c['a']}", fmt_diff(c), fmt_diff(c.get("kendall_tau_b_diff")),
                            fmt_diff(c.get("icc_diff")), reading(c) + flags_note(run, split, c["b"], c["a"])])
                diffs.append(c)
    change = data.get("inter_rater_change")
    for ch in change if isinstance(change, list) else [change] if change else []:
        out.append(["agreement among LLM raters, refined vs original guideline",
                    f"α among {ch.get('b')} − among {ch.get('a')}", fmt_diff(ch), "n/a",
                    fmt_diff(ch.get("icc_diff")), reading(ch)])
        diffs.append(ch)
    return [row + [adjusted] for row, adjusted in zip(out, holm_readings(diffs))]


def findings(run: RunView) -> list[Block]:
    split = run.main_split()
    if split is None:
        return [Text("no evaluation results: nothing to read off", "note")]
    body = rows(run, split)
    if not body:
        return [Text("this run made none of the comparisons the paper's questions need (fine-tuning with the "
                     "label-only ablation, self-traces, guideline refinement, demos)", "note")]
    blocks: list[Block] = [
        Table(["question", "comparison (b − a)", "Δα (95% CI)", "Δτ-b (95% CI)", "ΔICC(3,1) (95% CI)",
               "reading (Δα)", "Holm (α rows)"], body),
        Text(f"{split} split, {run.split(split).get('n_items', '?')} items. Paired bootstrap differences (both "
             "variants scored on the same resampled items). The reading says better or worse only when the 95 % CI "
             "of Δα excludes 0; τ-b is n/a among LLM raters (it is a rater-vs-human statistic). A CI is undefined "
             "when fewer than 95 % of the resamples gave a defined value (the count is shown). Holm (α rows): the "
             f"two-sided bootstrap p of each Δα, Holm–Bonferroni adjusted over the {len(body)} rows of this table; "
             f"better or worse when the adjusted p is below {LEVEL}.", "note")]
    traces = run.metrics.get("traces") or {}
    if traces.get("examples"):
        blocks.append(Text([Strong("Traces:"), f" {traces.get('explained', 0)} of {traces['examples']} train items "
                            f"explained ({pct(traces.get('explained_rate'))}), {traces.get('accepted', 0)} of "
                            f"{traces.get('attempts', 0)} samples accepted ({pct(traces.get('acceptance_rate'))})."]))
    review = traces.get("reviewed")
    if review:
        blocks.append(reviewed_note(review))
    from thinktrace.report.sections.traces import trace_quality_finding  # the masked trace vs none, vs rejected

    finding = trace_quality_finding(run.metrics.get("trace_quality"))
    if finding is not None:
        blocks.append(finding)
    return blocks


def reviewed_note(review: dict) -> Text:
    """How many traces the reviewed rows rest on (metrics.json traces.reviewed, written by a reviewed resume)."""
    edits = review.get("edits_not_confirmed") or 0
    return Text([Strong("Reviewed vs raw traces:"),
                 f" {review.get('reviewed', 0)} of {review.get('traces', 0)} traces reviewed by "
                 f"{review.get('reviewer') or '?'}: {review.get('accepted', 0)} accepted, {review.get('rejected', 0)} "
                 f"rejected, {review.get('edited', 0)} edited (each edit read back to its human label by the blind "
                 f"judge), {review.get('unreviewed', 0)} unreviewed kept as they were"
                 + (f"; {edits} edit(s) the judge read to another label did not count" if edits else "")
                 + f". The reviewed set has {review.get('reviewed_traces', '?')} traces (raw: "
                 f"{review.get('raw_traces', '?')}); the reviewed rows above are paired with the raw ones on the same "
                 "evaluation items."])
