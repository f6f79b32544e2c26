"""The part of a run report about guideline refinement: the writer, the candidates scored on dev, original vs
refined on the evaluated splits, where the gain comes from, and the text itself."""

from __future__ import annotations

from thinktrace.report.format import fmt_diff, fmt_est, fmt_p
from thinktrace.report.model import Block, Bullets, Details, Diff, Heading, Strong, Table, Text
from thinktrace.runview import RunView

ABLATION_KINDS = {"guideline-rules": "rules", "guideline-examples": "examples", "refined-guideline": "refined"}


def _comparison(split: dict, a: str, b: str) -> dict | None:
    return next((c for c in split.get("comparisons") or [] if c["a"] == a and c["b"] == b), None)


def guideline_comparison(metrics: dict) -> dict[str, dict]:
    """Per evaluated split: {"raters": [(rater, original α, refined α, comparison or None)], "inter": (before,
    after), "inter_change"}: every rater with the original vs the refined guideline, and α among the LLM raters."""
    out = {}
    refined = [v for v in metrics.get("variants") or [] if v.get("kind") == "refined-guideline"]
    for split_name, split in (metrics.get("splits") or {}).items():
        rows = [(v.get("rater"), (split["raters"].get(v.get("rater")) or {}).get("alpha"),
                 (split["raters"].get(v["name"]) or {}).get("alpha"), _comparison(split, v.get("rater"), v["name"]))
                for v in refined]
        inter = split.get("inter_rater") or {}
        if rows:
            out[split_name] = {"raters": rows, "inter": (inter.get("baseline"), inter.get("refined-guideline")),
                               "inter_change": split.get("inter_rater_change")}
    return out


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
            rows.setdefault(v["rater"], {})[ABLATION_KINDS[v["kind"]]] = _comparison(split, v["rater"], v["name"])
        out[split_name] = rows
    return out


def _mean(score) -> str:
    value = score.get("mean") if isinstance(score, dict) else score
    return "n/a" if not isinstance(value, (int, float)) else f"{value:.3f}"


def _verdict(g: dict) -> list:
    if g.get("refined_id") is None:
        if g.get("kept_original"):
            return [g.get("note") or "No candidate beat the original guideline on dev: it was kept."]
        return [f"best: candidate {g.get('best_id')} (mean dev α {_mean(g.get('best_dev'))})"]
    if not g.get("refined_changed", True):
        return ["the writer left the guideline unchanged: nothing new to evaluate"]
    beats = "beats" if g.get("refined_beats_original") else "does not beat"
    return [f"refined guideline (guideline.md): candidate {g['refined_id']}, mean dev α {_mean(g.get('refined_dev'))} "
            f"vs {_mean(g.get('original_dev'))} for the original: it ", Strong(beats), " the original on dev"]


def _rules_coverage(g: dict) -> list[Block]:
    sec = g.get("refined_sections") or {}
    if not sec:
        return []
    if sec.get("rules_empty"):
        return [Text([Strong("The refined guideline has no rules section"), ": the writer produced no usable rule, so "
                      "it is the original guideline plus examples only. Any gain below comes from the examples."],
                     "warn")]
    if sec.get("labels_without_rules"):
        return [Text([Strong("Rules missing for labels the traces have: "), ", ".join(sec["labels_without_rules"]),
                      f" (rules for {', '.join(sec.get('rules_labels') or [])})."], "warn")]
    return [Text(f"the rules cover every label the traces have ({', '.join(sec.get('rules_labels') or [])}); "
                 f"{sec.get('examples_lines', 0)} example lines")]


def _selection(g: dict) -> list[Block]:
    """Which program dev chose, whether dev could separate it from the original, and dev's power."""
    sel = g.get("selection")
    if not isinstance(sel, dict):
        return []
    comp = sel.get("vs_original") or {}
    power = sel.get("power") or {}
    lines: list = [[Strong("Selection on dev:"), " " + (sel.get("reason") or "")],
                   f"pool: {', '.join(sel.get('pool') or [])}; chosen: {sel.get('chosen')} ({sel.get('chosen_kind')})"]
    if comp:
        lines.append(f"mean dev α, candidate {comp.get('b_id')} − original: {fmt_diff(comp)} (paired bootstrap "
                     f"over {comp.get('n')} dev items)")
    if power.get("n_needed") is not None:
        enough = "enough" if power.get("enough") else "not enough"
        lines.append(f"dev's power: to detect Δα {power['delta']:.2f} at {power['power']:.0%} power (two-sided, 5 %) "
                     f"dev needs about {power['n_needed']} items from its own paired variance; it has "
                     f"{power['n_dev']} ({enough})")
    else:
        lines.append("dev's power: n/a (no paired variance to plan from)")
    kind = "warn" if sel.get("winner") != sel.get("chosen") else None
    out: list[Block] = [Bullets(lines)]
    if kind:
        out.append(Text([Strong("Dev could not separate the winner from the original"),
                         f": {sel.get('winner')} had the highest mean dev α, but the original is kept."], "warn"))
    return out


