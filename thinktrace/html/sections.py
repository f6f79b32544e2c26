"""The sections of a run's report.html, each a function of the run (RunView) returning HTML."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from thinktrace import _plots
from thinktrace.html.blocks import Markup, esc, img, note, para, pct, pre, table, unified_diff_html
from thinktrace.report import ablation_rows, fmt_est, fmt_p, guideline_comparison
from thinktrace.runview import RunView


# -- sections of the run report -------------------------------------------------------------------------------


def _header(run: RunView) -> str:
    spec = run.metrics.get("spec") or {}
    parts = [f'<p class="sub">run folder <code>{esc(run.path.name)}</code> · {esc(run.timestamp)} · '
             f"seed {esc(spec.get('seed', '?'))}</p>"]
    if spec.get("description"):
        parts.append(para(spec["description"]))
    from thinktrace.report import status_banner

    banner = status_banner(run.metrics)
    if banner:
        parts.append(Markup(f'<p class="warn"><b>{esc(banner[0].lstrip("> ").replace("**", ""))}</b></p>'))
    return "".join(parts)


def section_data(run: RunView) -> str:
    d = run.metrics.get("data") or {}
    stats = d.get("stats") or {}
    rows = [("items", stats.get("items", "?")),
            ("per split", ", ".join(f"{k}: {v}" for k, v in (stats.get("per_split") or {}).items()) or "?"),
            ("label set", f"{', '.join(run.label_set)} ({run.level})"),
            ("human labels per item", d.get("labels_per_item", "n/a")),
            ("annotators", stats.get("annotators", "n/a")),
            ("gold label distribution",
             ", ".join(f"{k}: {v}" for k, v in (stats.get("gold_distribution") or {}).items()) or "n/a"),
            ("source", stats.get("file") or (run.spec.get("data") or {}).get("source") or "?")]
    body = table(None, rows, "kv")
    codebook = run.spec.get("codebook")
    if codebook:
        body += Markup(f"<details><summary>annotation guideline used</summary>{pre(codebook)}</details>")
    return body


def _ceiling(split: dict) -> dict | None:
    loo = (split.get("human_ceiling") or {}).get("loo_alpha") or {}
    if loo.get("value") is None:
        return None
    ci = loo.get("ci") or [None, None]
    return {"value": loo["value"], "lo": ci[0], "hi": ci[1]}


def section_agreement(run: RunView) -> str:
    if not run.splits():
        return note("no evaluation results in metrics.json")
    body = []
    second = ["accuracy", "macro_f1"] if run.level == "nominal" else ["mae", "spearman", "accuracy"]
    for split_name in run.splits():
        split = run.split(split_name)
        raters = split.get("raters") or {}
        body.append(f"<h3>{esc(split_name)} split ({esc(split.get('n_items', '?'))} items)</h3>")
        rows, plot_rows = [], []
        for v in run.variants(split_name):
            m = raters.get(v["name"])
            if m is None:
                continue
            a = m.get("alpha") or {}
            ci = a.get("ci") or [None, None]
            plot_rows.append({"label": v["name"], "value": a.get("value"), "lo": ci[0], "hi": ci[1],
                              "kind": v.get("kind")})
            tok = m.get("tokens") or {}
            n = m.get("n_items", 0)
            rows.append([v["name"], v.get("kind", ""), v.get("model") or "", fmt_est(a),
                         *[fmt_est(m.get(k)) for k in second], f"{n - m.get('n_unparsed', 0)}/{n}",
                         m.get("n_errors", 0), f"{tok.get('prompt', 0)}/{tok.get('completion', 0)}"])
        if plot_rows:
            body.append(img(_plots.alpha_forest(plot_rows, _ceiling(split), f"α vs human, {split_name} split"),
                            f"alpha per variant, {split_name} split"))
        body.append(table(["variant", "kind", "model", "α (95% CI)", *second, "parsed", "LM errors",
                           "tokens in/out"], rows))
        ceiling = split.get("human_ceiling")
        if ceiling:
            body.append(para(f"Human ceiling (leave-one-annotator-out α): {fmt_est(ceiling.get('loo_alpha'))}; "
                             f"α among all annotators: {fmt_est(ceiling.get('inter_annotator_alpha'))} "
                             f"({ceiling.get('n_annotators', '?')} annotators). Shown as the green band."))
        else:
            body.append(note("human ceiling: n/a (the data has no per-annotator labels)"))
        inter = split.get("inter_rater") or {}
        if isinstance(inter, dict) and "value" in inter:  # an older run: one estimate over all raters
            inter = {"all": inter}
        if isinstance(inter, dict) and inter:
            body.append(Markup("<h3>α among LLM raters</h3>"))
            body.append(table(["group", "raters", "α (95% CI)", "items"],
                              [[g, ", ".join(e.get("raters") or []), fmt_est(e), e.get("n", "")]
                               for g, e in inter.items() if isinstance(e, dict)]))
    body.append(note("α: Krippendorff's alpha between the rater and the aggregated human label (1 = perfect, "
                     "0 = chance; unparsed outputs are missing values). CIs: percentile bootstrap over items."))
    return "".join(body)


def section_comparisons(run: RunView) -> str:
    rows = []
    for split_name in run.splits():
        for c in run.split(split_name).get("comparisons") or []:
            p = c.get("p_b_not_better")
            rows.append([split_name, c.get("b"), c.get("a"), fmt_est({"value": c.get("diff"), "ci": c.get("ci")}),
                         "n/a" if p is None else f"{p:.3f}"])
    if not rows:
        return note("no paired comparisons in this run (only baseline variants)")
    return table(["split", "variant b", "vs a", "Δα = b − a (95% CI, paired bootstrap)", "P(b not better)"], rows) + \
        note("Paired bootstrap: each resample scores both variants on the same items, so item difficulty cancels.")


def confusion(records: Sequence[dict], labels: Sequence[str]) -> tuple[list[str], list[str], list[list[int]]]:
    """Rows: human labels (label-set order, then any others); columns: labels + 'unparsed'."""
    rows = list(labels) + sorted({str(r.get("human")) for r in records} - set(labels) - {"None"})
    cols = list(labels) + ["unparsed"]
    counts = [[0] * len(cols) for _ in rows]
    for r in records:
        h = r.get("human")
        if h is None or str(h) not in rows:
            continue
        lab = r.get("label")
        j = cols.index(str(lab)) if lab is not None and str(lab) in labels else len(cols) - 1
        counts[rows.index(str(h))][j] += 1
    return rows, cols, counts


def section_confusion(run: RunView) -> str:
    split = run.main_split()
    if split is None or not run.predictions:
        return note("no predictions.jsonl: confusion matrices need the prediction records")
    figs = []
    for v in run.variants(split):
        records = [r for r in run.predictions if r.get("split") == split and r.get("rater") == v["name"]]
        if not records:
            continue
        latest = {r.get("item_id"): r for r in records}
        rows, cols, counts = confusion(list(latest.values()), run.label_set)
        png = _plots.confusion_heatmap(counts, rows, cols, v["name"])
        figs.append(f"<figure>{img(png, 'confusion matrix of ' + v['name'], 'plot cm')}"
                    f"<figcaption>{esc(v['name'])} ({esc(v.get('kind', ''))})</figcaption></figure>")
    if not figs:
        return note(f"no prediction records on the {split} split")
    return (para(f"{split} split: human label (rows) against the rater's parsed label (columns); 'unparsed' "
                 "counts outputs with no valid label. Colour: share of the row.")
            + Markup('<div class="grid">' + "".join(figs) + "</div>"))


def _by_attempt(run: RunView) -> list[tuple[int, int, float | None]]:
    by = (run.metrics.get("traces") or {}).get("by_attempt")
    if by:
        return [(int(k) + 1, int(v.get("n", 0)), v.get("rate")) for k, v in sorted(by.items(), key=lambda kv: int(kv[0]))]
    acc: dict[int, list[int]] = defaultdict(list)
    for r in run.attempts:
        if isinstance(r.get("attempt"), int):
            acc[r["attempt"]].append(int(bool(r.get("accepted"))))
    return [(i + 1, len(v), sum(v) / len(v) if v else None) for i, v in sorted(acc.items())]


def section_traces(run: RunView) -> str:
    t = run.metrics.get("traces")
    if not t and not run.attempts:
        return note("no trace inference in this run (sampling disabled or not run)")
    body = []
    if t:
        failed = t.get("failed") or {}
        body.append(table(None, [
            ("examples explained", f"{t.get('explained')}/{t.get('examples')} ({pct(t.get('explained_rate'))})"),
            ("attempts / accepted", f"{t.get('attempts')} / {t.get('accepted')} ({pct(t.get('acceptance_rate'))})"),
            ("LM samples per accepted trace", t.get("samples_per_accepted_trace") or "n/a"),
            ("failed attempts", f"{failed.get('errors', 0)} LM errors, {failed.get('unparsed', 0)} unparseable, "
                                f"{failed.get('no_rationale', 0)} without a rationale"),
        ], "kv"))
    points = _by_attempt(run)
    if points:
        body.append(img(_plots.acceptance_by_attempt(points), "acceptance rate by attempt number"))
        body.append(note("Sampling stops for an example once it has `keep` accepted traces, so later attempts are "
                         "made only for examples not yet explained: they concentrate on the harder ones."))
    per_label = (t or {}).get("per_label") or {}
    if per_label:
        labels = list(per_label)
        body.append(img(_plots.per_label_acceptance(labels, [per_label[k].get("rate") for k in labels],
                                                    [per_label[k].get("explained_rate") for k in labels]),
                        "acceptance per human label"))
        body.append(table(["human label", "examples", "explained", "attempts", "acceptance rate"],
                          [[k, s.get("examples"), f"{s.get('explained')} ({pct(s.get('explained_rate'))})",
                            s.get("attempts"), pct(s.get("rate"))] for k, s in per_label.items()]))
    per_strategy = (t or {}).get("per_strategy") or {}
    if per_strategy:
        body.append(table(["strategy", "attempts", "accepted", "rate", "examples explained"],
                          [[k, s.get("attempts"), s.get("accepted"), pct(s.get("rate")), s.get("examples_explained")]
                           for k, s in per_strategy.items()]))
    unexplained = (t or {}).get("unexplained") or []
    if unexplained:
        more = f" and {len(unexplained) - 20} more" if len(unexplained) > 20 else ""
        body.append(para(f"Examples no strategy could explain: {', '.join(map(str, unexplained[:20]))}{more}."))
    return "".join(body)


def section_samples(run: RunView, per_label: int = 3) -> str:
    if not run.traces:
        return note("no traces.jsonl: no accepted traces to show")
    groups: dict[str, list[dict]] = defaultdict(list)
    for t in run.traces:
        groups[str(t.get("human", t.get("label")))].append(t)
    order = [lab for lab in run.label_set if lab in groups] + sorted(set(groups) - set(run.label_set))
    body = []
    for label in order:
        body.append(f"<h3>human label: {esc(label)} ({len(groups[label])} accepted)</h3>")
        for t in groups[label][:per_label]:
            humans = t.get("human_labels")
            n = t.get("attempt")
            meta = f"item {t.get('item_id')} · strategy {t.get('strategy')} · " \
                   f"attempt {n + 1 if isinstance(n, int) else n}"
            if t.get("annotator"):
                meta += f" · annotator {t['annotator']}"
            if humans:
                meta += f" · human labels: {', '.join(map(str, humans))}"
            body.append(f'<div class="trace"><div class="item">{esc(t.get("item"))}</div>'
                        f'<div class="sub">{esc(meta)}</div><div class="why">{esc(t.get("rationale"))}</div></div>')
    missing = [lab for lab in run.label_set if lab not in groups]
    if missing:
        body.append(note(f"no accepted trace for: {', '.join(missing)}"))
    return "".join(body)


def section_finetune(run: RunView) -> str:
    logs = run.train_logs()
    curves = {name: [(r["step"], r["loss"]) for r in rows
                     if isinstance(r.get("step"), (int, float)) and isinstance(r.get("loss"), (int, float))]
              for name, rows in logs.items()}
    curves = {k: v for k, v in curves.items() if v}
    results = run.metrics.get("finetune")
    results = {k: r for k, r in results.items() if isinstance(r, dict)} if isinstance(results, dict) else {}
    if not curves and not results:
        return note("no fine-tuning in this run (no finetune/<variant>/train_log.jsonl)")
    body = []
    if curves:
        rows = [[name, len(pts), pts[-1][0], f"{pts[0][1]:.4f}", f"{pts[-1][1]:.4f}",
                 f"{min(v for _, v in pts):.4f}"] for name, pts in curves.items()]
        body += [img(_plots.loss_curves(curves), "training loss curves"),
                 table(["adapter", "logged steps", "last step", "first loss", "last loss", "min loss"], rows)]
    else:
        body.append(note("no train_log.jsonl with loss records: no loss curve"))
    if results:
        def num(x, fmt):
            return "n/a" if not isinstance(x, (int, float)) else format(x, fmt)

        body.append(table(["adapter", "base", "train rows", "truncated", "steps", "final loss", "train time"],
                          [[k, r.get("base", ""), r.get("rows", ""), r.get("truncated_rows", ""), r.get("steps", ""),
                            num(r.get("final_loss"), ".4f"), num(r.get("total_train_seconds"), ".0f") + " s"]
                           for k, r in results.items()]))
    return "".join(body)


def _candidates(g) -> tuple[list[dict], str | None]:
    if isinstance(g, list):
        return [c for c in g if isinstance(c, dict)], None
    if isinstance(g, dict):
        return [c for c in g.get("candidates") or [] if isinstance(c, dict)], g.get("best_id")
    return [], None


def section_guideline(run: RunView) -> str:
    body = []
    g = run.metrics.get("guidelines")
    cands, best_id = _candidates(g)
    if cands:
        raters = sorted({r for c in cands for r in (c.get("alpha") or {}) if isinstance(c.get("alpha"), dict)})
        rows = []
        for c in cands:
            alpha = c.get("alpha") if isinstance(c.get("alpha"), dict) else {}
            mean = c.get("mean", c.get("score", c.get("dev_alpha")))
            cid = str(c.get("id", ""))
            mark = " (best)" if best_id is not None and cid == str(best_id) else ""
            rows.append([cid + mark, c.get("kind", ""), c.get("parent") or "",
                         "n/a" if mean is None else f"{mean:.3f}" if isinstance(mean, (int, float)) else mean,
                         *["n/a" if alpha.get(r) is None else f"{alpha[r]:.3f}" for r in raters],
                         c.get("chars", ""), c.get("same_as") or ""])
        body.append(table(["candidate", "made by", "parent", "mean dev α", *[f"dev α {r}" for r in raters],
                           "chars", "same text as"], rows))
        if isinstance(g, dict) and g.get("refined_id") is not None:
            verdict = "beats" if g.get("refined_beats_original") else "does not beat"
            body.append(para(f"Refined guideline (guideline.md): candidate {g['refined_id']}; on dev it {verdict} the "
                             "original (mean α above). Both are evaluated on test below."))
        elif isinstance(g, dict) and g.get("kept_original"):
            body.append(para(g.get("note") or "No candidate beat the original guideline on dev: it was kept."))
    if isinstance(g, dict):
        stats = {k: v for k, v in (g.get("writer_stats") or {}).items() if v.get("calls")}
        if stats:
            body.append(table(["writer stage", "calls", "cut by the token budget", "retries", "fallbacks"],
                              [[k, v["calls"], v["truncated"], v["retries"], v["fallbacks"]] for k, v in stats.items()]))
        sec = g.get("refined_sections") or {}
        if sec.get("rules_empty"):
            body.append(Markup('<p class="warn"><b>The refined guideline has no rules section</b>: the writer '
                               'produced no usable rule; any gain comes from the examples.</p>'))
        elif sec.get("labels_without_rules"):
            body.append(Markup(f'<p class="warn"><b>Rules missing for labels the traces have:</b> '
                               f'{esc(", ".join(sec["labels_without_rules"]))}</p>'))
    for split_name, rows_by_rater in ablation_rows(run.metrics).items():
        body.append(f"<h3>where the gain comes from — {esc(split_name)} split (Δα vs the original, paired)</h3>")
        body.append(table(["rater", "rules only", "examples only", "rules + examples"],
                          [[rater] + [fmt_est({"value": c["diff"], "ci": c["ci"]}) if c else "n/a"
                                      for c in (parts.get("rules"), parts.get("examples"), parts.get("refined"))]
                           for rater, parts in rows_by_rater.items()]))
    for split_name, comp in guideline_comparison(run.metrics).items():
        rows = [[rater, fmt_est(before), fmt_est(after),
                 fmt_est({"value": c["diff"], "ci": c["ci"]}) if c else "n/a",
                 fmt_p(c["p_b_not_better"]) if c else "n/a"] for rater, before, after, c in comp["raters"]]
        before, after = comp["inter"]
        change = comp.get("inter_change") or {}
        rows.append(["α among the LLM raters", fmt_est(before), fmt_est(after),
                     fmt_est({"value": change.get("diff"), "ci": change.get("ci")}),
                     fmt_p(change.get("p_after_not_better"))])
        body.append(f"<h3>original vs refined guideline — {esc(split_name)} split</h3>")
        body.append(table(["rater", "α original (95% CI)", "α refined (95% CI)",
                           "Δα refined − original (paired bootstrap)", "P(refined not better)"], rows))
    texts = run.guideline_texts()
    if texts:
        original, refined, path = texts
        body.append(f"<h3>original → refined ({esc(path.relative_to(run.path))})</h3>")
        body.append(unified_diff_html(original, refined, "guideline.original.md", "guideline.md"))
        body.append(Markup(f"<details><summary>refined guideline, full text</summary>{pre(refined)}</details>"))
    if not body:
        return note("no guideline refinement in this run (no guideline.md / metrics.json `guidelines`)")
    return "".join(body)


def section_cost(run: RunView) -> str:
    c = run.cost()
    rows = [["trace sampling", c["sampling"]["calls"], c["sampling"]["prompt"], c["sampling"]["completion"]]]
    rows += [[f"rating: {name}", v["calls"], v["prompt"], v["completion"]] for name, v in c["rating"].items()]
    if c.get("guideline_writer_calls") is not None:
        rows.append(["guideline writer", c["guideline_writer_calls"], "", ""])
    rows.append([Markup("<b>total (sampling + rating)</b>"), c["calls"], c["prompt"], c["completion"]])
    body = [table(["LM calls by", "calls", "prompt tokens", "completion tokens"], rows)]
    timing = run.timing()
    if timing:
        body.append(table(["stage", "wall time"], [[k, f"{v:.1f} s"] for k, v in timing.items()] +
                          [[Markup("<b>total</b>"), f"{sum(timing.values()):.1f} s"]]))
    else:
        body.append(note("no timing in metrics.json"))
    stages = ((run.metrics.get("calls") or {}).get("stages") or {})
    if stages:
        body.append(table(["stage", "done", "left to do", "final failures", "retryable failures journalled",
                           "retries inside calls"],
                          [[k, v["settled"], v["pending"], v["final_failures"], v["retryable_failures"],
                            v["in_call_retries"]] for k, v in stages.items()]))
    warnings = run.metrics.get("warnings") or []
    if warnings:
        body.append(Markup("<h3>warnings</h3><ul>" + "".join(f"<li>{esc(w)}</li>" for w in warnings) + "</ul>"))
    return "".join(body)
