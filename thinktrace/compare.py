"""Compare compiled programs across runs and variants.

    python -m thinktrace.compare RUN [RUN ...] [--html OUT.html] [--split test] [--n-boot N] [--match FIRST=OTHER]

One table over every (run, variant): α with its 95 % CI, items, parse rate, the difference to the run's baseline
variant of the same rater (paired bootstrap from the prediction records), and the difference to the FIRST run's
variant of the same name (or of the rater `--match` maps it to: two students fine-tuned the same ways) when both
runs evaluated the same items with the same human labels (otherwise the runs are listed but not paired, with a
message saying so). Then the cost of each run. Markdown goes to stdout, a self-contained HTML page (with an α
forest plot) to --html. A path that is not a run folder: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from thinktrace.report import fmt_est, pct
from thinktrace.report.format import undefined_ci
from thinktrace.report.model import Bullets, Figure, Report, ReportSection, Table, Text
from thinktrace.report.render import render_html, render_markdown
from thinktrace.runview import RunError, RunView


@dataclass
class RunComparison:
    """What `compare` found over several run folders: one row per (run, variant) and the notes on runs that could
    not be paired (not the metrics document's paired `thinktrace.records.Comparison`)."""

    split: str
    runs: list[RunView]
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """The comparison as `python -m thinktrace.compare` prints it."""
        return render_markdown(build_report(self))


def _label_set(run: RunView):
    from thinktrace.labels import LabelSet

    return LabelSet.of(run.label_set, run.level)


def _n_boot(run: RunView, n_boot: int | None) -> int:
    return n_boot or int((run.spec.get("evaluate") or {}).get("bootstrap") or 1000)


def _seed(run: RunView) -> int:
    return int((run.metrics.get("spec") or {}).get("seed") or 0)


def paired(run: RunView, split: str, items: Sequence[str], human: dict, a: dict, b: dict,
           n_boot: int | None) -> dict | None:
    """Paired-bootstrap α(b) - α(a) on `items` (those with a human label); a, b: {item_id: label}."""
    from thinktrace.agreement import paired_difference

    ids = [i for i in items if human.get(i) is not None]
    if not ids:
        return None
    out = paired_difference([human[i] for i in ids], [a.get(i) for i in ids], [b.get(i) for i in ids],
                            _label_set(run), metric="alpha", n_boot=_n_boot(run, n_boot), seed=_seed(run))
    return {"diff": out.get("diff"), "ci": out.get("ci"), "p": out.get("p_b_not_better"), "n": len(ids),
            "n_boot": out.get("n_boot"), "n_valid": out.get("n_valid"), "ci_undefined": out.get("ci_undefined")}


def _pairable(first: RunView, other: RunView, split: str) -> str | None:
    """None when the two runs evaluated the same items with the same human labels on `split`, else why not."""
    a, b = first.eval_items(split), other.eval_items(split)
    if a is None or b is None or set(a) != set(b):
        return f"runs {first.label} and {other.label} have different {split} items: not paired"
    ha, hb = first.human(split), other.human(split)
    if any(ha.get(i) != hb.get(i) for i in a if ha.get(i) is not None and hb.get(i) is not None):
        return f"runs {first.label} and {other.label} have different human labels on the same {split} items: " \
               "not paired"
    if first.label_set != other.label_set or first.level != other.level:
        return f"runs {first.label} and {other.label} have different label sets or levels of measurement: not paired"
    return None


def first_name(name: str, match: Sequence[tuple[str, str]] = ()) -> str:
    """The first run's variant a later run's variant `name` is paired with: its own name, unless a `match` pair
    (first, other) maps the rater `other` (and its variants `other+...`) to `first` (`first+...`), e.g. the same
    adapter kind on another student: ("smollm2-135m", "qwen2.5-coder-0.5b")."""
    for first, other in match:
        if name == other or name.startswith(other + "+"):
            return first + name[len(other):]
    return name


def compare(runs: Sequence[RunView], split: str = "test", n_boot: int | None = None,
            match: Sequence[tuple[str, str]] = ()) -> RunComparison:
    comp = RunComparison(split=split, runs=list(runs))
    first = runs[0]
    why_not = {i: _pairable(first, run, split) for i, run in enumerate(runs) if i > 0}
    comp.notes += [w for w in why_not.values() if w]
    for i, run in enumerate(runs):
        if split not in run.splits():
            comp.notes.append(f"run {run.label} has no results on the {split} split")
            continue
        raters = run.split(split).get("raters") or {}
        items = run.eval_items(split) or []
        human = run.human(split)
        variants = run.variants(split)
        for v in variants:
            m = raters.get(v["name"])
            if m is None:
                continue
            n = m.get("n_items", 0)
            row = {"run": run.label, "run_index": i, "variant": v["name"], "kind": v.get("kind", ""),
                   "rater": v.get("rater") or "", "model": v.get("model") or "", "alpha": m.get("alpha"),
                   "n_items": n, "parse_rate": (n - m.get("n_unparsed", 0)) / n if n else None,
                   "vs_baseline": None, "vs_baseline_note": "", "vs_first": None, "vs_first_note": ""}
            # -- the run's own baseline of the same rater
            if v.get("kind") == "baseline":
                row["vs_baseline_note"] = "(baseline)"
            else:
                base = next((b for b in variants if b.get("kind") == "baseline" and b["name"] != v["name"]
                             and v.get("rater") and b.get("rater") == v.get("rater") and b["name"] in raters), None)
                if base is None:
                    row["vs_baseline_note"] = "no baseline of this rater"
                else:
                    row["vs_baseline"] = paired(run, split, items, human, run.labels(split, base["name"]),
                                                run.labels(split, v["name"]), n_boot)
                    row["vs_baseline_note"] = f"vs {base['name']}"
            # -- the first run's variant of the same name
            if i == 0:
                row["vs_first_note"] = "(reference run)"
            elif why_not.get(i):
                row["vs_first_note"] = "not paired: different items"
            elif (theirs := first_name(v["name"], match)) not in (first.split(split).get("raters") or {}):
                row["vs_first_note"] = f"no variant {theirs} in {first.label}"
            else:
                fh = first.human(split)
                human_both = {k: fh.get(k, human.get(k)) for k in set(fh) | set(human)}
                row["vs_first"] = paired(first, split, first.eval_items(split) or [], human_both,
                                         first.labels(split, theirs), run.labels(split, v["name"]), n_boot)
                row["vs_first_note"] = f"vs {first.label}" + (f" {theirs}" if theirs != v["name"] else "")
            comp.rows.append(row)
    return comp


# -- formatting -----------------------------------------------------------------------------------------------


def fmt_delta_alpha(d: dict | None, note: str = "") -> str:
    """A row's Δα as `compare`'s `paired` writes it ({diff, ci, p}): `+0.120 [-0.050, +0.300] p=0.040`; `note`
    (or n/a) when there is none. (The report's `thinktrace.report.format.fmt_diff` formats metrics.json's paired
    differences.)"""
    if not d or d.get("diff") is None:
        return note or "n/a"
    ci = d.get("ci") or [None, None]
    text = f"{d['diff']:+.3f}"
    if d.get("ci_undefined"):
        text += f" [{undefined_ci(d)}]"
    elif ci[0] is not None and ci[1] is not None:
        text += f" [{ci[0]:+.3f}, {ci[1]:+.3f}]"
    if d.get("p") is not None:
        text += f" p={d['p']:.3f}"
    return text


def variant_table(comp: RunComparison) -> tuple[list[str], list[list[str]]]:
    first = comp.runs[0].label
    head = ["run", "variant", "kind", "rater", f"α [95% CI] ({comp.split})", "items", "parsed",
            "Δα vs baseline [95% CI]", f"Δα vs {first} [95% CI]"]
    rows = [[r["run"], r["variant"], r["kind"], r["rater"], fmt_est(r["alpha"]), str(r["n_items"]),
             pct(r["parse_rate"]),
             fmt_delta_alpha(r["vs_baseline"], r["vs_baseline_note"]) + (f" ({r['vs_baseline_note']})"
                                                                   if r["vs_baseline"] else ""),
             fmt_delta_alpha(r["vs_first"], r["vs_first_note"]) + (
                 f" ({r['vs_first_note']})" if r["vs_first"] and r["vs_first_note"] != f"vs {first}" else "")]
            for r in comp.rows]
    return head, rows


def runs_table(comp: RunComparison) -> tuple[list[str], list[list[str]]]:
    head = ["#", "run", "time", f"{comp.split} items", "LM calls", "prompt tokens", "completion tokens",
            "wall time", "trace acceptance", "path"]
    rows = []
    for i, run in enumerate(comp.runs):
        c = run.cost()
        items = run.eval_items(comp.split)
        rows.append([str(i + 1), run.label, run.timestamp, "?" if items is None else str(len(items)),
                     str(c["calls"]), str(c["prompt"]), str(c["completion"]),
                     "n/a" if c["wall_s"] is None else f"{c['wall_s']:.1f} s", pct(c["acceptance_rate"]),
                     str(run.path)])
    return head, rows


EXPLAIN = ("Δα: difference in Krippendorff's α (b − a) on the same items with a paired bootstrap 95% CI; p: share of "
           "resamples in which b is not better. Δα vs baseline: against the run's baseline variant of the same "
           "rater. Cross-run Δα: against the first run's variant of the same name (or the name `--match` maps it "
           "to), only when both runs evaluated the same items with the same human labels.")


def build_report(comp: RunComparison) -> Report:
    """The comparison as a report view model (thinktrace.report.model), rendered to Markdown and HTML."""
    import thinktrace._plots as _plots

    plot_rows = []
    for r in comp.rows:
        a = r["alpha"] or {}
        ci = a.get("ci") or [None, None]
        plot_rows.append({"label": f"{r['run']} · {r['variant']}", "value": a.get("value"), "lo": ci[0],
                          "hi": ci[1], "kind": r["kind"]})
    ceiling, all_paired = None, not any("not paired" in n for n in comp.notes)
    loo = ((comp.runs[0].split(comp.split).get("human_ceiling") or {}).get("loo_alpha") or {})
    if all_paired and loo.get("value") is not None:
        ci = loo.get("ci") or [None, None]
        ceiling = {"value": loo["value"], "lo": ci[0], "hi": ci[1]}
    blocks: list = []
    if plot_rows:
        blocks.append(Figure(_plots.alpha_forest(plot_rows, ceiling, f"α vs human ({comp.split} split)"),
                             f"compare-alpha-{comp.split}.png", "alpha forest plot"))
        if not ceiling:
            blocks.append(Text("no common human ceiling drawn: the runs do not share their test items"
                               if not all_paired else "no human ceiling available", "note"))
    blocks.append(Table(*variant_table(comp)))
    if comp.notes:
        blocks.append(Bullets(comp.notes))
    blocks.append(Text(EXPLAIN))
    return Report(f"thinktrace compare ({comp.split} split)", [],
                  [ReportSection("variants", "Variants", blocks),
                   ReportSection("runs", "Runs and cost", [Table(*runs_table(comp))])])


def compare_runs(*runs, split: str = "test", n_boot: int | None = None,
                 match: Sequence[tuple[str, str]] = ()) -> RunComparison:
    """`compare` on run folders given as paths, `RunView`s or API `Run`s (anything with a `path`), the first the
    reference (`thinktrace.compare(...)`); raises RunError when one is not a readable run folder. Its `markdown()`
    is what the command prints."""
    views = [r if isinstance(r, RunView) else RunView(Path(getattr(r, "path", r))) for r in runs]
    if not views:
        raise ValueError("compare needs at least one run")
    return compare(views, split, n_boot, match)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thinktrace.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders (the first is the reference)")
    parser.add_argument("--html", metavar="OUT.html", help="also write a self-contained HTML page here")
    parser.add_argument("--split", default="test", help="evaluation split to compare (default: test)")
    parser.add_argument("--n-boot", type=int, default=None,
                        help="bootstrap resamples of the paired differences (default: each run's evaluate.bootstrap)")
    parser.add_argument("--match", action="append", default=[], metavar="FIRST=OTHER",
                        help="pair a later run's rater OTHER and its variants (OTHER+trace-sft, ...) with the first "
                             "run's FIRST (FIRST+trace-sft, ...), e.g. two students fine-tuned the same ways: "
                             "smollm2-135m=qwen2.5-coder-0.5b (repeatable)")
    args = parser.parse_args(argv)
    match = []
    for m in args.match:
        first, sep, other = m.partition("=")
        if not sep or not first or not other:
            print(f"error: --match takes FIRST=OTHER (two rater names), got {m!r}", file=sys.stderr)
            return 2
        match.append((first, other))
    try:
        runs = [RunView(Path(p)) for p in args.runs]
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.n_boot is not None and args.n_boot < 1:
        print(f"error: --n-boot must be at least 1 (got {args.n_boot})", file=sys.stderr)
        return 2
    comp = compare(runs, args.split, args.n_boot, match)
    report = build_report(comp)  # built once (its plot too), rendered for stdout and for --html
    print(render_markdown(report))  # figures only in the HTML page
    if args.html:
        from thinktrace.rundir import write_atomic

        out = Path(args.html)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(out, render_html(report))
        except OSError as err:
            print(f"error: {out}: cannot write the HTML page ({err.strerror or err})", file=sys.stderr)
            return 2
        print(f"html: {out}", file=sys.stderr)
    return 0


from thinktrace._callable import callable_module  # noqa: E402

callable_module(__name__, lambda: compare_runs)  # `thinktrace.compare(...)` is the API call even after this import

if __name__ == "__main__":
    sys.exit(main())
