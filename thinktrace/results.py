"""Publish a finished run: copy the small files a repository can keep into a results folder, and keep the README's
results table and the docs site's results page in step with them.

    python -m thinktrace.results runs/distill/main results/distill                   # metrics, spec, report, summary
    python -m thinktrace.results runs/distill/main results/distill --readme README.md --docs docs/results/distill.md
    python -m thinktrace.results results/distill results/distill --readme README.md --docs docs/results/distill.md
    python -m thinktrace.results runs/convabuse-distill/main results/convabuse-distill --ids-only   # no item text

The results folder holds metrics.json, spec.resolved.yaml, report.md with its figures/ (PNG) and summary.md: the
findings table (the paper's questions, see `thinktrace.report.sections.findings`) and the per-variant scores. Journals,
adapters and report.html (figures inlined as base64) stay in the run folder. With `--readme`, the text between
`<!-- results:NAME -->` and `<!-- /results:NAME -->` (NAME: the results folder's name) is replaced by
`readme_block` (the short findings table and the claims); the markers must already be in the file. With `--docs`,
that file is (over)written with `docs_page`: the summary as a page of the docs site (mkdocs.yml's nav must list
it). The third line re-renders both from a results folder itself (after a change of the rendering code). Only a
finished run is published (complete, or complete with variants flagged as failed). Exit codes: 0 done; 2 not a
complete run folder, or the README lacks the markers (one line on stderr).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import textwrap
from pathlib import Path

from thinktrace.report.flags import flag_text
from thinktrace.report.format import fmt_est
from thinktrace.report.model import Heading, Report, ReportSection, Table
from thinktrace.report.model import Bullets, Strong
from thinktrace.report.render import FIGURE_DIR, md_cell, md_text, render_markdown
from thinktrace.report.sections import findings
from thinktrace.report.sections.reading import reading_blocks, what_ran
from thinktrace.portable import portable
from thinktrace.rundir import write_atomic
from thinktrace.runview import RunError, RunView

#: run states that are published: finished runs (a variant that failed its parse-rate check is flagged in the summary)
FINISHED = ("complete", "variants_failed")
#: what a results folder keeps from the run folder (report.md's figures come with it)
KEPT = ("metrics.json", "spec.resolved.yaml", "report.md")


def scores_table(run: RunView, split: str) -> Table:
    """α, τ-b and ICC(3,1) with their CIs per variant, and how many labels a grammar completed after a cut."""
    raters = run.split(split).get("raters") or {}
    rows = []
    for v in run.variants(split):
        m = raters.get(v["name"])
        if m is not None:
            rows.append([v["name"], v.get("kind", ""), fmt_est(m.get("alpha")), fmt_est(m.get("kendall_tau_b")),
                         fmt_est(m.get("icc")), f"{m.get('n_label_by_choice', 0)}/{m.get('n_items', 0)}",
                         flag_text(m) or "—"])
    return Table(["variant", "kind", "α (95% CI)", "τ-b (95% CI)", "ICC(3,1) (95% CI)", "label by choice", "flags"],
                 rows)


def summary_report(run: RunView, name: str | None = None) -> Report:
    """The findings, their reading, what ran and the per-variant scores, every number read off the run's files;
    titled with `name` (the results folder's, e.g. a reviewed resume published apart from its run) or the spec's."""
    split = run.main_split()
    blocks = [*findings.findings(run), *reading_blocks(run), *what_ran(run)]
    if split is not None:
        blocks = [*blocks, Heading(f"Scores per variant ({split} split, vs the aggregated human label)"),
                  scores_table(run, split)]
    return Report(f"Results: {name or run.name}", [], [ReportSection("findings", "Does it work?", blocks)])


#: the width README and docs prose is wrapped at (tests/test_docs.py: no paragraph over 8 lines)
WIDTH = 115


#: what must not begin a wrapped line: Markdown would read it as a list item, a heading or a quote
_BLOCK_START = re.compile(r"([-*+]|\d+[.)])(\s|$)|#|>")


def _wrap(text: str, indent: str = "") -> str:
    """`text` wrapped at WIDTH; a line that would begin with a list marker, `#` or `>` takes the previous line's
    last word with it, so wrapping never changes what the Markdown says."""
    lines = textwrap.wrap(text, WIDTH, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)
    for i in range(1, len(lines)):
        while _BLOCK_START.match(lines[i][len(indent):]) and " " in lines[i - 1].strip():
            head, word = lines[i - 1].rsplit(" ", 1)
            lines[i - 1], lines[i] = head, f"{indent}{word} {lines[i][len(indent):]}"
        rest = lines[i][len(indent):]
        if _BLOCK_START.match(rest):  # one word longer than a line before it: escape the marker instead
            cut = re.match(r"\d+", rest).end() if rest[0].isdigit() else 0
            lines[i] = f"{indent}{rest[:cut]}\\{rest[cut:]}"
    return "\n".join(lines)


def claims(run: RunView) -> list[str]:
    """The reading's verdict on each of the paper's claims, as Markdown (one string per claim)."""
    out = []
    for block in reading_blocks(run):
        if isinstance(block, Bullets):
            for item in block.items:
                parts = list(item) if isinstance(item, (list, tuple)) else [item]
                if parts and isinstance(parts[0], Strong) and str(parts[0]).startswith("Claim"):
                    out.append(md_text(parts))
    return out


def readme_block(run: RunView) -> str:
    """The Markdown a README shows for this run: the findings table without the τ-b and ICC columns, one line on
    how to read it, and the verdict on each claim; every number read off the run's metrics.json (the full summary
    is `docs_page`)."""
    split = run.main_split()
    body = findings.rows(run, split) if split is not None else []
    if not body:
        return "*This run made none of the comparisons the paper's questions need.*\n"
    lines = ["| question | comparison (b − a) | Δα (95% CI) | reading (Δα) | Holm (α rows) |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(md_cell(row[i]) for i in (0, 1, 2, 5, 6)) + " |" for row in body]
    lines += ["", _wrap(f"*{split} split, {run.split(split).get('n_items', '?')} items; Δα: paired bootstrap "
                        "difference of Krippendorff's α with its 95 % CI. A reading says better or worse only when "
                        "the CI excludes 0; Holm: adjusted over the table's rows.*"), ""]
    lines += [_wrap(f"- {claim}", "  ") for claim in claims(run)]
    return "\n".join(lines).rstrip() + "\n"


def docs_page(run: RunView, name: str) -> str:
    """The docs site's page of the results folder `results/NAME/`: where it comes from, the experiment's
    description, then the summary (findings, reading, what ran, scores per variant), every number read off its
    metrics.json. Figures stay in the folder's report.md (a docs page links only to files under docs/)."""
    summary = render_markdown(summary_report(run, name))
    title, body = summary.split("\n", 1) if summary.startswith("# ") else (f"# Results: {name}", summary)
    head = [title, "",
            f"<!-- Generated from results/{name}/ by `python -m thinktrace.results RUN results/{name} --docs "
            f"docs/results/{name}.md`;\ndo not edit: tests/test_docs.py fails when this page differs from what the "
            "code renders. -->", ""]
    description = " ".join(str(run.spec.get("description") or "").split())
    if description:
        head += [_wrap(md_text(description)), ""]
    report = ("`report.md` (the run's full report, with its figures), " if (run.path / "report.md").exists()
              else "")
    if (run.path / ATTEMPTS).exists():
        report += ("`attempts.jsonl` (the sampling journal, which another experiment replays with "
                   f"`sampling.attempts_from: results/{name}`), ")
    if (run.path / PREDICTIONS).exists():
        report += "`predictions.jsonl` (every rating, which `python -m thinktrace.compare` pairs across runs), "
    kept_out = ("" if report else " The run's full report stays in its run folder: it quotes items of a corpus "
                "the repository does not ship, and published results name items by id only.")
    head += [_wrap(f"Every number on this page is read off `results/{name}/metrics.json` by `python -m "
                   f"thinktrace.results`. The folder `results/{name}/` of the repository also holds {report}"
                   "`summary.md` (this page's tables) and `spec.resolved.yaml` (the spec as it ran)." + kept_out
                   + " How to read the numbers: [What the numbers mean](../numbers.md)."), ""]
    return "\n".join(head) + "\n" + body.strip() + "\n"


