"""The Python API: what the command line does, callable from a notebook or a script.

    import thinktrace

    run = thinktrace.compile("experiments/quickstart.yaml", data={"limit": 60})
    print(run.metrics.splits["test"].raters)     # typed metrics (thinktrace.records.MetricsDocument)
    run.report                                   # report.md (report.html beside it)
    thinktrace.compare(run, "runs/other/20260101-120000")

`compile` runs exactly what `python -m thinktrace.compile` runs (the CLI is a thin layer over it) and returns a
`Run`; bad input raises `SpecError` (one line, names the file and the field), a run that stops with work left
raises `RunIncomplete` (resume it with `resume=`). This module imports nothing heavy until it is called.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Sequence

from thinktrace.errors import SpecError

#: run states that finished with every number computed, but with a problem the report flags (exit code 4)
FLAGGED_STATES = ("failures_over_threshold", "variants_failed")


@dataclass
class Run:
    """A run folder and what it holds: its metrics (typed), variants, traces, predictions and reports."""

    path: Path
    metrics: Any = field(repr=False)  #: the run's metrics.json as a `thinktrace.records.MetricsDocument`
    plan: dict | None = field(default=None, repr=False)  #: what the run was planned to do (stages, LM calls at most)
    summary: str = field(default="", repr=False)  #: the lines the compile command prints when it finished

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        """The run in folder `path` (finished or stopped); raises RunError when it has no readable metrics.json."""
        from thinktrace.records import MetricsDocument
        from thinktrace.runview import RunError

        path = Path(path)
        try:
            data = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise RunError(path, f"no readable metrics.json ({err.__class__.__name__})") from None
        return cls(path, MetricsDocument.model_validate(data))

    @property
    def status(self) -> str:
        """complete | incomplete | failures_over_threshold | variants_failed"""
        return self.metrics.status.state

    @property
    def ok(self) -> bool:
        return self.status == "complete"

    @property
    def variants(self) -> list:
        """Every evaluated variant (name, kind, rater, model, adapter), in run order."""
        return list(self.metrics.variants)

    @property
    def traces(self) -> list[dict]:
        """The accepted traces (traces.jsonl)."""
        return self._jsonl("traces.jsonl")

    @property
    def predictions(self) -> list[dict]:
        """Every prediction record of the evaluation (predictions.jsonl)."""
        return self._jsonl("predictions.jsonl")

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    @property
    def report_html(self) -> Path:
        return self.path / "report.html"

    def alpha(self, variant: str, split: str = "test"):
        """Krippendorff's α of `variant` vs the humans on `split` (value, ci, n, ...)."""
        return self.metrics.splits[split].raters[variant].alpha

    def view(self):
        """The read-only view the reports and `compare` read (thinktrace.runview.RunView)."""
        from thinktrace.runview import RunView

        return RunView(self.path)

    def _jsonl(self, name: str) -> list[dict]:
        from thinktrace.rundir import JsonlLog

        return JsonlLog(self.path / name).read()


def load_spec(spec: str | Path | Mapping, overrides: Sequence[str] = (), base_dir: str | Path | None = None):
    """A validated spec (`thinktrace.spec.LoadedSpec`) from a YAML file or a mapping (relative paths in a mapping
    resolve against `base_dir`, default the working directory), with `--set`-style overrides applied."""
    from thinktrace.spec import load_spec as from_file, load_spec_mapping

    if hasattr(spec, "spec") and hasattr(spec, "guideline"):  # already loaded
        if overrides:
            raise SpecError("", "overrides need a spec file or mapping, not a loaded spec")
        return spec
    if isinstance(spec, Mapping):
        return load_spec_mapping(dict(spec), list(overrides), Path(base_dir or Path.cwd()))
    return from_file(spec, list(overrides))


def _field_overrides(fields: Mapping[str, Any], prefix: str = "") -> list[str]:
    """`compile(..., data={"limit": 50}, seed=1)` as `--set` assignments (`data.limit=50`, `seed=1`): mappings
    are walked into, every other value (a list too) is set whole, as YAML."""
    import yaml

    out = []
    for key, value in fields.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out += _field_overrides(value, path + ".")
        else:
            out.append(f"{path}=" + yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
                       .removesuffix("\n...").removesuffix("..."))
    return out


def prepare(loaded, run_dir: str | Path | None, warn: Callable[[str], None], reviewed: bool = False):
    """(corpus, plan) of a loaded spec after every check that needs no model: a resumed folder's legacy values,
    the data, the programs and the plan. Raises SpecError naming the spec file."""
    from thinktrace.data import load_corpus
    from thinktrace.lm.estimate import cost_lines, estimate
    from thinktrace.loader import load_object
    from thinktrace.run.stages import plan_stages

    if run_dir:  # a run folder made before a field existed keeps its old rule (e.g. data.tie_break)
        from thinktrace.run.resume import pin_legacy_values

        for note in pin_legacy_values(loaded, run_dir):
            warn(note)
    s = loaded.spec
    try:
        corpus = load_corpus(s.data, loaded.base_dir, s.data.seed if s.data.seed is not None else s.seed)
        for name in ("rater", "infer", "writer"):
            load_object(getattr(s.programs, name), [loaded.base_dir], f"programs.{name}")
        stages = plan_stages(s, corpus, reviewed=reviewed)
    except SpecError as err:
        raise err.with_file(str(loaded.path)) from None
    cost = estimate(s, stages, corpus, loaded.guideline)
    plan = {"name": s.name, "items": {n: len(corpus.split(n)) for n in ("train", "dev", "test")},
            "label_set": list(corpus.label_set.labels), "level": corpus.label_set.level,
            "per_annotator": corpus.per_annotator, "stages": stages,
            "lm_calls_max": sum(st["lm_calls_max"] for st in stages.values()),
            "cost": cost, "cost_lines": cost_lines(cost, s.budget)}
    return corpus, plan


