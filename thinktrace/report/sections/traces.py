"""The parts of a run report about the inferred traces and what was trained on them: rejection sampling, trace
quality, sample traces, fine-tuning."""

from __future__ import annotations

from collections import defaultdict

import thinktrace._plots as _plots
from thinktrace.finetune.formats import SHUFFLED_KINDS
from thinktrace.report.format import fmt_diff, fmt_est, fmt_p, num, pct
from thinktrace.report.model import Block, Figure, Heading, Quote, Strong, Table, Text
from thinktrace.runview import RunView


def _by_attempt(run: RunView) -> list[tuple[int, int, float | None]]:
    by = (run.metrics.get("traces") or {}).get("by_attempt")
    if by:
        return [(int(k) + 1, int(v.get("n", 0)), v.get("rate")) for k, v in sorted(by.items(), key=lambda kv: int(kv[0]))]
    acc: dict[int, list[int]] = defaultdict(list)
    for r in run.attempts:
        if isinstance(r.get("attempt"), int):
            acc[r["attempt"]].append(int(bool(r.get("accepted"))))
    return [(i + 1, len(v), sum(v) / len(v) if v else None) for i, v in sorted(acc.items())]


def traces(run: RunView) -> list[Block]:
    t = run.metrics.get("traces")
    if not t and not run.attempts:
        return [Text("no trace inference in this run (sampling disabled or not run)", "note")]
    blocks: list[Block] = []
    if t:
        failed = t.get("failed") or {}
        by_type = f" {failed['by_type']}" if failed.get("by_type") else ""
        blocks.append(Table(None, [
            ("examples explained", f"{t.get('explained')}/{t.get('examples')} ({pct(t.get('explained_rate'))})"),
            ("attempts / accepted", f"{t.get('attempts')} / {t.get('accepted')} ({pct(t.get('acceptance_rate'))})"),
            ("LM samples per accepted trace", t.get("samples_per_accepted_trace") or "n/a"),
            *([("few-shot demos (program.json)", f"{t['demos']}" + (" (each rater also evaluated with them: "
                                                                   "<rater>+demos)" if t["demos"] else
                                                                   " (no accepted trace: no demos variant)"))]
              if "demos" in t else []),
            ("failed attempts", f"{failed.get('errors', 0)} LM errors{by_type}, {failed.get('unparsed', 0)} "
                                f"unparseable labels, {failed.get('no_rationale', 0)} without a rationale"),
            *([("cut answers (max_tokens)", _cut_row(t["cut"], t.get("accept_cut")))] if "cut" in t else []),
        ]))
    points = _by_attempt(run)
    if points:
        blocks.append(Figure(_plots.acceptance_by_attempt(points), "acceptance-by-attempt.png",
                             "acceptance rate by attempt number"))
        blocks.append(Text("Sampling stops for an example once it has `keep` accepted traces, so later attempts are "
                           "made only for examples not yet explained: they concentrate on the harder ones.", "note"))
    per_label = (t or {}).get("per_label") or {}
    if per_label:
        labels = list(per_label)
        blocks.append(Figure(_plots.per_label_acceptance(labels, [per_label[k].get("rate") for k in labels],
                                                         [per_label[k].get("explained_rate") for k in labels]),
                             "acceptance-per-label.png", "acceptance per human label"))
        blocks.append(Table(["human label", "examples", "explained", "attempts", "acceptance rate"],
                            [[k, s.get("examples"), f"{s.get('explained')} ({pct(s.get('explained_rate'))})",
                              s.get("attempts"), pct(s.get("rate"))] for k, s in per_label.items()]))
    per_strategy = (t or {}).get("per_strategy") or {}
    if per_strategy:
        cut = any("cut" in s for s in per_strategy.values())  # runs made before cuts were counted have none
        blocks.append(Table(["strategy", "attempts", "accepted", "rate", "examples explained",
                             *(["cut", "cut, label matched"] if cut else [])],
                            [[k, s.get("attempts"), s.get("accepted"), pct(s.get("rate")), s.get("examples_explained"),
                              *([(s.get("cut") or {}).get("attempts", 0),
                                 (s.get("cut") or {}).get("label_matched_rejected", 0)] if cut else [])]
                             for k, s in per_strategy.items()]))
    unexplained = (t or {}).get("unexplained") or []
    if unexplained:
        more = f" and {len(unexplained) - 20} more" if len(unexplained) > 20 else ""
        blocks.append(Text(f"Examples no strategy could explain: {', '.join(map(str, unexplained[:20]))}{more}."))
    return blocks


