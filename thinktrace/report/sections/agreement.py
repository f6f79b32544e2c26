"""The parts of a run report about agreement: with humans per split, paired comparisons, confusion matrices, the
prompt variants chosen on dev."""

from __future__ import annotations

import re
from typing import Sequence

import thinktrace._plots as _plots
from thinktrace.report.flags import flag_text, rater_flags
from thinktrace.report.format import fmt_diff, fmt_est, fmt_p
from thinktrace.report.model import Block, Figure, Gallery, Heading, Strong, Table, Text
from thinktrace.runview import RunView

#: per-rater scale statistics beside α, shown when the run computed them: (metrics key, column heading)
SCALE_METRICS = (("kendall_tau_b", "Kendall τ-b (95% CI)"), ("icc", "ICC(3,1) (95% CI)"))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"


def _ceiling(split: dict) -> dict | None:
    loo = (split.get("human_ceiling") or {}).get("loo_alpha") or {}
    if loo.get("value") is None:
        return None
    ci = loo.get("ci") or [None, None]
    return {"value": loo["value"], "lo": ci[0], "hi": ci[1]}


def _inter_groups(split: dict) -> dict:
    inter = split.get("inter_rater") or {}
    if isinstance(inter, dict) and "value" in inter:  # an older run: one estimate over all raters
        inter = {"all": inter}
    return {g: e for g, e in inter.items() if isinstance(e, dict)} if isinstance(inter, dict) else {}


def agreement(run: RunView) -> list[Block]:
    if not run.splits():
        return [Text("no evaluation results in metrics.json", "note")]
    blocks: list[Block] = []
    second = ["accuracy", "macro_f1"] if run.level == "nominal" else ["mae", "spearman", "accuracy"]
    for split_name in run.splits():
        split = run.split(split_name)
        raters = split.get("raters") or {}
        scale = [(k, h) for k, h in SCALE_METRICS if any(k in m for m in raters.values())]
        blocks.append(Heading(f"{split_name} split ({split.get('n_items', '?')} items)"))
        rows, plot_rows = [], []
        flagged = any(rater_flags(m) for m in raters.values())  # a flags column only when a variant has one
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
                         *[fmt_est(m.get(k)) for k, _ in scale], *[fmt_est(m.get(k)) for k in second],
                         f"{n - m.get('n_unparsed', 0)}/{n}", m.get("n_label_by_choice", 0), m.get("n_errors", 0),
                         f"{tok.get('prompt', 0)}/{tok.get('completion', 0)}", *([flag_text(m)] if flagged else [])])
        if plot_rows:
            blocks.append(Figure(_plots.alpha_forest(plot_rows, _ceiling(split), f"α vs human, {split_name} split"),
                                 f"alpha-{slug(split_name)}.png", f"alpha per variant, {split_name} split"))
        blocks.append(Table(["variant", "kind", "model", "α (95% CI)", *[h for _, h in scale], *second, "parsed",
                             "by choice", "LM errors", "tokens in/out", *(["flags"] if flagged else [])], rows))
        blocks.append(Text(
            "α: Krippendorff's alpha between the rater and the aggregated human label at the "
            f"{run.level} level (1 = perfect agreement, 0 = chance level; unparsed outputs are missing values). "
            "Accuracy counts unparsed outputs as wrong. CIs: percentile bootstrap over items; a CI is undefined when "
            "fewer than 95 % of the resamples gave a defined value (shown as valid/drawn). by choice: answers cut "
            "before their label (by max_tokens), whose label a local model then wrote under a grammar that allows "
            "only the label set." + (" τ-b and ICC need ordered labels: n/a on nominal data." if scale else "")
            + (" flags: failed = parse rate below evaluate.min_parse_rate (parsed / answers without an LM error); "
               "collapsed = the variant's most frequent answer covers far more of its answers than the gold's most "
               "frequent label covers of the items (evaluate.collapse_share, evaluate.collapse_spread)."
               if flagged else ""),
            "note"))
        ceiling = split.get("human_ceiling")
        if ceiling:
            blocks.append(Text([Strong("Human ceiling"), " (leave-one-annotator-out α: each annotator vs the aggregate "
                                f"of the others): {fmt_est(ceiling.get('loo_alpha'))}; α among all annotators: "
                                f"{fmt_est(ceiling.get('inter_annotator_alpha'))} "
                                f"({ceiling.get('n_annotators', '?')} annotators). The green band in the plot."]))
        else:
            blocks.append(Text("Human ceiling: n/a (the data has no per-annotator labels).", "note"))
        inter = _inter_groups(split)
        if inter:
            icc = any("icc" in e for e in inter.values())
            blocks.append(Table(["α among LLM raters: group", "raters", "α (95% CI)",
                                 *(["ICC(3,1) (95% CI)"] if icc else []), "items"],
                                [[g, ", ".join(e.get("raters") or []), fmt_est(e),
                                  *([fmt_est(e.get("icc"))] if icc else []), e.get("n", "")]
                                 for g, e in inter.items()]))
    return blocks