#: what `--ids-only` leaves in the run folder: the report quotes items (trace samples, the guideline's examples)
QUOTES_ITEMS = ("report.md",)
#: `--with-journals`: the sampling journal (another experiment replays it with `sampling.attempts_from`) and the
#: predictions (`python -m thinktrace.compare` pairs the published run with another from them)
ATTEMPTS, PREDICTIONS = "attempts.jsonl", "predictions.jsonl"


def _copy_portable(src: Path, dst: Path, run_dir: Path) -> None:
    """Copy a text file with its local paths made portable (`portable`); write it in place when src is dst."""
    write_atomic(dst, portable(src.read_text(encoding="utf-8"), run_dir))


def publish(run_dir: Path, out: Path, ids_only: bool = False, with_journals: bool = False) -> list[Path]:
    """Copy the run's small files into `out` and write its summary.md. `ids_only`: for a corpus the repository does
    not ship (e.g. ../shared datasets), nothing that quotes an item's text is copied: report.md and its figures
    stay in the run folder (an earlier copy in `out` is removed); metrics.json and summary.md name items by id.
    `with_journals`: also the sampling journal (attempts.jsonl), so that another experiment can train on the same
    traces (`sampling.attempts_from: results/NAME`), and the predictions (predictions.jsonl), so that `compare`
    pairs the published run with another; both quote items (rationales)."""
    if ids_only and with_journals:
        raise ValueError("--with-journals publishes traces and rationales, which quote items: not with --ids-only")
    run = RunView(run_dir)
    state = (run.metrics.get("status") or {}).get("state", "complete")
    if state not in FINISHED:
        raise RunError(run_dir, f"the run is {state}: resume it to the end before publishing its results")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    same = run.path.resolve() == out.resolve()  # re-rendering a results folder itself: nothing to copy
    for name in KEPT + ((ATTEMPTS, PREDICTIONS) if with_journals else ()):
        if ids_only and name in QUOTES_ITEMS:
            if not same:
                (out / name).unlink(missing_ok=True)
            continue
        if (run.path / name).exists():
            _copy_portable(run.path / name, out / name, run.path)
            written.append(out / name)
    if ids_only and not same:
        shutil.rmtree(out / FIGURE_DIR, ignore_errors=True)
    elif (run.path / FIGURE_DIR).is_dir() and not same:
        shutil.copytree(run.path / FIGURE_DIR, out / FIGURE_DIR, dirs_exist_ok=True)
    summary = out / "summary.md"
    write_atomic(summary, render_markdown(summary_report(run, out.name), out))
    return [*written, summary]


