"""`python -m thinktrace.compile SPEC [--set key=value ...] [--dry-run] [--resume RUN_DIR [--reviewed]]`

Loads the spec, the data and the models, runs the configured stages and writes the run folder
`<output_dir>/<name>/<timestamp>/`: spec.resolved.yaml, data.json, predictions.jsonl, metrics.json, report.md.
Exit codes: 0 complete; 2 bad input (one line on stderr naming the file and the field); 3 incomplete (an endpoint
went down or calls failed retryably: one line naming the model, the endpoint and the command that resumes the
run); 4 finished with more final failures than `calls.max_failed`, or with a variant whose answers parse less
often than `evaluate.min_parse_rate` (the run and its report are complete; the report flags it); 5 stopped at the
budget (`budget.max_tokens` / `budget.max_usd` reached: one line with the command that resumes the run; raise the
budget first); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

import thinktrace._env  # noqa: F401  (before dspy)
from thinktrace.errors import RunIncomplete, SpecError, ThinktraceError
from thinktrace.run.api import FLAGGED_STATES

EXIT_INCOMPLETE = 3  #: the run stopped with work left (an endpoint down): resume it
EXIT_FAILURES = 4  #: the run finished, but a stage's final failures exceed calls.max_failed or a variant's parse
#: rate is below evaluate.min_parse_rate
EXIT_BUDGET = 5  #: the run stopped at its budget (budget.max_tokens / max_usd): raise it and resume


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m thinktrace.compile", description=__doc__.split("\n\n")[1])
    p.add_argument("spec", nargs="?", help="experiment spec (YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. --set data.limit=50 --set models.raters.0.temperature=0.7")
    p.add_argument("--dry-run", action="store_true", help="validate, print the plan, load no model")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run in this folder")
    p.add_argument("--out", metavar="RUN_DIR", help="write the run into this folder (resumes if it exists)")
    p.add_argument("--reviewed", action="store_true", help="with --resume: also re-run what depends on the traces "
                   "(demos, SFT, guideline, trace quality) on the reviewed traces (thinktrace review RUN_DIR), paired "
                   "against the raw ones in the report")
    p.add_argument("--reviewer", metavar="NAME", help="with --reviewed: whose reviews make the reviewed set "
                   "(default: the first reviewer in reviews.jsonl)")
    p.add_argument("--schema", action="store_true", help="print every spec field with its meaning and exit")
    return p


def run(args: argparse.Namespace) -> int:
    """The command: `thinktrace.compile(...)` (thinktrace.run.api) with the command line's arguments."""
    from thinktrace.run.api import compile as compile_spec, print_plan

    if args.schema:
        from thinktrace.schema_doc import markdown
        from thinktrace.spec import Spec

        print(markdown(Spec))
        return 0
    if not args.spec:
        raise SpecError("", "missing SPEC argument (a YAML experiment spec)")
    run_dir = args.resume or args.out
    if args.dry_run:
        print_plan(compile_spec(args.spec, overrides=args.overrides, out=run_dir, dry_run=True, reviewed=args.reviewed,
                                reviewer=args.reviewer).plan)
        return 0
    if args.reviewer and not args.reviewed:
        raise SpecError("--reviewer", "only with --reviewed")
    result = compile_spec(args.spec, overrides=args.overrides, out=run_dir, reviewed=args.reviewed,
                          reviewer=args.reviewer, resume_command=lambda folder: resume_command(args, folder))
    print(f"run folder: {result.path}", file=sys.stderr)
    print(result.summary)
    status = result.metrics.status
    if status.state in FLAGGED_STATES:
        where = "the report's LM calls section" if status.state == "failures_over_threshold" else \
            "the top of the report"
        print(f"error: run finished with {status.message} (see {where})", file=sys.stderr)
        return EXIT_FAILURES
    return 0


def resume_command(args: argparse.Namespace, run_dir) -> str:
    """The command line that continues this run (spec, overrides, --resume)."""
    import shlex

    parts = ["python -m thinktrace.compile", shlex.quote(str(args.spec))]
    parts += [f"--set {shlex.quote(o)}" for o in args.overrides]
    reviewed = ["--reviewed"] + (["--reviewer", shlex.quote(args.reviewer)] if args.reviewer else []) \
        if args.reviewed else []
    return " ".join(parts + ["--resume", shlex.quote(str(run_dir))] + reviewed)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except RunIncomplete as err:  # an outage, calls that failed retryably, the budget: everything done is saved
        from thinktrace.errors import BudgetReached

        print(f"error: {err}", file=sys.stderr)
        return EXIT_BUDGET if isinstance(err.__cause__, BudgetReached) else EXIT_INCOMPLETE
    except ThinktraceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: completed work is saved; rerun with --resume <run folder> to continue", file=sys.stderr)
        return 130



def _api():
    from thinktrace.run.api import compile as compile_spec

    return compile_spec


from thinktrace._callable import callable_module  # noqa: E402

callable_module(__name__, _api)  # `thinktrace.compile(...)` is the API call even after this module is imported

if __name__ == "__main__":
    sys.exit(main())