def _cut_row(cut: dict, accept_cut) -> str:
    """The acceptance table's line on cut answers (metrics `traces.cut`)."""
    n, forced = cut.get("attempts", 0), cut.get("label_source_choice", 0)
    text = f"{n} attempts cut ({forced} with the label written under the grammar after the cut)"
    if accept_cut:
        return text + f"; {cut.get('accepted', 0)} accepted as traces (sampling.accept_cut)"
    return text + (f"; none accepted: {cut.get('label_matched_rejected', 0)} matched the human label and were "
                   "rejected for the cut (sampling.accept_cut false)")


def _verdict(flag) -> str:
    return {True: "yes", False: "no"}.get(flag, "n/a")


MASKED_KEY, RAW_KEY = "masked_trace_minus_without_trace", "with_trace_minus_without_trace"
AR_KEY = "masked_trace_minus_masked_rejected_trace"


def accepted_vs_rejected(diff: dict | None) -> str | None:
    """Accepted − rejected (masked), in words: more / less only when the 95 % CI excludes 0."""
    if not diff or diff.get("diff") is None:
        return None
    low, high = diff.get("ci") or [None, None]
    if low is None or high is None:
        return ("an accepted trace lifts the reader more than a rejected one" if diff["diff"] > 0 else
                "a rejected trace lifts the reader as much as an accepted one or more") + \
            " (no CI: evaluate.bootstrap 0)"
    if low > 0:
        return "an accepted trace lifts the reader more than a rejected one (the CI lies above 0)"
    if high < 0:
        return "a rejected trace lifts the reader more than an accepted one (the CI lies below 0)"
    return "a rejected trace lifts the reader about as much as an accepted one (the CI includes 0)"


def _leak_text(leaks: dict) -> str:
    acc, rej = leaks.get("accepted") or {}, leaks.get("rejected") or {}
    text = (f"Label statements (thinktrace.leak): {acc.get('states_own_label', 0)} of {acc.get('n', 0)} accepted "
            f"traces state their own label ({pct(acc.get('share_states_own_label'))})")
    if rej.get("n"):
        text += (f", {rej.get('states_own_label', 0)} of {rej['n']} rejected traces theirs "
                 f"({pct(rej.get('share_states_own_label'))}; {rej.get('states_human_label', 0)} state the human "
                 "label)")
    return (text + f". The mask ({leaks.get('placeholder', '[label]')} for each statement) changed "
            f"{acc.get('masked', 0)} accepted and {rej.get('masked', 0)} rejected traces; label leaks left after "
            f"masking: {leaks.get('residual_after_mask', 0)}.")


