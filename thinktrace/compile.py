"""`python -m thinktrace.compile SPEC [--set key=value ...] [--dry-run] [--resume RUN_DIR]`

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
import time
from pathlib import Path

from thinktrace import _env  # noqa: F401  (before dspy)
from thinktrace.errors import RunIncomplete, SpecError, ThinktraceError

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
    p.add_argument("--schema", action="store_true", help="print every spec field with its meaning and exit")
    return p


def plan(loaded, corpus) -> dict:
    """Items per split and, per enabled stage, its plan and an upper bound on LM calls (no model is loaded): the
    stage objects of the run plan themselves (thinktrace.stages)."""
    from thinktrace.stages import plan_stages

    from thinktrace.lm.estimate import cost_lines, estimate

    spec = loaded.spec
    stages = plan_stages(spec, corpus)
    cost = estimate(spec, stages, corpus, loaded.guideline)
    return {"name": spec.name, "items": {n: len(corpus.split(n)) for n in ("train", "dev", "test")},
            "label_set": list(corpus.label_set.labels), "level": corpus.label_set.level,
            "per_annotator": corpus.per_annotator, "stages": stages,
            "lm_calls_max": sum(s["lm_calls_max"] for s in stages.values()),
            "cost": cost, "cost_lines": cost_lines(cost, spec.budget)}


def print_plan(p: dict, out=None) -> None:
    out = out or sys.stdout
    print(f"experiment {p['name']}: items train={p['items']['train']} dev={p['items']['dev']} "
          f"test={p['items']['test']}; labels ({p['level']}): {', '.join(p['label_set'])}; "
          f"per-annotator labels: {'yes' if p['per_annotator'] else 'no'}", file=out)
    for name, stage in p["stages"].items():
        detail = ", ".join(f"{k}={v}" for k, v in stage.items() if k != "lm_calls_max")
        print(f"  stage {name}: {detail}; at most {stage['lm_calls_max']} LM calls", file=out)
    print(f"  total: at most {p['lm_calls_max']} LM calls", file=out)
    for line in p.get("cost_lines", []):
        print(line, file=out)


def run(args: argparse.Namespace) -> int:
    from thinktrace.data import load_corpus
    from thinktrace.spec import Spec, load_spec

    if args.schema:
        from thinktrace.schema_doc import markdown

        print(markdown(Spec))
        return 0
    if not args.spec:
        raise SpecError("", "missing SPEC argument (a YAML experiment spec)")
    loaded = load_spec(args.spec, args.overrides)
    spec = loaded.spec
    if args.resume or args.out:  # a run folder made before a field existed keeps its old rule (e.g. data.tie_break)
        from thinktrace.pipeline import pin_legacy_values

        for note in pin_legacy_values(loaded, args.resume or args.out):
            print(note, file=sys.stderr)
    try:
        corpus = load_corpus(spec.data, loaded.base_dir, spec.data.seed if spec.data.seed is not None else spec.seed)
    except SpecError as err:
        raise err.with_file(str(loaded.path)) from None
    from thinktrace.loader import load_object

    for field in ("rater", "infer", "writer"):
        try:
            load_object(getattr(spec.programs, field), [loaded.base_dir], f"programs.{field}")
        except SpecError as err:
            raise err.with_file(str(loaded.path)) from None
    try:
        the_plan = plan(loaded, corpus)
    except SpecError as err:
        raise err.with_file(str(loaded.path)) from None
    if args.dry_run:
        print_plan(the_plan)
        return 0
    from thinktrace.pipeline import Pipeline

    try:
        pipeline = Pipeline(loaded, corpus, run_dir=args.resume or args.out)
        pipeline.preflight()
    except SpecError as err:
        raise err.with_file(str(loaded.path)) from None
    print_plan(the_plan, out=sys.stderr)
    pipeline.resume_command = resume_command(args, pipeline.rundir.path)
    pipeline.run()
    print(f"run folder: {pipeline.rundir.path}", file=sys.stderr)
    print(pipeline.summary())
    status = pipeline.result.get("status") or {}
    if status.get("state") in ("failures_over_threshold", "variants_failed"):
        where = "the report's LM calls section" if status["state"] == "failures_over_threshold" else \
            "the top of the report"
        print(f"error: run finished with {status['message']} (see {where})", file=sys.stderr)
        return EXIT_FAILURES
    return 0


def resume_command(args: argparse.Namespace, run_dir) -> str:
    """The command line that continues this run (spec, overrides, --resume)."""
    import shlex

    parts = ["python -m thinktrace.compile", shlex.quote(str(args.spec))]
    parts += [f"--set {shlex.quote(o)}" for o in args.overrides]
    return " ".join(parts + ["--resume", shlex.quote(str(run_dir))])


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


if __name__ == "__main__":
    sys.exit(main())
