"""report.md (and its plots) from metrics.json: what a prompt engineer reads after a run."""

from __future__ import annotations

from pathlib import Path

from thinktrace.rundir import RunDir


def fmt_est(est: dict | None, digits: int = 3) -> str:
    """`0.412 [0.301, 0.520]`, or `n/a` when undefined."""
    if not est or est.get("value") is None:
        return "n/a"
    value = f"{est['value']:.{digits}f}"
    ci = est.get("ci") or [None, None]
    if ci[0] is None or ci[1] is None:
        return value
    return f"{value} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _rater_table(split: dict, level: str) -> list[str]:
    second = ["accuracy", "macro_f1"] if level == "nominal" else ["mae", "spearman", "accuracy"]
    head = ["rater", "α (95% CI)", *second, "parsed", "by choice", "unparsed", "LM errors", "tokens in/out"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in split["raters"].items():
        tok = m.get("tokens") or {}
        row = [name, fmt_est(m.get("alpha")), *[fmt_est(m.get(k)) for k in second],
               f"{m['n_items'] - m['n_unparsed']}/{m['n_items']}", str(m.get("n_label_by_choice", 0)),
               str(m["n_unparsed"]), str(m.get("n_errors", 0)),
               f"{tok.get('prompt', 0)}/{tok.get('completion', 0)}"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _trace_section(t: dict) -> list[str]:
    lines = ["## Inferred thinking traces (rejection sampling, train split)", "",
             f"- examples explained: {t['explained']}/{t['examples']} ({_pct(t['explained_rate'])})",
             f"- attempts: {t['attempts']}, accepted: {t['accepted']} ({_pct(t['acceptance_rate'])}); "
             f"LM samples per accepted trace: {t['samples_per_accepted_trace'] or 'n/a'}",
             f"- failed attempts: {t['failed']['errors']} LM errors {t['failed']['by_type'] or ''}, "
             f"{t['failed']['unparsed']} unparseable labels, {t['failed']['no_rationale']} without a rationale",
             "", "| strategy | attempts | accepted | rate | examples explained |", "|---|---|---|---|---|"]
    for name, s in t["per_strategy"].items():
        lines.append(f"| {name} | {s['attempts']} | {s['accepted']} | {_pct(s['rate'])} | {s['examples_explained']} |")
    lines += ["", "| human label | examples | explained | attempts | acceptance rate |", "|---|---|---|---|---|"]
    for label, s in t["per_label"].items():
        lines.append(f"| {label} | {s['examples']} | {s['explained']} ({_pct(s['explained_rate'])}) | "
                     f"{s['attempts']} | {_pct(s['rate'])} |")
    if t["unexplained"]:
        shown = ", ".join(t["unexplained"][:20])
        more = f" and {len(t['unexplained']) - 20} more" if len(t["unexplained"]) > 20 else ""
        lines += ["", f"Examples no strategy could explain: {shown}{more}."]
    return lines + [""]


def _finetune_section(results: dict) -> list[str]:
    lines = ["## Fine-tuning (LoRA SFT on the train split's traces; label-only ablation on the same items)", "",
             "| adapter | rows | truncated | steps | final loss | train time |", "|---|---|---|---|---|---|"]
    for kind, r in results.items():
        loss = r.get("final_loss")
        lines.append(f"| {kind} | {r.get('rows')} | {r.get('truncated_rows', 0)} | {r.get('steps')} | "
                     f"{'n/a' if loss is None else f'{loss:.3f}'} | {r.get('total_train_seconds', 0):.0f} s |")
    lines.append("")
    lines += [f"![{kind} loss](finetune/{kind}/loss.png)" for kind in results]
    return lines + [""]


def _prompt_section(p: dict, metrics: dict) -> list[str]:
    """Each rater under each prompt variant with the original guideline: dev α (which chose the best prompt) and
    test α side by side."""
    lines = ["## Prompt variants (original guideline; the best per rater chosen on dev)", ""]
    if p.get("note"):
        return lines + [p["note"], ""]
    test = ((metrics.get("splits") or {}).get("test") or {}).get("raters") or {}
    lines += ["| rater | prompt variant | format | order | dev α (95% CI) | test α (95% CI) |", "|---|---|---|---|---|---|"]
    for rater, rows in (p.get("raters") or {}).items():
        for name, r in rows.items():
            best = " **(best on dev)**" if p["best"].get(rater) == name else ""
            lines.append(f"| {rater} | {name}{best} | {r['format']} | {r['order'].replace('_', ' ')} | "
                         f"{fmt_est(r['alpha'])} | {fmt_est((test.get(name) or {}).get('alpha'))} |")
    lines += ["", f"Dev: {p.get('n_dev')} items. The refined guideline is rated with each rater's best prompt and "
              "compared against it, so a gain is not a gain over the weakest original prompt.", ""]
    return lines


def _mean_dev(score) -> str:
    value = score.get("mean") if isinstance(score, dict) else score
    return "n/a" if value is None else f"{value:.3f}"


def fmt_p(value) -> str:
    """A bootstrap p-value with 3 decimals, `n/a` when undefined (no resamples)."""
    return "n/a" if value is None else f"{value:.3f}"


def guideline_comparison(metrics: dict) -> dict[str, dict]:
    """Per evaluated split: {"raters": [(rater, original α, refined α, comparison or None)], "inter": (before,
    after)}: every rater with the original vs the refined guideline, and α among the LLM raters before vs after."""
    out = {}
    refined = [v for v in metrics.get("variants") or [] if v.get("kind") == "refined-guideline"]
    for split_name, split in (metrics.get("splits") or {}).items():
        rows = []
        for v in refined:
            base = v.get("rater")
            comp = next((c for c in split.get("comparisons") or [] if c["a"] == base and c["b"] == v["name"]), None)
            rows.append((base, (split["raters"].get(base) or {}).get("alpha"),
                         (split["raters"].get(v["name"]) or {}).get("alpha"), comp))
        inter = split.get("inter_rater") or {}
        if rows:
            out[split_name] = {"raters": rows, "inter": (inter.get("baseline"), inter.get("refined-guideline")),
                               "inter_change": split.get("inter_rater_change")}
    return out


def _guideline_section(g: dict, metrics: dict | None = None) -> list[str]:
    original_dev, refined_dev = _mean_dev(g.get("original_dev")), _mean_dev(g.get("refined_dev"))
    if g.get("refined_id") is None:  # metrics written before `refined` existed
        verdict = f"best: candidate {g.get('best_id')} (mean dev α {_mean_dev(g.get('best_dev'))})"
    elif not g.get("refined_changed", True):
        verdict = "the writer left the guideline unchanged: nothing new to evaluate"
    else:
        verdict = (f"refined guideline (guideline.md): candidate {g['refined_id']}, mean dev α {refined_dev} vs "
                   f"{original_dev} for the original: it **{'beats' if g.get('refined_beats_original') else 'does not beat'}"
                   "** the original on dev")
    lines = ["## Guideline refinement (candidates scored on the dev split by mean α across raters)", "",
             f"- {verdict}",
             f"- writer calls: {g.get('writer_calls')}, writer fallbacks (unusable outputs, each skipped or kept "
             f"unchanged, with its reason in the candidate's json): {g.get('fallbacks')}"]
    sections = g.get("refined_sections")
    if sections:
        if sections.get("rules_empty"):
            lines.append("- **The refined guideline has no rules section**: the writer produced no usable rule, so "
                         "it is the original guideline plus examples only. Any gain below comes from the examples.")
        elif sections.get("labels_without_rules"):
            lines.append(f"- **Rules missing for labels the traces have**: {', '.join(sections['labels_without_rules'])}"
                         f" (rules for {', '.join(sections['rules_labels'])}).")
        else:
            lines.append(f"- the rules cover every label the traces have ({', '.join(sections['rules_labels'])}); "
                         f"{sections.get('examples_lines', 0)} example lines")
    lines.append("")
    stats = g.get("writer_stats") or {}
    if any(st.get("calls") for st in stats.values()):
        lines += ["| writer stage | calls | cut by the token budget | retries | fallbacks |", "|---|---|---|---|---|"]
        lines += [f"| {stage} | {st['calls']} | {st['truncated']} | {st['retries']} | {st['fallbacks']} |"
                  for stage, st in stats.items() if st.get("calls")]
        lines.append("")
    if g.get("note"):
        lines += [f"Note: {g['note']}", ""]
    rows = g.get("candidates") or []
    if rows:
        lines += ["| candidate | parent | mean dev α |", "|---|---|---|"]
        for c in rows:
            mean = c.get("mean")
            lines.append(f"| {c.get('id')} | {c.get('parent') or ''} | {'n/a' if mean is None else f'{mean:.3f}'} |")
        lines.append("")
    for split_name, comp in guideline_comparison(metrics or {}).items():
        lines += [f"### Original vs refined guideline — {split_name} split", "",
                  "| rater | α original (95% CI) | α refined (95% CI) | Δα refined − original (paired bootstrap) | "
                  "P(refined not better) |", "|---|---|---|---|---|"]
        for rater, before, after, c in comp["raters"]:
            diff = fmt_est({"value": c["diff"], "ci": c["ci"]}) if c else "n/a"
            p = fmt_p(c["p_b_not_better"]) if c else "n/a"
            lines.append(f"| {rater} | {fmt_est(before)} | {fmt_est(after)} | {diff} | {p} |")
        before, after = comp["inter"]
        if before or after:
            change = comp.get("inter_change")
            lines += ["", f"α among the LLM raters: original guideline {fmt_est(before)}, refined guideline "
                      f"{fmt_est(after)}" + (f" ({len(before.get('raters', []))} raters)" if before else "")
                      + (f"; Δ {fmt_est({'value': change['diff'], 'ci': change['ci']})} (paired bootstrap over "
                         f"{change['n']} items, P(refined not better) {fmt_p(change.get('p_after_not_better'))})"
                         if change and change.get("diff") is not None else "")]
        else:
            lines += ["", "α among the LLM raters: n/a (it needs at least two raters in `models.raters`)"]
        lines.append("")
    for split_name, rows in ablation_rows(metrics or {}).items():
        lines += [f"### Where the gain comes from — {split_name} split", "",
                  "Each part of the refined guideline added to the original alone; Δα against the original guideline, "
                  "paired bootstrap on the same items.", "",
                  "| rater | Δα rules only | Δα examples only | Δα rules + examples |", "|---|---|---|---|"]
        for rater, parts in rows.items():
            cells = [fmt_est({"value": c["diff"], "ci": c["ci"]}) if c else "n/a"
                     for c in (parts.get("rules"), parts.get("examples"), parts.get("refined"))]
            lines.append(f"| {rater} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Dev scores choose the guideline, so they flatter it: the test-split rows are the honest "
                 "comparison (refined vs original, paired).")
    return lines + [""]


ABLATION_KINDS = {"guideline-rules": "rules", "guideline-examples": "examples", "refined-guideline": "refined"}


def ablation_rows(metrics: dict) -> dict[str, dict[str, dict]]:
    """Per split: {rater: {"rules" | "examples" | "refined": paired comparison vs the original}}, for runs that
    evaluated the ablation (rules-only and examples-only variants)."""
    variants = [v for v in metrics.get("variants") or [] if v.get("kind") in ABLATION_KINDS]
    if not any(v["kind"] != "refined-guideline" for v in variants):
        return {}
    out = {}
    for split_name, split in (metrics.get("splits") or {}).items():
        rows: dict[str, dict] = {}
        for v in variants:
            comp = next((c for c in split.get("comparisons") or [] if c["a"] == v["rater"] and c["b"] == v["name"]),
                        None)
            rows.setdefault(v["rater"], {})[ABLATION_KINDS[v["kind"]]] = comp
        out[split_name] = rows
    return out


def plot_alpha(metrics: dict, path: Path) -> Path | None:
    """α with 95% CI per rater on the test split (or the first evaluated split), the human ceiling as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = metrics.get("splits") or {}
    if not splits:
        return None
    split_name = "test" if "test" in splits else next(iter(splits))
    split = splits[split_name]
    names, values, lows, highs = [], [], [], []
    for name, m in split["raters"].items():
        a = m.get("alpha") or {}
        if a.get("value") is None:
            continue
        ci = a.get("ci") or [a["value"], a["value"]]
        names.append(name)
        values.append(a["value"])
        lows.append(a["value"] - (ci[0] if ci[0] is not None else a["value"]))
        highs.append((ci[1] if ci[1] is not None else a["value"]) - a["value"])
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names) + 2), 3.2))
    ceiling = ((split.get("human_ceiling") or {}).get("loo_alpha") or {})
    if ceiling.get("value") is not None:
        ci = ceiling.get("ci") or [None, None]
        if ci[0] is not None:
            ax.axhspan(ci[0], ci[1], color="tab:green", alpha=0.15, label="human ceiling (95% CI)")
        ax.axhline(ceiling["value"], color="tab:green", lw=1)
    if names:
        ax.errorbar(range(len(names)), values, yerr=[lows, highs], fmt="o", capsize=4, color="tab:blue",
                    label="rater vs human α")
    ax.axhline(0, color="grey", lw=0.8, ls=":")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel("Krippendorff's α")
    ax.set_title(f"Rater-human agreement ({split_name} split)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def status_banner(metrics: dict) -> list[str]:
    """The lines at the top of a report whose run is not complete (nothing for a complete run)."""
    status = metrics.get("status") or {}
    if status.get("state") == "incomplete":
        return [f"> **INCOMPLETE RUN: no agreement numbers.** {status.get('message', '')}", ""]
    if status.get("state") == "failures_over_threshold":
        return [f"> **Too many failed LM calls:** {status.get('message', '')}. The numbers below treat each failed "
                "call as a missing label; read them with that in mind.", ""]
    return []


def calls_lines(calls: dict | None) -> list[str]:
    """The `LM calls` section: per stage, units settled / left, final failures, retryable failures, retries."""
    if not calls or not calls.get("stages"):
        return []
    lines = ["## LM calls", "", "| stage | done | left to do | final failures | retryable failures journalled "
             "| retries inside calls |", "|---|---|---|---|---|---|"]
    for name, st in calls["stages"].items():
        final = f"{st['final_failures']}" + (f" {st['final_by_type']}" if st["final_by_type"] else "")
        retry = f"{st['retryable_failures']}" + (f" {st['retryable_by_kind']}" if st["retryable_by_kind"] else "")
        lines.append(f"| {name} | {st['settled']} | {st['pending']} | {final} | {retry} | {st['in_call_retries']} |")
    lines += ["", "*final*: the same call would fail again (a 4xx, an empty answer after its retries); it counts as "
              "a missing label. *retryable* (connection, 429/5xx, timeout, rejected key): kept in the journal but no "
              "result; the call is made again on resume. A complete run has nothing left to do and at most "
              f"{calls.get('max_failed', 0):.0%} final failures per stage (`calls.max_failed`).", ""]
    return lines


def write_incomplete_report(run: RunDir, result: dict) -> Path:
    """report.md of a run that stopped with work left: what stopped it, how far each stage got, how to resume."""
    status = result["status"]
    lines = [f"# thinktrace run: {result['spec']['name']} (incomplete)", "", *status_banner(result),
             f"- stopped in stage **{status['stage']}**: {status['reason']}", ""]
    lines += calls_lines(result.get("calls"))
    return run.write_text("report.md", "\n".join(lines))


def render_report(run: RunDir, metrics: dict) -> str:
    spec = metrics["spec"]
    level = metrics["data"]["level"]
    lines = [f"# thinktrace run: {spec['name']}", "", *status_banner(metrics)]
    if spec.get("description"):
        lines += [spec["description"], ""]
    stats = metrics["data"].get("stats", {})
    lines += ["## Data", "",
              f"- items: {stats.get('items', '?')}, per split: {stats.get('per_split', {})}",
              f"- label set ({level}): {', '.join(metrics['data']['label_set'])}",
              f"- human labels per item: {metrics['data'].get('labels_per_item', 'n/a')}",
              ""]
    if metrics.get("traces"):
        lines += _trace_section(metrics["traces"])
    if metrics.get("finetune"):
        lines += _finetune_section(metrics["finetune"])
    if metrics.get("prompts"):
        lines += _prompt_section(metrics["prompts"], metrics)
    if metrics.get("guidelines"):
        lines += _guideline_section(metrics["guidelines"], metrics)
    for split_name, split in (metrics.get("splits") or {}).items():
        lines += [f"## Agreement with humans — {split_name} split ({split['n_items']} items)", ""]
        lines += _rater_table(split, level)
        lines += ["", "α: Krippendorff's alpha between the rater and the aggregated human label at the "
                  f"{level} level (1 = perfect agreement, 0 = chance level; unparsed outputs are missing values). "
                  "Accuracy counts unparsed outputs as wrong. CIs: percentile bootstrap over items. *by choice*: answers "
                  "cut before their label (by max_tokens), whose label a local model then wrote under a grammar that "
                  "allows only the label set.", ""]
        ceiling = split.get("human_ceiling")
        if ceiling:
            lines += [f"**Human ceiling** (leave-one-annotator-out α: each annotator vs the aggregate of the others): "
                      f"{fmt_est(ceiling.get('loo_alpha'))}; α among all annotators: "
                      f"{fmt_est(ceiling.get('inter_annotator_alpha'))} "
                      f"({ceiling.get('n_annotators')} annotators).", ""]
        else:
            lines += ["**Human ceiling**: n/a (the data has no per-annotator labels).", ""]
        for group, est in (split.get("inter_rater") or {}).items():
            lines += [f"**α among LLM raters** ({group}: {', '.join(est.get('raters', []))}): {fmt_est(est)}", ""]
        if split.get("comparisons"):
            lines += ["| comparison (b − a) | Δα (95% CI, paired bootstrap) | P(b not better) |", "|---|---|---|"]
            for c in split["comparisons"]:
                lines.append(f"| {c['b']} − {c['a']} | {fmt_est({'value': c['diff'], 'ci': c['ci']})} | "
                             f"{fmt_p(c['p_b_not_better'])} |")
            lines.append("")
    if metrics.get("plots"):
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in metrics["plots"]] + [""]
    lines += calls_lines(metrics.get("calls"))
    timing = metrics.get("timing") or {}
    if timing:
        rss = metrics.get("peak_rss_mib") or {}
        lines += ["## Cost", ""]
        for k, v in timing.items():  # seconds (older runs wrote strings like "12.5 s")
            wall = f"{v:.1f} s" if isinstance(v, (int, float)) else str(v)
            lines.append(f"- {k}: {wall}" + (f" (peak memory so far {rss[k]:,} MiB)" if k in rss else ""))
        lines.append("")
    return "\n".join(lines)


def add_plots(run: RunDir, metrics: dict) -> None:
    """Draw the report's plot files and name them in `metrics["plots"]` (a failed plot is a warning)."""
    try:
        if plot_alpha(metrics, run.file("alpha.png")):
            metrics.setdefault("plots", []).append("alpha.png")
    except Exception as err:  # a plot must never cost the run its report
        metrics.setdefault("warnings", []).append(f"alpha plot failed: {err}")


def write_report(run: RunDir, metrics: dict) -> Path:
    add_plots(run, metrics)
    return run.write_text("report.md", render_report(run, metrics))