def trace_quality(run: RunView) -> list[Block]:
    """Does each accepted trace carry its label? The reader's rate of returning the human label with the trace
    (its label statements masked: the main condition; and raw), without it, and with a rejected trace of the same
    example (metrics `trace_quality`)."""
    q = run.metrics.get("trace_quality")
    if not q:
        return [Text("no trace-quality check in this run (trace_quality off, or no sampling)", "note")]
    overall = q.get("overall") or {}
    blocks: list[Block] = [Text(
        f"The reader model {q.get('reader')} was shown each accepted trace's item and the trace, never the trace's "
        "label, and asked for the label alone; the same reader labelled the item without any trace. The main "
        "condition shows the trace with every statement of a label masked (a trace that writes \"I label this as "
        "-2\" lets the reader copy the number), the same mask for accepted and rejected traces; the raw trace is a "
        "second condition. Rates of returning the human label, with 95 % bootstrap CIs; differences are paired on "
        f"the same traces ({q.get('n_traces')} traces of {q.get('n_items')} items).")]
    if q.get("leaks"):
        blocks.append(Text(_leak_text(q["leaks"])))
    if "masked_trace" not in overall:
        blocks.append(Text("This run was checked before label statements were masked: its verdict reads the raw "
                           "trace, which the reader can copy; resume it to add the masked conditions.", "warn"))
    blocks += [Text(str(w), "warn") for w in q.get("warnings") or []]
    groups = [("all", overall)] + list((q.get("per_label") or {}).items())
    blocks.append(Table(["human label", "traces", "masked trace", "raw trace", "without trace", "masked − without",
                         "p (not better)", "raw − without", "traces help? (masked)"],
                        [[lab, g.get("n", 0), fmt_est(g.get("masked_trace")), fmt_est(g.get("with_trace")),
                          fmt_est(g.get("without_trace")), fmt_diff(g.get(MASKED_KEY)),
                          fmt_p((g.get(MASKED_KEY) or {}).get("p_b_not_better")), fmt_diff(g.get(RAW_KEY)),
                          _verdict(g.get("moves_toward_human") if "masked_trace" in g else None)]
                         for lab, g in groups]))
    rejected = overall.get("rejected") or {}
    if rejected.get("n"):
        by = ", ".join(f"{k} {v}" for k, v in (rejected.get("by_strategy") or {}).items())
        reading = accepted_vs_rejected(rejected.get(AR_KEY))
        blocks.append(Text(
            f"Rejected-trace subset: the {rejected['n']} accepted traces (of {rejected.get('n_items')} items) whose "
            f"example also has a rejected attempt with a rationale (the first one; strategy: {by}). The same "
            "reader on the same traces, with the accepted trace, with the rejected one (each masked, and raw), and "
            "without a trace." + (f" Masked: {reading}, accepted − rejected {fmt_diff(rejected.get(AR_KEY))}."
                                  if reading else "")))
        rows = []
        for lab, g in groups:
            r = g.get("rejected") or {}
            if r.get("n"):
                rows.append([lab, r["n"], fmt_est(r.get("masked_trace")), fmt_est(r.get("masked_rejected_trace")),
                             fmt_diff(r.get(AR_KEY)), fmt_est(r.get("with_trace")), fmt_est(r.get("rejected_trace")),
                             fmt_diff(r.get("with_trace_minus_rejected_trace")), fmt_est(r.get("without_trace"))])
        blocks.append(Table(["human label", "traces", "accepted (masked)", "rejected (masked)",
                             "accepted − rejected (masked)", "accepted (raw)", "rejected (raw)",
                             "accepted − rejected (raw)", "without trace"], rows))
    else:
        blocks.append(Text("no example has both an accepted and a rejected trace: no rejected-trace comparison",
                           "note"))
    unparsed = {k: v for k, v in (q.get("n_unparsed") or {}).items() if v}
    errors = {k: v for k, v in (q.get("n_errors") or {}).items() if v}
    if unparsed or errors:
        blocks.append(Text(f"unparseable answers (counted as misses): {unparsed or 0}; failed calls (their traces "
                           f"left out of the comparisons they belong to): {errors or 0}", "note"))
    blocks.append(Text(f"Rule: {q.get('rule')}.", "note"))
    return blocks