def _rule_checks(g: dict) -> list[Block]:
    """What the rule check dropped or rewrote (per reason) and how alike neighbouring label sections are."""
    out: list[Block] = []
    faults = g.get("rule_faults") or {}
    if faults:
        total = g.get("rule_faults_all_candidates") or {}
        out.append(Table(["rule fault (refined guideline)", "found", "rewritten", "dropped",
                          "found, all candidates"],
                         [[k, v.get("found", 0), v.get("rewritten", 0), v.get("dropped", 0),
                           (total.get(k) or {}).get("found", 0)] for k, v in faults.items()]))
    overlap = g.get("overlap") or []
    if overlap:
        limit = g.get("overlap_threshold")
        out.append(Table([f"neighbouring labels (rewrite above {limit if limit is not None else 'off'})",
                          "overlap before (Jaccard)", "after", "rewritten"],
                         [[f"{o['a']} | {o['b']}", _num(o.get("before")), _num(o.get("after")),
                           "yes" if o.get("rewritten") else "no"] for o in overlap]))
    return out


def _num(x) -> str:
    return "n/a" if not isinstance(x, (int, float)) else f"{x:.2f}"


def _candidates(g: dict) -> list[Block]:
    cands = [c for c in g.get("candidates") or [] if isinstance(c, dict)]
    if not cands:
        return []
    best_id = g.get("refined_id", g.get("best_id"))
    selected = (g.get("selection") or {}).get("chosen")
    raters = sorted({r for c in cands if isinstance(c.get("alpha"), dict) for r in c["alpha"]})
    rows = []
    for c in cands:
        alpha = c.get("alpha") if isinstance(c.get("alpha"), dict) else {}
        cid = str(c.get("id", ""))
        marks = ([" ", Strong("(chosen)")] if best_id is not None and cid == str(best_id) else []) + \
            ([" ", Strong("(selected on dev)")] if selected is not None and cid == str(selected)
             and cid != str(best_id) else [])
        rows.append([[cid, *marks] if marks else cid,
                     c.get("kind", ""), c.get("parent") or "", _mean(c.get("mean", c.get("score"))),
                     *["n/a" if alpha.get(r) is None else f"{alpha[r]:.3f}" for r in raters],
                     c.get("chars", ""), c.get("same_as") or ""])
    return [Table(["candidate", "made by", "parent", "mean dev α", *[f"dev α {r}" for r in raters], "chars",
                   "same text as"], rows)]


def guideline(run: RunView) -> list[Block]:
    g = run.metrics.get("guidelines")
    g = g if isinstance(g, dict) else {}
    texts = run.guideline_texts()
    if not g and not texts:
        return [Text("no guideline refinement in this run (no guideline.md / metrics.json `guidelines`)", "note")]
    blocks: list[Block] = []
    if g:
        blocks.append(Bullets([_verdict(g), f"writer calls: {g.get('writer_calls')}, writer fallbacks (unusable "
                               f"outputs, each skipped or kept unchanged, with its reason in the candidate's json): "
                               f"{g.get('fallbacks')}"]))
        blocks += _selection(g)
        blocks += _rules_coverage(g)
        blocks += _rule_checks(g)
        stats = {k: v for k, v in (g.get("writer_stats") or {}).items() if v.get("calls")}
        if stats:
            blocks.append(Table(["writer stage", "calls", "cut by the token budget", "retries", "fallbacks"],
                                [[k, v["calls"], v["truncated"], v["retries"], v["fallbacks"]] for k, v in stats.items()]))
        if g.get("note") and not g.get("kept_original"):
            blocks.append(Text(f"Note: {g['note']}"))
        blocks += _candidates(g)
    for split_name, comp in guideline_comparison(run.metrics).items():
        rows = [[rater, fmt_est(before), fmt_est(after), fmt_diff(c), fmt_p(c["p_b_not_better"]) if c else "n/a"]
                for rater, before, after, c in comp["raters"]]
        before, after = comp["inter"]
        if before or after:
            change = comp.get("inter_change") or {}
            n = len((before or {}).get("raters", []))
            rows.append([f"α among the LLM raters ({n} raters)", fmt_est(before), fmt_est(after), fmt_diff(change),
                         fmt_p(change.get("p_after_not_better"))])
        blocks += [Heading(f"Original vs refined guideline — {split_name} split"),
                   Table(["rater", "α original (95% CI)", "α refined (95% CI)",
                          "Δα refined − original (paired bootstrap)", "P(refined not better)"], rows)]
        if not (before or after):
            blocks.append(Text("α among the LLM raters: n/a (it needs at least two raters in `models.raters`)",
                               "note"))
        elif comp.get("inter_change"):
            blocks.append(Text(f"α among the LLM raters: paired bootstrap over {comp['inter_change'].get('n')} items.",
                               "note"))
    for split_name, rows_by_rater in ablation_rows(run.metrics).items():
        blocks += [Heading(f"Where the gain comes from — {split_name} split"),
                   Text("Each part of the refined guideline added to the original alone; Δα against the original "
                        "guideline, paired bootstrap on the same items."),
                   Table(["rater", "Δα rules only", "Δα examples only", "Δα rules + examples"],
                         [[rater, *[fmt_diff(parts.get(k)) for k in ("rules", "examples", "refined")]]
                          for rater, parts in rows_by_rater.items()])]
    if g:
        blocks.append(Text("Dev scores choose the guideline, so they flatter it: the test-split rows are the honest "
                           "comparison (refined vs original, paired).", "note"))
    if texts:
        original, refined, path = texts
        blocks += [Heading(f"original → refined ({path.relative_to(run.path)})"),
                   Diff(original, refined, "guideline.original.md", "guideline.md"),
                   Details("refined guideline, full text", refined)]
    return blocks
