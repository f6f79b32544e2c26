"""Publish a finished run: copy the small files a repository can keep into a results folder, and keep a README's
results table in step with them.

    python -m thinktrace.results runs/distill/main results/distill                   # metrics, spec, report, summary
    python -m thinktrace.results runs/distill/main results/distill --readme README.md  # + the README's table

The results folder holds metrics.json, spec.resolved.yaml, report.md with its figures/ (PNG) and summary.md: the
findings table (the paper's questions, see `thinktrace.report.sections.findings`) and the per-variant scores. Journals,
adapters and report.html (figures inlined as base64) stay in the run folder. With `--readme`, the text between
`<!-- results:NAME -->` and `<!-- /results:NAME -->` (NAME: the results folder's name) is replaced by
`readme_block`; the markers must already be in the file. Only a finished run is published (complete, or complete with variants flagged as failed). Exit codes: 0 done;
2 not a complete run folder, or the README lacks the markers (one line on stderr).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from thinktrace.report.flags import flag_text
from thinktrace.report.format import fmt_est
from thinktrace.report.model import Heading, Report, ReportSection, Table
from thinktrace.report.render import FIGURE_DIR, render_markdown
from thinktrace.report.sections import findings
from thinktrace.report.sections.reading import reading_blocks, what_ran
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


def summary_report(run: RunView) -> Report:
    """The findings, their reading, what ran and the per-variant scores, every number read off the run's files."""
    split = run.main_split()
    blocks = [*findings.findings(run), *reading_blocks(run), *what_ran(run)]
    if split is not None:
        blocks = [*blocks, Heading(f"Scores per variant ({split} split, vs the aggregated human label)"),
                  scores_table(run, split)]
    return Report(f"Results: {run.name}", [], [ReportSection("findings", "Does it work?", blocks)])


def readme_block(run: RunView) -> str:
    """The Markdown a README shows for this run: the summary without its title (figures only named)."""
    text = render_markdown(summary_report(run))
    return text.split("\n", 1)[1].strip() + "\n" if text.startswith("# ") else text


def publish(run_dir: Path, out: Path) -> list[Path]:
    run = RunView(run_dir)
    state = (run.metrics.get("status") or {}).get("state", "complete")
    if state not in FINISHED:
        raise RunError(run_dir, f"the run is {state}: resume it to the end before publishing its results")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in KEPT:
        if (run.path / name).exists():
            shutil.copyfile(run.path / name, out / name)
            written.append(out / name)
    if (run.path / FIGURE_DIR).is_dir():
        shutil.copytree(run.path / FIGURE_DIR, out / FIGURE_DIR, dirs_exist_ok=True)
    summary = out / "summary.md"
    write_atomic(summary, render_markdown(summary_report(run), out))
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
    args = p.parse_args(argv)
    try:
        paths = publish(args.run_dir, args.out)
        if args.readme:
            update_readme(args.readme, args.out.name, readme_block(RunView(args.out)))
            paths.append(args.readme)
    except (RunError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
