"""The compiled-rater benchmark (issue 27): three real corpora, one table.

    python benchmarks/guidelines.py [--corpus vader|convabuse|newsroom ...] [--runs DIR] [--out DIR] [--table-only]
                                    [--results DIR] [--docs DIR] [--no-publish]

For each corpus spec under experiments/guidelines/ (committed before its test split was evaluated): a compile run
into `<runs>/<spec name>/` (default runs/guidelines/, git-ignored: run folders hold item text). A run folder that
exists is resumed (`--out` resumes); a complete one (metrics.json status complete) is not run again, so the whole
benchmark is resumable: rerun the same command after a kill. Each run is its own process (its models, its memory).

A complete corpus is recorded at once, so that the benchmark also survives losing its run folders (a corpus takes
hours on 2 cores; a new checkout has no runs/): its row of the table goes to `<out>/guidelines/<corpus>.json`
(item ids only) and the run is published to `results/guidelines-<corpus>/` with its docs page
(`docs/results/guidelines-<corpus>.md`): with its journals when the corpus ships in a package (VADER), by item id
only otherwise (the ../shared corpora). A corpus with a recorded row is not run again (delete the row to rerun it).

Then the published table is written from every recorded row to `<out>/guidelines.md` and `<out>/guidelines.json`
(default benchmarks/results/), with a forest plot of its Δα (`--figure`, default
docs/images/guidelines-benchmark.png): per corpus and rater, the compiled rater (refined guideline +
trace demos) against the original zero-shot rater, against demos alone and against the refined guideline alone,
and the refined guideline against the original (paired Δα, 95 % CIs, test split); α among the LLM raters, original
vs compiled (paired); the selection on dev (what was chosen, whether dev separated it from the original) and dev's
power; writer faults (fallbacks), rules found faulty / rewritten / dropped per reason; the overlap of neighbouring
label sections; runtime per stage on this machine; the variants whose test answers were flagged (collapsed or
parse-failed), marked ⚑ in the table. Item ids only, never item text. With --table-only, no run is
started: the table is built from the rows recorded (and the complete run folders there are).

Goal (docs/concepts/guidelines.md): the compiled rater beats the original with a CI above 0 on at least two
corpora, and on none is the refined guideline worse with a CI below 0. The table states, per rater, whether it was
reached.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "experiments" / "guidelines"
CORPORA = ("vader", "convabuse", "newsroom")


# -- the runs --------------------------------------------------------------------------------------------------
def spec_name(path: Path) -> str:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))["name"]


def is_complete(run: Path) -> bool:
    try:
        return json.loads((run / "metrics.json").read_text())["status"]["state"] == "complete"
    except (OSError, ValueError, KeyError, TypeError):
        return False


def run_corpus(spec: Path, runs: Path) -> tuple[Path, int, float]:
    """Compile (or resume) one corpus; (run folder, exit code, seconds this call took). A complete run: not rerun."""
    run = runs / spec_name(spec)
    if is_complete(run):
        return run, 0, 0.0
    run.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    code = subprocess.call([sys.executable, "-m", "thinktrace.compile", str(spec), "--out", str(run)], cwd=ROOT)
    return run, code, time.monotonic() - started


# -- the table -------------------------------------------------------------------------------------------------
COMPARISONS = (("compiled vs original zero-shot", "{r}", "{r}+compiled"),
               ("compiled vs demos alone", "{r}+demos", "{r}+compiled"),
               ("compiled vs refined guideline alone", "{r}+refined", "{r}+compiled"),
               ("refined guideline vs original", "{r}", "{r}+refined"))


def _comparison(split: dict, a: str, b: str) -> dict | None:
    return next((c for c in split.get("comparisons") or [] if c.get("a") == a and c.get("b") == b), None)


def _diff(c: dict | None) -> dict | None:
    if not c:
        return None
    return {"diff": c.get("diff"), "ci": c.get("ci"), "ci_undefined": c.get("ci_undefined"), "n": c.get("n"),
            "a": c.get("value_a", c.get("a")), "b": c.get("value_b", c.get("b"))}


def inter_rater_change(run: Path, metrics: dict, raters: list[str]) -> dict | None:
    """α among the LLM raters, original vs compiled, paired on the same test items (from predictions.jsonl)."""
    from thinktrace.agreement import paired_inter_rater_difference
    from thinktrace.labels import LabelSet

    if len(raters) < 2:
        return None
    data = metrics.get("data") or {}
    labels = LabelSet.of(data.get("label_set") or metrics["spec"]["data"]["label_set"],
                         data.get("level") or metrics["spec"]["data"]["level"])
    by: dict[str, dict[str, str | None]] = {}
    with (run / "predictions.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            if r.get("split") == "test":
                by.setdefault(r["rater"], {})[r["item_id"]] = r.get("label")
    names = raters + [f"{r}+compiled" for r in raters]
    if not all(n in by for n in names):
        return None
    items = sorted(set.intersection(*(set(by[n]) for n in names)))
    before = {r: [by[r][i] for i in items] for r in raters}
    after = {r: [by[f"{r}+compiled"][i] for i in items] for r in raters}
    boot = int((metrics.get("spec") or {}).get("evaluate", {}).get("bootstrap") or 1000)
    return paired_inter_rater_difference(before, after, labels, n_boot=boot, seed=0)


def corpus_row(run: Path) -> dict:
    """What the published table needs from one run folder (item ids only)."""
    from thinktrace.report.flags import flag_text

    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    test = (metrics.get("splits") or {}).get("test") or {}
    raters = [v["name"] for v in metrics.get("variants") or [] if v.get("kind") == "baseline"]
    g = metrics.get("guidelines") or {}
    per_rater = {r: {label: _diff(_comparison(test, a.format(r=r), b.format(r=r))) for label, a, b in COMPARISONS}
                 for r in raters}
    sel = g.get("selection") or {}
    return {
        "run": run.name, "status": (metrics.get("status") or {}).get("state"), "n_test": test.get("n_items"),
        "sizes": ((metrics.get("data") or {}).get("stats") or {}).get("per_split"),
        "raters": per_rater,
        "flags": {name: text for name, m in (test.get("raters") or {}).items() if (text := flag_text(m))},
        "inter_rater": {"original": (test.get("inter_rater") or {}).get("baseline"),
                        "compiled": (test.get("inter_rater") or {}).get("compiled-rater"),
                        "change": inter_rater_change(run, metrics, raters) if test else None},
        "selection": {k: sel.get(k) for k in ("pool", "winner", "chosen", "chosen_kind", "kept_original",
                                             "separated", "reason")},
        "dev_vs_original": sel.get("vs_original"),
        "power": sel.get("power"),
        "writer": {"calls": g.get("writer_calls"), "fallbacks": g.get("fallbacks"),
                   "stats": g.get("writer_stats")},
        "refined_id": g.get("refined_id"),
        "refined_kind": next((c.get("kind") for c in g.get("candidates") or [] if c.get("id") == g.get("refined_id")),
                             None),
        "candidates_dev": [{k: c.get(k) for k in ("id", "kind", "mean", "alpha")} for c in g.get("candidates") or []],
        "rule_faults": g.get("rule_faults"), "rules_dropped": g.get("rules_dropped"),
        "rule_faults_all_candidates": g.get("rule_faults_all_candidates"),
        "overlap": g.get("overlap"), "overlap_threshold": g.get("overlap_threshold"),
        "runtime_s": metrics.get("timing"), "runtime_total_s": round(sum((metrics.get("timing") or {}).values()), 1),
    }


def goal(rows: dict[str, dict]) -> dict:
    """Per rater: corpora where compiled beats the original (CI above 0) and where the refined guideline is worse
    (CI below 0); reached when the first has >= 2 corpora and the second none, all corpora measured; the verdict
    is "not reached" as soon as the corpora left cannot reach it, "open" before. A comparison with a flagged side
    (collapsed or parse-failed test answers) still counts, as its α is still that rater's agreement with the humans,
    and is named in `flagged` so the table says so."""
    out: dict[str, dict] = {}
    for corpus, row in rows.items():
        for rater, comps in row["raters"].items():
            g = out.setdefault(rater, {"compiled_beats_original": [], "refined_worse": [], "corpora": []})
            g["corpora"].append(corpus)
            c, r = comps["compiled vs original zero-shot"], comps["refined guideline vs original"]
            if c and c["ci"] and c["ci"][0] is not None and c["ci"][0] > 0:
                g["compiled_beats_original"].append(corpus)
                if _flagged(row, rater, f"{rater}+compiled"):
                    g.setdefault("flagged", []).append(f"{corpus} (compiled vs original)")
            if r and r["ci"] and r["ci"][1] is not None and r["ci"][1] < 0:
                g["refined_worse"].append(corpus)
                if _flagged(row, rater, f"{rater}+refined"):
                    g.setdefault("flagged", []).append(f"{corpus} (refined vs original)")
    for g in out.values():
        left = len(CORPORA) - len(g["corpora"])  # corpora not measured yet could still add wins
        g["reached"] = len(g["compiled_beats_original"]) >= 2 and not g["refined_worse"] and not left
        lost = bool(g["refined_worse"]) or len(g["compiled_beats_original"]) + left < 2
        g["verdict"] = ("reached" if g["reached"] else "not reached" if lost
                        else f"open: {len(g['corpora'])} of {len(CORPORA)} corpora measured")
    return out


def _flagged(row: dict, *variants: str) -> list[str]:
    """The variants among `variants` whose test answers were flagged (collapsed or parse-failed) in `row`."""
    return [v for v in variants if v in (row.get("flags") or {})]


def _mark(row: dict, rater: str, a: str, b: str) -> str:
    """" ⚑" when a side of the comparison `a` vs `b` (templates of COMPARISONS) of `rater` was flagged, else ""."""
    return " ⚑" if _flagged(row, a.format(r=rater), b.format(r=rater)) else ""


def _fmt(d: dict | None) -> str:
    if not d or d.get("diff") is None:
        return "n/a"
    ci = d.get("ci") or [None, None]
    if d.get("ci_undefined") or ci[0] is None:
        return f"{d['diff']:+.3f} [CI undefined]"
    return f"{d['diff']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _est(e: dict | None) -> str:
    if not e or e.get("value") is None:
        return "n/a"
    ci = e.get("ci") or [None, None]
    return f"{e['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci[0] is not None else "")


def markdown(rows: dict[str, dict], goals: dict) -> str:
    lines = ["Test split, paired bootstrap (95 % CI) on the same items. *compiled* = refined guideline + trace demos "
             "(what program.json holds). Written by `python benchmarks/guidelines.py` from the rows it recorded "
             "(benchmarks/results/guidelines/, each from a complete run's metrics.json and predictions); item ids "
             f"only. Corpora recorded: {len(rows)} of {len(CORPORA)} ({', '.join(rows) or 'none yet'}).", ""]
    lines += ["| corpus | rater | Δα compiled − original | Δα compiled − demos | Δα compiled − refined | "
              "Δα refined − original |", "|---|---|---|---|---|---|"]
    for corpus, row in rows.items():
        for rater, comps in row["raters"].items():
            cells = [_fmt(comps[k]) + _mark(row, rater, a, b) for k, a, b in COMPARISONS]
            lines.append(f"| {corpus} | {rater} | " + " | ".join(cells) + " |")
    flagged = [f"{corpus} {name}: {text}" for corpus, row in rows.items()
               for name, text in (row.get("flags") or {}).items()]
    lines += ["", "⚑ one side's test answers were flagged (collapsed or parse-failed): that Δα measures a collapse "
              "or a failure as much as a rating. Flagged: " + ("; ".join(flagged) if flagged else "none") + "."]
    lines += ["", "| corpus | test items | α among LLM raters: original | compiled | Δ (paired) | chosen on dev | "
              "dev separated it | dev items needed for Δα 0.10 at 80 % | runtime (2 cores) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for corpus, row in rows.items():
        ir, p, sel = row["inter_rater"], row["power"] or {}, row["selection"]
        needed = f"{p.get('n_needed')} (dev has {p.get('n_dev')})" if p.get("n_needed") is not None else "n/a"
        lines.append(f"| {corpus} | {row['n_test']} | {_est(ir['original'])} | {_est(ir['compiled'])} | "
                     f"{_fmt(ir['change'])} | {sel.get('chosen')} ({sel.get('chosen_kind')}) | "
                     f"{'yes' if sel.get('separated') else 'no'} | {needed} | {row['runtime_total_s']} s |")
    lines += ["", "Runtime: the stages' seconds in the run's metrics.json. A stage replayed from the DSPy cache counts "
              "the replay. Runs made before a running stage journalled its time (VADER, ConvAbuse, Newsroom) count a "
              "stage that was stopped and resumed only in the session that finished it."]
    lines += ["", "Rules found faulty by the rule check, found/rewritten/dropped: in the refined guideline (n/a when "
              "it has no label sections: a gepa or mipro instruction), then summed over every candidate written by "
              "the trace writer.", "",
              "| corpus | refined guideline | writer calls | writer fallbacks | quotes an item | states a label | "
              "restates the original | neighbouring sections overlap (Jaccard, before → after) |",
              "|---|---|---|---|---|---|---|---|"]
    def frd(faults: dict | None, k: str) -> str:
        v = (faults or {}).get(k) or {}
        return f"{v.get('found', 0)}/{v.get('rewritten', 0)}/{v.get('dropped', 0)}" if faults else "n/a"

    for corpus, row in rows.items():
        refined, every = row["rule_faults"], row.get("rule_faults_all_candidates")
        ov = "; ".join(f"{o['a']} vs {o['b']} {o['before']} → {o['after']}" for o in row["overlap"] or []) or "n/a"
        lines.append(f"| {corpus} | {row.get('refined_id')} ({row.get('refined_kind')}) | {row['writer']['calls']} | "
                     f"{row['writer']['fallbacks']} | "
                     + " | ".join(f"{frd(refined, k)} · {frd(every, k)}"
                                  for k in ("quotes_item", "states_label", "restates_original"))
                     + f" | {ov} |")
    lines += ["", "**Selection on dev.**", ""]
    for corpus, row in rows.items():
        lines.append(f"- {corpus}: {row['selection'].get('reason')}")
    lines += ["", "**Candidates on dev** (α per rater and their mean, the selection's score; a candidate whose text "
              "is the original's is scored as the original):", ""]
    for corpus, row in rows.items():
        cands = row.get("candidates_dev") or []
        raters = list((cands[0].get("alpha") or {}) if cands else [])
        lines += [f"| {corpus}: candidate | kind | mean α | " + " | ".join(raters) + " |",
                  "|---|---|---|" + "---|" * len(raters)]
        for c in cands:
            alphas = " | ".join("n/a" if (c.get("alpha") or {}).get(r) is None else f"{c['alpha'][r]:.3f}"
                                for r in raters)
            mean = "n/a" if c.get("mean") is None else f"{c['mean']:.3f}"
            lines.append(f"| {c['id']} | {c.get('kind')} | {mean} | {alphas} |")
        lines.append("")
    lines += ["**The goal.**", "",
              "The compiled rater beats the original with a CI above 0 on at least two corpora, and on none is the "
              "refined guideline worse with a CI below 0.", ""]
    for rater, g in goals.items():
        lines.append(f"- {rater}: compiled beats the original on {', '.join(g['compiled_beats_original']) or 'none'}; "
                     f"refined worse on {', '.join(g['refined_worse']) or 'none'} "
                     f"(of {', '.join(g['corpora'])}): **{g['verdict']}**"
                     + (f"; counted with a flagged side (⚑): {', '.join(g['flagged'])}" if g.get("flagged") else ""))
    return "\n".join(lines) + "\n"


def row_file(out: Path, corpus: str) -> Path:
    return out / "guidelines" / f"{corpus}.json"


def record(run: Path, out: Path, corpus: str) -> dict:
    """Write the row of a complete run to `<out>/guidelines/<corpus>.json` (item ids only) and return it."""
    row = corpus_row(run)
    path = row_file(out, corpus)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return row


def is_public(spec: Path) -> bool:
    """Whether the corpus ships with the code (a `package:` source, like VADER): then its run's journals, which
    quote items, may be published; otherwise it is published by item id only."""
    import yaml

    source = str((yaml.safe_load(spec.read_text(encoding="utf-8")).get("data") or {}).get("source") or "")
    return source.startswith("package:")


def publish(run: Path, spec: Path, results: Path, docs: Path | None) -> Path:
    """Publish a complete run to `<results>/<run name>/` (and its docs page under `docs`, when given)."""
    from thinktrace.results import main as publish_run

    out = results / run.name
    args = [str(run), str(out), "--with-journals" if is_public(spec) else "--ids-only"]
    if docs is not None:
        docs.mkdir(parents=True, exist_ok=True)
        args += ["--docs", str(docs / f"{run.name}.md")]
    if publish_run(args) != 0:
        raise SystemExit(f"publishing {run} failed (the error is above)")
    return out


def recorded_rows(out: Path) -> dict[str, dict]:
    """Every corpus row recorded under `<out>/guidelines/`, in CORPORA order (others after, by name)."""
    found = {p.stem: p for p in (out / "guidelines").glob("*.json")}
    order = [c for c in CORPORA if c in found] + sorted(set(found) - set(CORPORA))
    return {c: json.loads(found[c].read_text(encoding="utf-8")) for c in order}


COMPARISON_COLORS = {"compiled vs original zero-shot": "darkred", "compiled vs demos alone": "tab:cyan",
                     "compiled vs refined guideline alone": "tab:orange", "refined guideline vs original": "tab:purple"}


def figure(rows: dict[str, dict]) -> bytes:
    """The table's paired Δα as a forest plot: one row per corpus, rater and comparison (the colour; ⚑: a flagged
    side)."""
    from thinktrace._plots import alpha_forest

    points = []
    for corpus, row in rows.items():
        for rater, comps in row["raters"].items():
            for k, a, b in COMPARISONS:
                d = comps.get(k) or {}
                lo, hi = (d.get("ci") if not d.get("ci_undefined") else None) or (None, None)
                points.append({"label": f"{corpus} · {rater}{_mark(row, rater, a, b)}", "value": d.get("diff"),
                               "lo": lo, "hi": hi, "kind": k})
    return alpha_forest(points, title="Compiled rater: paired Δα on test", colors=COMPARISON_COLORS,
                        xlabel="Δα: the first named minus the second (paired bootstrap 95% CI)")


def build_table(rows: dict[str, dict], out: Path, figure_path: Path | None = None) -> dict:
    """Write the table (`<out>/guidelines.md` and `.json`) and its figure (`figure_path`, default
    `<out>/guidelines.png`) from the recorded rows."""
    goals = goal(rows)
    out.mkdir(parents=True, exist_ok=True)
    if rows:
        figure_path = figure_path or out / "guidelines.png"
        figure_path.parent.mkdir(parents=True, exist_ok=True)
        figure_path.write_bytes(figure(rows))
    (out / "guidelines.json").write_text(json.dumps({"corpora": rows, "goal": goals}, indent=2, ensure_ascii=False)
                                         + "\n", encoding="utf-8")
    (out / "guidelines.md").write_text(markdown(rows, goals), encoding="utf-8")
    return {"corpora": rows, "goal": goals}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/guidelines.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", action="append", choices=CORPORA, help="only this corpus (repeatable); default: all")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "guidelines", help="where the run folders go")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="where the table goes")
    p.add_argument("--results", type=Path, default=ROOT / "results",
                   help="where a complete corpus run is published (results/guidelines-<corpus>/)")
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "results",
                   help="where the published run's docs page goes (<docs>/guidelines-<corpus>.md)")
    p.add_argument("--figure", type=Path, default=ROOT / "docs" / "images" / "guidelines-benchmark.png",
                   help="where the table's Δα forest plot goes (the docs show it)")
    p.add_argument("--no-publish", action="store_true", help="record the rows, publish no results folder or page")
    p.add_argument("--table-only", action="store_true", help="build the table from the rows recorded; run nothing")
    args = p.parse_args(argv)
    failed = []
    for corpus in args.corpus or CORPORA:
        spec = SPECS / f"{corpus}.yaml"
        run = args.runs / spec_name(spec)
        if row_file(args.out, corpus).exists() and not is_complete(run):
            print(f"{corpus}: recorded in {row_file(args.out, corpus)} (delete it to run the corpus again)")
            continue
        if not args.table_only:
            run, code, seconds = run_corpus(spec, args.runs)
            print(f"{corpus}: {'complete' if code == 0 else f'stopped (exit {code})'} in {seconds:.0f} s -> {run}")
            if code != 0:
                failed.append(corpus)
        if is_complete(run):
            record(run, args.out, corpus)
            if not args.no_publish:
                print(f"{corpus}: published to {publish(run, spec, args.results, args.docs)}")
    table = build_table(recorded_rows(args.out), args.out, args.figure)
    print(f"table: {args.out / 'guidelines.md'} ({len(table['corpora'])} corpora: {', '.join(table['corpora'])})")
    if failed:
        print(f"incomplete: {', '.join(failed)}; rerun the same command to resume", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
