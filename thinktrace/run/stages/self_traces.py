"""Stage `self_traces` (`sampling.self_traces`): the student's own traces, a second trace corpus sampled by the
student - the untuned fine-tuning base, the model the adapters are trained on - so that fine-tuning can tell "traces
help" apart from "a stronger teacher's traces help".

After `traces`: the teacher's rejection sampling again (the same k, keep, temperature, strategy, tolerance,
accept_cut and seed scheme `attempt_seed(seed, key, strategy, attempt)`), with the student as generator (and judge
of hinted attempts), on the train examples the teacher explained: only those can be common to both corpora. Every
attempt is journalled in `self/attempts.jsonl` with the semantics of `attempts.jsonl` (settled attempts are replayed
on resume, retryable failures made again). It writes

- `self/traces.jsonl`: the student's accepted traces;
- `self/sft.jsonl`: SFT rows of the student's traces on the common examples (those both explained);
- `self/sft_teacher.jsonl`: SFT rows of the teacher's traces on the same examples, the same number per example
  (the first min(teacher's, student's) accepted traces of each, in trace order).

The finetune stage then trains `self-trace-sft` and `trace-sft-common` on these two files (same examples, same
number of rows, same settings and seed): their paired difference `trace-sft-common − self-trace-sft` is the
teacher's advantage with the data held fixed. `trace-sft` stays on all of the teacher's traces (and `label-sft` on
its items), so the main comparison, traces vs labels only, keeps every row the teacher explained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from thinktrace.run.stages.base import PlanContext, Stage, StageResult
from thinktrace.run.stages.traces import raise_pending, rejection_sampling, train_examples

if TYPE_CHECKING:  # pragma: no cover
    from thinktrace.run.context import RunContext

ATTEMPTS = "self/attempts.jsonl"  #: the journal of the student's sampling
TRACES = "self/traces.jsonl"  #: the student's accepted traces
SELF_ROWS = "self/sft.jsonl"  #: the student's traces on the common examples, as SFT rows
TEACHER_ROWS = "self/sft_teacher.jsonl"  #: the teacher's traces on the same examples, as many rows per example
#: the adapters trained on the common examples: the teacher's traces, the student's own traces
COMMON_KINDS = ("trace-sft-common", "self-trace-sft")
_FILES = {COMMON_KINDS[0]: TEACHER_ROWS, COMMON_KINDS[1]: SELF_ROWS}
_SOURCES = {COMMON_KINDS[0]: "the teacher's accepted traces", COMMON_KINDS[1]: "the student's own accepted traces"}


def common_traces(teacher: Sequence[dict], own: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """(teacher's, student's) traces on the examples both explained, the same number per example: the first
    min(n_teacher, n_student) of each example's traces, in the teacher's example order."""
    by_teacher: dict[str, list[dict]] = {}
    by_own: dict[str, list[dict]] = {}
    for t in teacher:
        by_teacher.setdefault(t["key"], []).append(t)
    for t in own:
        by_own.setdefault(t["key"], []).append(t)
    chosen_teacher: list[dict] = []
    chosen_own: list[dict] = []
    for key, rows in by_teacher.items():
        n = min(len(rows), len(by_own.get(key, ())))
        chosen_teacher += rows[:n]
        chosen_own += by_own.get(key, [])[:n]
    return chosen_teacher, chosen_own


def rows_trained_on(rows: Sequence[dict], source: str, selection: str, **extra) -> dict:
    """What an adapter trained on, for the report: its source, which examples, and how many rows / examples /
    items (rows before `finetune.max_rows` and the length limit; an example is an item or an item's annotator)."""
    return {"source": source, "selection": selection, "rows": len(rows), "examples": len({r["key"] for r in rows}),
            "items": len({r["item_id"] for r in rows}), **extra}


def common_jobs(ctx: RunContext) -> dict[str, tuple[str, list[dict], dict]]:
    """The adapters of the teacher-vs-self comparison: kind -> (rows file, rows, what it trained on). A kind
    without rows (no common example) is left out; the self_traces stage warned about it."""
    from thinktrace.rundir import JsonlLog

    rows = {kind: JsonlLog(ctx.rundir.file(path)).read() for kind, path in _FILES.items()}
    if not all(rows.values()):
        return {}
    n_common = len({r["key"] for r in rows[COMMON_KINDS[1]]})
    return {kind: (_FILES[kind], kind_rows, rows_trained_on(kind_rows, _SOURCES[kind], "the examples both "
                                                            "explained, as many rows each", common_examples=n_common))
            for kind, kind_rows in rows.items()}


class SelfTracesStage(Stage):
    name = "self_traces"
    artifacts = (ATTEMPTS, TRACES, SELF_ROWS, TEACHER_ROWS)

    def enabled(self, spec) -> bool:
        return spec.sampling.enabled and spec.sampling.self_traces

    def plan(self, ctx: PlanContext) -> dict:
        """At most: every train example the teacher may explain (all of them), at the teacher's calls per example."""
        s = ctx.spec.sampling
        return {"generator": ctx.roles.student_name(), "examples_max": len(ctx.examples), "k": s.k,
                "lm_calls_max": len(ctx.examples) * s.calls_per_example()}

    def run(self, ctx: RunContext) -> StageResult:
        """Sample the student's own traces on the examples the teacher explained (journalled, resumable) and write
        the common-example rows of both corpora; the summary: acceptance statistics and the common-example counts."""
        from thinktrace.records import Attempt, Trace
        from thinktrace.rundir import JsonlLog, write_jsonl
        from thinktrace.teleprompt import accepted_traces
        from thinktrace.traces import acceptance_stats, sft_rows

        cfg = ctx.spec.sampling
        teacher = ctx.rundir.log("traces.jsonl").read()
        explained = {t["key"] for t in teacher}
        examples = [ex for ex in train_examples(ctx) if ex.key in explained]
        student = ctx.roles.student()
        infer = ctx.program_class("infer")(guideline=ctx.guideline, label_set=ctx.corpus.label_set)
        ctx.rundir.file(ATTEMPTS).parent.mkdir(parents=True, exist_ok=True)
        log = JsonlLog(ctx.rundir.file(ATTEMPTS), model=Attempt)
        tele = rejection_sampling(ctx, ctx.lm(student.model, student.field), log,
                                  threads=cfg.num_threads or student.model.num_threads, max_demos=0)
        attempts = tele.sample(infer, examples, log.read())
        raise_pending("self_traces", tele, len(examples))
        own = accepted_traces(attempts, examples)
        write_jsonl(ctx.rundir.file(TRACES), own, model=Trace)
        signature = ctx.rater_signature()
        common_teacher, common_own = common_traces(teacher, own)
        write_jsonl(ctx.rundir.file(TEACHER_ROWS), sft_rows(common_teacher, signature, ctx.prompt_format))
        write_jsonl(ctx.rundir.file(SELF_ROWS), sft_rows(common_own, signature, ctx.prompt_format))
        stats = acceptance_stats(attempts, examples)
        common = {"teacher_explained": len(explained), "sampled": len(examples), "self_explained": stats["explained"],
                  "common_examples": len({t["key"] for t in common_own}),
                  "common_items": len({t["item_id"] for t in common_own}), "rows": len(common_own),
                  "teacher_rows_left_out": len(teacher) - len(common_teacher)}
        out = {"generator": student.name, **stats, "common": common}
        if not common_own:
            out["warnings"] = [f"self-traces: the student ({student.name}) explained none of the {len(examples)} "
                               f"examples the teacher explained, so {' and '.join(COMMON_KINDS)} are not trained "
                               "and the teacher-vs-self comparison is missing"]
        return StageResult(out)
