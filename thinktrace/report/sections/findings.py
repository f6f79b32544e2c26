"""The report's answer to the paper's two questions, read off the run's paired comparisons: (1) does an open rater
fine-tuned on inferred traces agree with humans better than one fine-tuned on labels alone (and is it the traces
or the stronger teacher)? (2) does a guideline refined from the traces raise LLM-human agreement and agreement
among the LLM raters? One row per comparison the run made, with α, τ-b and ICC differences and a plain reading of
the α difference's 95 % CI. Rows a run did not make (no fine-tuning, no self-traces, ...) are simply absent."""

from __future__ import annotations

from thinktrace.report.format import fmt_diff, fmt_est, pct
from thinktrace.report.model import Block, Strong, Table, Text
from thinktrace.runview import RunView

#: (kind of b, kind of a, the question the paired difference b − a answers), in reading order
QUESTIONS: tuple[tuple[str, str, str], ...] = (
    ("trace-sft", "label-sft", "traces vs labels alone (fine-tuned student)"),
    ("trace-sft", "baseline", "fine-tuned on traces vs untuned"),
    ("label-sft", "baseline", "fine-tuned on labels vs untuned"),
    ("trace-sft-common", "self-trace-sft", "teacher's traces vs the student's own (same items, same rows)"),
    ("refined-guideline", "baseline", "refined vs original guideline"),
    ("trace-demos", "baseline", "accepted traces as few-shot demos vs zero-shot"),
)


def reading(diff: dict | None) -> str:
    """What a paired difference's 95 % CI says, in words: better / worse only when the CI excludes 0."""
    ci = (diff or {}).get("ci") or [None, None]
    if not diff or diff.get("diff") is None:
        return "n/a"
    if ci[0] is None or ci[1] is None:
        return "no CI (evaluate.bootstrap 0)"
    if ci[0] > 0:
        return "better (CI above 0)"
    if ci[1] < 0:
        return "worse (CI below 0)"
    return "no clear difference (CI spans 0)"


def rows(run: RunView, split: str) -> list[list[str]]:
    """One row per comparison of `split` whose kinds answer a question in `QUESTIONS`, then the change of
    agreement among LLM raters when the guideline was refined."""
    kinds = {v["name"]: v.get("kind", "") for v in run.variants(split)}
    data = run.split(split)
    comparisons = data.get("comparisons") or []
    out = []
    for b_kind, a_kind, question in QUESTIONS:
        for c in comparisons:
            if kinds.get(c.get("b")) == b_kind and kinds.get(c.get("a")) == a_kind:
                out.append([question, f"{c['b']} − {c['a']}", fmt_diff(c), fmt_diff(c.get("kendall_tau_b_diff")),
                            fmt_diff(c.get("icc_diff")), reading(c)])
    change = data.get("inter_rater_change")
    for ch in change if isinstance(change, list) else [change] if change else []:
        out.append(["agreement among LLM raters, refined vs original guideline",
                    f"α among {ch.get('b')} − among {ch.get('a')}", fmt_diff(ch), "n/a",
                    fmt_diff(ch.get("icc_diff")), reading(ch)])
    return out


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
               "reading (Δα)"], body),
        Text(f"{split} split, {run.split(split).get('n_items', '?')} items. Paired bootstrap differences (both "
             "variants scored on the same resampled items). The reading says better or worse only when the 95 % CI "
             "of Δα excludes 0; τ-b is n/a among LLM raters (it is a rater-vs-human statistic).", "note")]
    traces = run.metrics.get("traces") or {}
    if traces.get("examples"):
        blocks.append(Text([Strong("Traces:"), f" {traces.get('explained', 0)} of {traces['examples']} train items "
                            f"explained ({pct(traces.get('explained_rate'))}), {traces.get('accepted', 0)} of "
                            f"{traces.get('attempts', 0)} samples accepted ({pct(traces.get('acceptance_rate'))})."]))
    overall = (run.metrics.get("trace_quality") or {}).get("overall") or {}
    if overall.get("n"):
        moves = overall.get("moves_toward_human")
        blocks.append(Text([Strong("Trace quality:"), f" the untuned reader returned the human label "
                            f"{fmt_est(overall.get('with_trace'))} of the time with the accepted trace vs "
                            f"{fmt_est(overall.get('without_trace'))} without it (Δ "
                            f"{fmt_diff(overall.get('with_trace_minus_without_trace'))}, {overall['n']} traces): the "
                            + ("traces move the reader toward the human label." if moves else
                               "traces do not clearly move the reader toward the human label.")],
                           "para" if moves else "warn"))
    return blocks
