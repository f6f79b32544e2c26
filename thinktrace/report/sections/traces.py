"""The parts of a run report about the inferred traces and what was trained on them: rejection sampling, trace
quality, sample traces, fine-tuning."""

from __future__ import annotations

from collections import defaultdict

from thinktrace import _plots
from thinktrace.report.format import fmt_diff, fmt_est, fmt_p, num, pct
from thinktrace.report.model import Block, Figure, Heading, Quote, Table, Text
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
        blocks.append(Table(["strategy", "attempts", "accepted", "rate", "examples explained"],
                            [[k, s.get("attempts"), s.get("accepted"), pct(s.get("rate")), s.get("examples_explained")]
                             for k, s in per_strategy.items()]))
    unexplained = (t or {}).get("unexplained") or []
    if unexplained:
        more = f" and {len(unexplained) - 20} more" if len(unexplained) > 20 else ""
        blocks.append(Text(f"Examples no strategy could explain: {', '.join(map(str, unexplained[:20]))}{more}."))
    return blocks


def _verdict(flag) -> str:
    return {True: "yes", False: "no"}.get(flag, "n/a")


def trace_quality(run: RunView) -> list[Block]:
    """Does each accepted trace carry its label? The reader's rate of returning the human label with the trace,
    without it, and with a rejected trace of the same example (metrics `trace_quality`)."""
    q = run.metrics.get("trace_quality")
    if not q:
        return [Text("no trace-quality check in this run (trace_quality off, or no sampling)", "note")]
    blocks: list[Block] = [Text(
        f"The reader model {q.get('reader')} was shown each accepted trace's item and the "
        "trace, never the trace's label, and asked for the label alone; the same reader labelled the item without "
        "any trace. Rates of returning the human label, with 95 % bootstrap CIs; differences are paired on the same "
        f"traces ({q.get('n_traces')} traces of {q.get('n_items')} items).")]
    blocks += [Text(str(w), "warn") for w in q.get("warnings") or []]
    groups = [("all", q.get("overall") or {})] + list((q.get("per_label") or {}).items())
    key = "with_trace_minus_without_trace"
    blocks.append(Table(["human label", "traces", "with trace", "without trace", "with − without",
                         "p (not better)", "traces help?"],
                        [[lab, g.get("n", 0), fmt_est(g.get("with_trace")), fmt_est(g.get("without_trace")),
                          fmt_diff(g.get(key)), fmt_p((g.get(key) or {}).get("p_b_not_better")),
                          _verdict(g.get("moves_toward_human"))] for lab, g in groups]))
    rejected = (q.get("overall") or {}).get("rejected") or {}
    if rejected.get("n"):
        by = ", ".join(f"{k} {v}" for k, v in (rejected.get("by_strategy") or {}).items())
        blocks.append(Text(
            f"Rejected-trace subset: the {rejected['n']} accepted traces (of {rejected.get('n_items')} items) whose "
            f"example also has a rejected attempt with a rationale (the first one; strategy: {by}). The same "
            "reader on the same traces, with the accepted trace, with the rejected one, and without a trace."))
        rows = []
        for lab, g in groups:
            r = g.get("rejected") or {}
            if r.get("n"):
                rows.append([lab, r["n"], fmt_est(r.get("with_trace")), fmt_est(r.get("rejected_trace")),
                             fmt_est(r.get("without_trace")), fmt_diff(r.get("with_trace_minus_rejected_trace"))])
        blocks.append(Table(["human label", "traces", "accepted trace", "rejected trace", "without trace",
                             "accepted − rejected"], rows))
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
        blocks.append(Table(["adapter", "base", *(["trained on", "examples", "rows", "items"] if given else []),
                             "train rows", "truncated", "steps", "final loss", "train time"],
                            [[k, r.get("base", ""), *(_trained_on(r.get("trained_on")) if given else []),
                              r.get("rows", ""), r.get("truncated_rows", 0), r.get("steps", ""),
                              num(r.get("final_loss"), ".4f"), num(r.get("total_train_seconds"), ".0f") + " s"]
                             for k, r in results.items()]))
        if given:
            blocks.append(Text("rows / items: the rows the adapter was given and the items they cover; train rows: "
                               "those it trained on (after `finetune.max_rows` and rows dropped for length).",
                               "note"))
    if curves:
        rows = [[name, len(pts), pts[-1][0], f"{pts[0][1]:.4f}", f"{pts[-1][1]:.4f}",
                 f"{min(v for _, v in pts):.4f}"] for name, pts in curves.items()]
        blocks += [Figure(_plots.loss_curves(curves), "loss-curves.png", "training loss curves"),
                   Table(["adapter", "logged steps", "last step", "first loss", "last loss", "min loss"], rows)]
    else:
        blocks.append(Text("no train_log.jsonl with loss records: no loss curve", "note"))
    return blocks


def _trained_on(info) -> list:
    """[source, which examples, rows given, items covered] of an adapter (`trained_on` in its result)."""
    if not isinstance(info, dict):
        return ["", "", "", ""]
    return [info.get("source", ""), info.get("selection", ""), info.get("rows", ""), info.get("items", "")]


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