def print_plan(p: dict, out: IO | None = None) -> None:
    """The plan as the compile command prints it (stderr during a run, stdout for --dry-run)."""
    import sys

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


def compile(spec: str | Path | Mapping, /, *, out: str | Path | None = None, resume: str | Path | None = None,
            overrides: Sequence[str] = (), dry_run: bool = False, base_dir: str | Path | None = None,
            resume_command: str | Callable[[Path], str] | None = None, log: IO | None = None,
            reviewed: bool = False, reviewer: str | None = None, **fields) -> Run:
    """Compile the experiment `spec` (a YAML path, or a mapping) and return its `Run`.

    - `**fields`: spec fields to override, e.g. `data={"limit": 50}`, `seed=1` (mappings merge into the section;
      the same as `--set data.limit=50 --set seed=1`); `overrides`: `--set` assignments as strings.
    - `out`: the run folder (resumed when it exists); `resume`: an existing run folder to continue.
    - `dry_run`: validate and plan only (no model loaded); the Run then has `plan` and no metrics.
    - `log`: where the plan and notes go (default stderr); `resume_command`: the command an outage message names
      to continue the run (a function of the run folder, or a string).
    - `reviewed`: resume `resume` (a run folder with traces and reviews.jsonl, thinktrace.review) and also run
      what depends on the traces (demos, SFT rows and the fine-tuned student, the guideline, trace quality) on the
      reviewed set of `reviewer` (default: the first reviewer), paired against the raw traces in the report.

    A finished run returns whatever its state: check `run.ok` / `run.status` (a parse-rate failure or too many
    failed calls is flagged, not raised)."""
    import sys

    if out and resume and Path(out) != Path(resume):
        raise SpecError("", "give either out or resume (both name the run folder)")
    log = log or sys.stderr
    run_dir = resume or out
    loaded = load_spec(spec, [*overrides, *_field_overrides(fields)], base_dir)
    if reviewed:
        check_reviewed(run_dir, loaded.spec, reviewer)
    corpus, plan = prepare(loaded, run_dir, lambda note: print(note, file=log), reviewed=reviewed)
    if dry_run:
        return Run(Path(run_dir) if run_dir else Path(), metrics=None, plan=plan)
    from thinktrace.run.pipeline import Pipeline

    try:
        pipeline = Pipeline(loaded, corpus, run_dir=run_dir, reviewed=reviewed, reviewer=reviewer)
        pipeline.preflight()
    except SpecError as err:
        raise err.with_file(str(loaded.path)) from None
    print_plan(plan, out=log)
    if resume_command:  # the command that continues this run, named when it stops (default: compile --resume)
        pipeline.resume_command = resume_command(pipeline.rundir.path) if callable(resume_command) else resume_command
    pipeline.run()
    from thinktrace.records import MetricsDocument

    return Run(pipeline.rundir.path, MetricsDocument.model_validate(pipeline.result), plan=plan,
               summary=pipeline.summary())


def check_reviewed(run_dir, spec, reviewer: str | None) -> None:
    """Before a reviewed resume starts: a run folder that has traces and reviews (of `reviewer`, when named), and a
    spec that samples traces; else SpecError naming what is missing."""
    from thinktrace.review.records import ReviewError
    from thinktrace.review.store import ReviewStore

    if not run_dir or not Path(run_dir).is_dir():
        raise SpecError("--reviewed", "needs --resume RUN_DIR: a run folder whose traces were reviewed "
                        "(thinktrace review RUN_DIR)")
    if not spec.sampling.enabled:
        raise SpecError("sampling.enabled", "--reviewed re-runs what depends on the traces; this spec samples none")
    try:
        store = ReviewStore(run_dir)
    except ReviewError as err:
        raise SpecError("--reviewed", str(err)) from None
    if not store.reviews:
        raise SpecError("--reviewed", f"{store.journal} holds no review yet (thinktrace review {run_dir})")
    if reviewer is not None and reviewer not in store.reviewers():
        raise SpecError("--reviewer", f"{reviewer!r} has no review in {store.journal} (reviewers: "
                        f"{', '.join(store.reviewers())})")


def compare(*runs: "Run | str | Path", split: str = "test", n_boot: int | None = None):
    """Compare compiled runs side by side (`thinktrace.compare`): their variants on the items all of them rated,
    with paired differences against the first run; returns a `thinktrace.compare.RunComparison` (its `markdown()` is what the command prints)."""
    from thinktrace.compare import compare_runs

    return compare_runs(*runs, split=split, n_boot=n_boot)


__all__ = ["Run", "compare", "compile", "load_spec", "print_plan"]