def trace_quality_finding(q: dict | None) -> Text | None:
    """The findings' paragraph on trace quality: the masked trace vs none (the verdict), accepted vs rejected
    (masked), and the raw trace beside them; None when the run made no check."""
    overall = (q or {}).get("overall") or {}
    if not overall.get("n"):
        return None
    moves = overall.get("moves_toward_human")
    if "masked_trace" not in overall:  # a run checked before masking: the raw trace only
        return Text([Strong("Trace quality:"), f" the untuned reader returned the human label "
                     f"{fmt_est(overall.get('with_trace'))} of the time with the accepted trace vs "
                     f"{fmt_est(overall.get('without_trace'))} without it (Δ {fmt_diff(overall.get(RAW_KEY))}, "
                     f"{overall['n']} traces), label statements not masked: a reader can copy a stated label, so this "
                     "is no evidence that the reasoning carries it."], "warn")
    text = (f" with every statement of a label masked, the untuned reader returned the human label "
            f"{fmt_est(overall.get('masked_trace'))} of the time with the accepted trace vs "
            f"{fmt_est(overall.get('without_trace'))} without it (Δ {fmt_diff(overall.get(MASKED_KEY))}, "
            f"{overall['n']} traces): the " + ("traces move the reader toward the human label." if moves else
                                               "traces do not clearly move the reader toward the human label."))
    rejected = overall.get("rejected") or {}
    reading = accepted_vs_rejected(rejected.get(AR_KEY)) if rejected.get("n") else None
    if reading:
        text += (f" Accepted vs rejected (masked, {rejected['n']} traces): {reading}, Δ "
                 f"{fmt_diff(rejected.get(AR_KEY))}.")
    acc = ((q or {}).get("leaks") or {}).get("accepted") or {}
    stated = f" ({acc['states_own_label']} of {acc['n']} accepted traces state their label)" if acc.get("n") else ""
    text += (f" With the raw trace{stated}: {fmt_est(overall.get('with_trace'))} (Δ vs without "
             f"{fmt_diff(overall.get(RAW_KEY))}).")
    return Text([Strong("Trace quality:"), text], "para" if moves else "warn")


def samples(run: RunView, per_label: int = 3) -> list[Block]:
    if not run.traces:
        return [Text("no traces.jsonl: no accepted traces to show", "note")]
    groups: dict[str, list[dict]] = defaultdict(list)
    for t in run.traces:
        groups[str(t.get("human", t.get("label")))].append(t)
    order = [lab for lab in run.label_set if lab in groups] + sorted(set(groups) - set(run.label_set))
    blocks: list[Block] = []
    for label in order:
        blocks.append(Heading(f"human label: {label} ({len(groups[label])} accepted)"))
        for t in groups[label][:per_label]:
            humans = t.get("human_labels")
            n = t.get("attempt")
            meta = f"item {t.get('item_id')} · strategy {t.get('strategy')} · " \
                   f"attempt {n + 1 if isinstance(n, int) else n}"
            if t.get("annotator"):
                meta += f" · annotator {t['annotator']}"
            if humans:
                meta += f" · human labels: {', '.join(map(str, humans))}"
            blocks.append(Quote(str(t.get("item")), meta, str(t.get("rationale"))))
    missing = [lab for lab in run.label_set if lab not in groups]
    if missing:
        blocks.append(Text(f"no accepted trace for: {', '.join(missing)}", "note"))
    return blocks