def comparisons(run: RunView) -> list[Block]:
    rows, extra = [], [(k, h) for k, h in (("kendall_tau_b_diff", "Δτ-b (95% CI)"), ("icc_diff", "ΔICC(3,1) (95% CI)"))
                       if any(k in c for s in run.splits() for c in run.split(s).get("comparisons") or [])]
    for split_name in run.splits():
        for c in run.split(split_name).get("comparisons") or []:
            rows.append([split_name, f"{c.get('b')} − {c.get('a')}", fmt_diff(c), fmt_p(c.get("p_b_not_better")),
                         *[fmt_diff(c.get(k)) if isinstance(c.get(k), dict) else "n/a" for k, _ in extra]])
    if not rows:
        return [Text("no paired comparisons in this run (only baseline variants)", "note")]
    return [Table(["split", "comparison (b − a)", "Δα (95% CI, paired bootstrap)", "P(b not better)",
                   *[h for _, h in extra]], rows),
            Text("Paired bootstrap: each resample scores both variants on the same items, so item difficulty "
                 "cancels.", "note")]


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


def confusions(run: RunView) -> list[Block]:
    split = run.main_split()
    if split is None or not run.predictions:
        return [Text("no predictions.jsonl: confusion matrices need the prediction records", "note")]
    figs = []
    for v in run.variants(split):
        records = [r for r in run.predictions if r.get("split") == split and r.get("rater") == v["name"]]
        if not records:
            continue
        latest = {r.get("item_id"): r for r in records}
        rows, cols, counts = confusion(list(latest.values()), run.label_set)
        figs.append(Figure(_plots.confusion_heatmap(counts, rows, cols, v["name"]),
                           f"confusion-{slug(split)}-{slug(v['name'])}.png", f"confusion matrix of {v['name']}",
                           f"{v['name']} ({v.get('kind', '')})"))
    if not figs:
        return [Text(f"no prediction records on the {split} split", "note")]
    return [Text(f"{split} split: human label (rows) against the rater's parsed label (columns); 'unparsed' counts "
                 "outputs with no valid label. Colour: share of the row."), Gallery(figs)]


def prompts(run: RunView) -> list[Block]:
    """Each rater under each prompt variant with the original guideline: dev α (which chose the best prompt) and
    test α side by side."""
    p = run.metrics.get("prompts") or {}
    if not p:
        return [Text("one prompt per rater in this run (`evaluate.prompts` lists one variant)", "note")]
    if p.get("note"):
        return [Text(p["note"])]
    test = run.split("test").get("raters") or {}
    rows = []
    for rater, variants in (p.get("raters") or {}).items():
        for name, r in variants.items():
            best = (p.get("best") or {}).get(rater) == name
            rows.append([[name, " ", Strong("(best on dev)")] if best else name, rater, r["format"],
                         r["order"].replace("_", " "), fmt_est(r["alpha"]), fmt_est((test.get(name) or {}).get("alpha"))])
    return [Table(["prompt variant", "rater", "format", "order", "dev α (95% CI)", "test α (95% CI)"], rows),
            Text(f"Dev: {p.get('n_dev')} items. The refined guideline is rated with each rater's best prompt and "
                 "compared against it, so a gain is not a gain over the weakest original prompt.", "note")]