def update_readme(readme: Path, name: str, block: str) -> None:
    text = readme.read_text(encoding="utf-8")
    start, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"{readme}: no `{start}` ... `{end}` markers to put the results table between")
    write_atomic(readme, pattern.sub(lambda _: f"{start}\n{block}{end}", text, count=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m thinktrace.results", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a complete run folder")
    p.add_argument("out", type=Path, help="the results folder to write (e.g. results/distill)")
    p.add_argument("--readme", type=Path, help="also replace this file's results block (between markers)")
    p.add_argument("--docs", type=Path, help="also write the docs site's page of the results, e.g. "
                                             "docs/results/distill.md")
    p.add_argument("--ids-only", action="store_true",
                   help="publish nothing that quotes item text (report.md and its figures stay in the run folder): "
                        "for corpora the repository does not ship")
    p.add_argument("--with-journals", action="store_true",
                   help="also publish the sampling journal (attempts.jsonl: another experiment replays the same traces "
                        "with `sampling.attempts_from: results/NAME`) and predictions.jsonl (`compare` pairs the "
                        "published run with another); both quote items")
    args = p.parse_args(argv)
    try:
        paths = publish(args.run_dir, args.out, ids_only=args.ids_only, with_journals=args.with_journals)
        if args.readme:
            update_readme(args.readme, args.out.name, readme_block(RunView(args.out)))
            paths.append(args.readme)
        if args.docs:
            args.docs.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(args.docs, docs_page(RunView(args.out), args.out.name))
            paths.append(args.docs)
    except (RunError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