def finetune(run: RunView) -> list[Block]:
    logs = run.train_logs()
    curves = {name: [(r["step"], r["loss"]) for r in rows
                     if isinstance(r.get("step"), (int, float)) and isinstance(r.get("loss"), (int, float))]
              for name, rows in logs.items()}
    curves = {k: v for k, v in curves.items() if v}
    results = run.metrics.get("finetune")
    if isinstance(results, dict) and results.get("skipped"):
        return [Text(f"Fine-tuning skipped: {results['skipped']}.", "warn")]
    results = {k: r for k, r in results.items() if isinstance(r, dict)} if isinstance(results, dict) else {}
    if not curves and not results:
        return [Text("no fine-tuning in this run (no finetune/<variant>/train_log.jsonl)", "note")]
    blocks: list[Block] = [Text("LoRA SFT on the train split's traces; the label-only ablation on the same items.")]
    blocks += _self_traces(run.metrics.get("self_traces"))
    if results:
        # which rows each adapter was given (runs made before this was recorded show the training numbers only)
        given = any(isinstance(r.get("trained_on"), dict) for r in results.values())
        blocks.append(Table(["adapter", "base", *(["trained on", "examples", "rows", "items", "rows per label"]
                                                   if given else []),
                             "train rows", "truncated", "steps", "final loss", "train time"],
                            [[k, r.get("base", ""), *(_trained_on(r.get("trained_on")) if given else []),
                              r.get("rows", ""), r.get("truncated_rows", 0), r.get("steps", ""),
                              num(r.get("final_loss"), ".4f"), num(r.get("total_train_seconds"), ".0f") + " s"]
                             for k, r in results.items()]))
        if given:
            blocks.append(Text("rows / items: the rows the adapter was given and the items they cover; rows per "
                               "label: its examples per label (a multitask trace, two rows, counts once); train "
                               "rows: those it trained on (after `finetune.max_rows` and rows dropped for length).",
                               "note"))
            caps = {r["trained_on"].get("max_per_label") for r in results.values()
                    if isinstance(r.get("trained_on"), dict)} - {None}
            if caps:
                blocks.append(Text(f"capped at {', '.join(map(str, sorted(caps)))} examples per label "
                                   "(`finetune.max_per_label`, the first ones in trace order), every adapter alike.",
                                   "note"))
        controls = {k: results[k]["trained_on"] for k in SHUFFLED_KINDS.values()
                    if "rationales_moved" in ((results.get(k) or {}).get("trained_on") or {})}
        if controls:
            first = next(iter(controls.values()))
            of = ", ".join(f"{k} ({info.get('selection', '')})" for k, info in controls.items())
            text = (f"shuffled-trace controls: {of}, each rationale moved to another item of the same label; "
                    f"{first['rationales_moved']} rationales moved, {first.get('rationales_kept', 0)} kept on their "
                    "own item (their label has no other item to take them), so a format − its shuffled control is "
                    "what fitting the item adds to a rationale.")
            blocks.append(Text(text, "note"))
    if curves:
        rows = [[name, len(pts), pts[-1][0], f"{pts[0][1]:.4f}", f"{pts[-1][1]:.4f}",
                 f"{min(v for _, v in pts):.4f}"] for name, pts in curves.items()]
        blocks += [Figure(_plots.loss_curves(curves), "loss-curves.png", "training loss curves"),
                   Table(["adapter", "logged steps", "last step", "first loss", "last loss", "min loss"], rows)]
    else:
        blocks.append(Text("no train_log.jsonl with loss records: no loss curve", "note"))
    return blocks


def _trained_on(info) -> list:
    """[source, which examples, rows given, items covered, examples per label] of an adapter (`trained_on` in its
    result; a multitask trace counts once per label)."""
    if not isinstance(info, dict):
        return ["", "", "", "", ""]
    per_label = info.get("rows_per_label")
    per_label = ", ".join(f"{k}: {v}" for k, v in per_label.items()) if isinstance(per_label, dict) else ""
    return [info.get("source", ""), info.get("selection", ""), info.get("rows", ""), info.get("items", ""),
            per_label]


def _self_traces(s) -> list[Block]:
    """The student's own traces (`sampling.self_traces`): how many of the teacher's examples it explained and the
    common examples the teacher-vs-self pair trains on."""
    if not isinstance(s, dict):
        return []
    c = s.get("common") or {}
    return [Text(
        f"Student's own traces ({s.get('generator')}, sampled like the teacher's on the {c.get('sampled')} examples "
        f"the teacher explained): {s.get('explained')} explained, {s.get('accepted')} of {s.get('attempts')} attempts "
        f"accepted. Common examples (both explained): {c.get('common_examples')} ({c.get('common_items')} items); "
        f"trace-sft-common (the teacher's traces) and self-trace-sft (the student's own) each train on "
        f"{c.get('rows')} rows of exactly these examples, as many per example, so their paired difference "
        "(teacher − self) is the teacher's advantage with the data held fixed; trace-sft keeps all the teacher's "
        "traces.")]
