"""The student's own traces (`sampling.self_traces`): a second trace corpus, sampled by the student - the untuned
fine-tuning base, the model the adapters are trained on - so that fine-tuning can tell "traces help" apart from
"a stronger teacher's traces help".

Stage `self_traces` (after `traces`): the teacher's rejection sampling again (`RejectionSampling`, the same k,
keep, temperature, strategy, tolerance, accept_cut and seed scheme `attempt_seed(seed, key, strategy, attempt)`),
with the student as generator (and judge of hinted attempts), on the train examples the teacher explained: only
those can be common to both corpora. Every attempt is journalled in `self/attempts.jsonl` with the semantics of
`attempts.jsonl` (settled attempts are replayed on resume, retryable failures made again). It writes

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

from thinktrace.errors import RunIncomplete
from thinktrace.lm.config import ModelConfig
from thinktrace.stage_base import PlanContext, Stage

if TYPE_CHECKING:  # pragma: no cover
    from thinktrace.pipeline import Pipeline

ATTEMPTS = "self/attempts.jsonl"  #: the journal of the student's sampling
TRACES = "self/traces.jsonl"  #: the student's accepted traces
SELF_ROWS = "self/sft.jsonl"  #: the student's traces on the common examples, as SFT rows
TEACHER_ROWS = "self/sft_teacher.jsonl"  #: the teacher's traces on the same examples, as many rows per example
#: the adapters trained on the common examples: the teacher's traces, the student's own traces
COMMON_KINDS = ("trace-sft-common", "self-trace-sft")
_FILES = {COMMON_KINDS[0]: TEACHER_ROWS, COMMON_KINDS[1]: SELF_ROWS}
_SOURCES = {COMMON_KINDS[0]: "the teacher's accepted traces", COMMON_KINDS[1]: "the student's own accepted traces"}


def _on_base(spec, cfg: ModelConfig) -> bool:
    from thinktrace.lm.embedded import canonical_name

    base = spec.finetune.base
    same = (canonical_name(cfg.model) or cfg.model) == (canonical_name(base) or base)
    return cfg.is_local and not cfg.adapter and same


def student_name(spec) -> str:
    """Who samples the student's own traces, from the spec alone (the plan): `sampling.self_generator`, else the
    configured rater on the fine-tuning base, else the base model itself."""
    if spec.sampling.self_generator:
        return spec.sampling.self_generator
    return next((r.name for r in spec.models.raters if _on_base(spec, r)), spec.finetune.base)


def student_conflict(spec) -> str | None:
    """Why the student cannot sample a second corpus (it is the teacher), or None."""
    gen = spec.generator
    name = student_name(spec)
    if name == gen.name or (not spec.sampling.self_generator and _on_base(spec, gen)):
        return (f"the student ({name}) is also the trace generator ({gen.name}), so its own traces would be the "
                "teacher's: set models.generator to the teacher")
    return None


def student_model(p: Pipeline) -> tuple[ModelConfig, str]:
    """The student's model entry and its spec field: the named model, else the configured rater on
    `finetune.base` (on the weights it is trained and evaluated on), else that base model served locally."""
    spec = p.spec
    if spec.sampling.self_generator:
        return p.on_training_base(spec.model_named(spec.sampling.self_generator)), "sampling.self_generator"
    for i, cfg in enumerate(spec.models.raters):
        if _on_base(spec, cfg):
            return p.on_training_base(cfg), f"models.raters.{i}"
    template = next((r for r in spec.models.raters if r.is_local), None)
    return ModelConfig(name=spec.finetune.base, provider="local", model=spec.finetune.base, training_base=True,
                       max_tokens=template.max_tokens if template else 256), "finetune.base"


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


def run_self_traces(p: Pipeline) -> dict:
    """Sample the student's own traces on the examples the teacher explained (journalled, resumable) and write the
    common-example rows of both corpora; return acceptance statistics and the common-example counts."""
    from thinktrace.loader import load_object
    from thinktrace.records import Attempt, Trace
    from thinktrace.rundir import JsonlLog, write_jsonl
    from thinktrace.teleprompt import RejectionSampling, accepted_traces, judge_predictor
    from thinktrace.traces import acceptance_stats, sft_rows, trainset

    cfg = p.spec.sampling
    teacher = p.rundir.log("traces.jsonl").read()
    explained = {t["key"] for t in teacher}
    examples = [ex for ex in trainset(p.corpus, per_annotator=cfg.per_annotator, max_items=cfg.max_items)
                if ex.key in explained]
    model, field = student_model(p)
    infer = load_object(p.spec.programs.infer, [p.loaded.base_dir], "programs.infer")(
        guideline=p.loaded.guideline, label_set=p.corpus.label_set)
    p.rundir.file(ATTEMPTS).parent.mkdir(parents=True, exist_ok=True)
    log = JsonlLog(p.rundir.file(ATTEMPTS), model=Attempt)
    tele = RejectionSampling(p.corpus.label_set, generator=p.lm(model, field), k=cfg.k, keep=cfg.keep,
                             temperature=cfg.temperature, strategy=cfg.strategy, tolerance=cfg.tolerance,
                             seed=p.spec.seed, num_threads=cfg.num_threads or model.num_threads, attempts_log=log,
                             max_demos=0, adapter=p.adapter, accept_cut=cfg.accept_cut)
    attempts = tele.sample(infer, examples, log.read())
    if tele.pending:
        first = next(iter(tele.pending.values()))
        raise RunIncomplete("self_traces", f"{len(tele.pending)} of {len(examples)} examples stopped on a call "
                            f"that failed retryably after its retries ({first})")
    own = accepted_traces(attempts, examples)
    write_jsonl(p.rundir.file(TRACES), own, model=Trace)
    signature = judge_predictor(p.rater_program(p.loaded.guideline)).signature
    common_teacher, common_own = common_traces(teacher, own)
    write_jsonl(p.rundir.file(TEACHER_ROWS), sft_rows(common_teacher, signature, p.adapter))
    write_jsonl(p.rundir.file(SELF_ROWS), sft_rows(common_own, signature, p.adapter))
    stats = acceptance_stats(attempts, examples)
    common = {"teacher_explained": len(explained), "sampled": len(examples), "self_explained": stats["explained"],
              "common_examples": len({t["key"] for t in common_own}),
              "common_items": len({t["item_id"] for t in common_own}), "rows": len(common_own),
              "teacher_rows_left_out": len(teacher) - len(common_teacher)}
    out = {"generator": model.name, **stats, "common": common}
    if not common_own:
        out["warnings"] = [f"self-traces: the student ({model.name}) explained none of the {len(examples)} examples "
                           f"the teacher explained, so {' and '.join(COMMON_KINDS)} are not trained and the "
                           "teacher-vs-self comparison is missing"]
    return out


def common_jobs(p: Pipeline) -> dict[str, tuple[str, list[dict], dict]]:
    """The adapters of the teacher-vs-self comparison: kind -> (rows file, rows, what it trained on). A kind
    without rows (no common example) is left out; the self_traces stage warned about it."""
    from thinktrace.rundir import JsonlLog

    rows = {kind: JsonlLog(p.rundir.file(path)).read() for kind, path in _FILES.items()}
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
        return {"generator": student_name(ctx.spec), "examples_max": len(ctx.examples), "k": s.k,
                "lm_calls_max": len(ctx.examples) * s.calls_per_example()}

    def run(self, p: Pipeline) -> dict:
        return run_self_traces(p)


def spec_problem(spec) -> str | None:
    """What is wrong with a spec's self-traces settings (the message starts with the field), or None."""
    s = spec.sampling
    if s.self_generator and not s.self_traces:
        return ("sampling.self_generator: it samples the student's own traces; set sampling.self_traces: true (or "
                "drop self_generator)")
    if not s.self_traces:
        return None
    if not (spec.finetune.enabled and s.enabled):
        return ("sampling.self_traces: the student's own traces are fine-tuning data; set finetune.enabled: true "
                "(and sampling.enabled: true)")
    names = [r.name for r in spec.models.raters] + ([spec.models.generator.name] if spec.models.generator else [])
    if s.self_generator and s.self_generator not in names:
        return f"sampling.self_generator: {s.self_generator!r} is not a model of this spec; one of: {', '.join(names)}"
    conflict = student_conflict(spec)
    return f"sampling.self_traces: {conflict}" if conflict else None
