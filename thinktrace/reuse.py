"""Sampling attempts reused from another run (`sampling.attempts_from`): one trace run serves several experiments.

Two experiments that differ only after the traces (another student, another guideline writer) should train and
write from the very same traces, not from a second sampling that batched decoding makes differ. The other run's
journal (attempts.jsonl) is replayed for the examples it holds, exactly as a resume replays this run's own: each
attempt is settled again under this run's settings (tolerance, accept_cut), and examples it does not hold are
sampled as usual. Only requests that are the same may be reused, so the other run's resolved spec must agree on
what shapes the teacher's requests (below); its attempts must label this run's examples as this run's data does.
The attempts taken are appended to this run's own journal, so the run folder stands on its own once they are in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import yaml

from thinktrace.errors import SpecError
from thinktrace.lm.outcome import one_line
from thinktrace.portable import portable_value

FIELD = "sampling.attempts_from"
ATTEMPTS, SPEC = "attempts.jsonl", "spec.resolved.yaml"
#: what shapes the teacher's requests and the examples they are for; the other run must agree on each
SAME_SAMPLING = ("k", "strategy", "temperature", "per_annotator")
SAME_GENERATOR = ("provider", "model", "api_base", "max_tokens")
SAME_PROGRAMS = ("infer", "adapter")


def source_files(ref: str, base_dir: Path) -> tuple[Path, Path]:
    """(attempts.jsonl, spec.resolved.yaml) of `ref`: a run folder, or an attempts.jsonl with the spec beside it;
    a relative path is looked up in the spec's folder, then the working directory."""
    path = Path(ref).expanduser()
    candidates = [path] if path.is_absolute() else [base_dir / path, Path.cwd() / path]
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        raise SpecError(FIELD, f"not found: {ref} (looked in {', '.join(str(c.parent) for c in candidates)}); give "
                        f"a run folder or its {ATTEMPTS}")
    attempts = found / ATTEMPTS if found.is_dir() else found
    spec = attempts.parent / SPEC
    for needed in (attempts, spec):
        if not needed.is_file():
            raise SpecError(FIELD, f"{needed} is missing: a run folder (or an {ATTEMPTS}) with the run's {SPEC} "
                            f"beside it is needed, to check that its attempts answer this run's requests")
    return attempts, spec


def _shown(value: Any) -> str:
    return json.dumps(value)[:80]


def _generator(raw: dict) -> dict:
    models = raw.get("models") or {}
    return models.get("generator") or (models.get("raters") or [{}])[0]


def check_same_requests(source_spec: dict, spec, guideline: str) -> None:
    """Raise when the other run's teacher was asked something else: another seed, guideline, prompt format or
    program, sampling setting or generator model. Names the first field that differs."""
    mine = spec.model_dump(mode="json")
    pairs: list[tuple[str, Any, Any]] = [
        ("seed", source_spec.get("seed"), mine["seed"]),
        ("codebook", (source_spec.get("codebook") or "").strip(), guideline.strip()),
    ]
    pairs += [(f"programs.{k}", (source_spec.get("programs") or {}).get(k), mine["programs"][k]) for k in SAME_PROGRAMS]
    pairs += [(f"sampling.{k}", (source_spec.get("sampling") or {}).get(k), mine["sampling"][k])
              for k in SAME_SAMPLING]
    theirs, ours = _generator(source_spec), _generator(mine)
    pairs += [(f"the generator's {k}", theirs.get(k), ours.get(k)) for k in SAME_GENERATOR]
    for name, other, this in pairs:  # a published spec names local paths portably: so is this one, to compare
        if portable_value(other) != portable_value(this):
            raise SpecError(FIELD, f"the other run's {name} is {_shown(other)}, this spec's {_shown(this)}: its "
                            f"attempts answer other requests (reuse needs the same teacher, prompt and sampling)")


def reused_attempts(attempts_path: Path, examples: Sequence, own: Sequence[dict]) -> list[dict]:
    """The other run's attempts for this run's examples that have no attempt of their own yet (an example is
    taken whole or not at all). Raises when an attempt labels an example differently (another corpus or split) or
    when none of its attempts is for an example of this run."""
    by_key = {ex.key: str(ex.label) for ex in examples}
    have = {r["key"] for r in own}
    records, wrong = [], []
    with attempts_path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise SpecError(FIELD, f"{attempts_path}:{n} is not JSON ({err.msg})") from None
            key = record.get("key")
            if key not in by_key:
                continue
            if str(record.get("human")) != by_key[key]:
                wrong.append(key)
            elif key not in have:
                records.append(record)
    if wrong:
        raise SpecError(FIELD, f"{len(set(wrong))} examples of {attempts_path} carry another human label than this "
                        f"run's data gives them (first: {wrong[0]}): another corpus, split or aggregation")
    if not records and not have & set(by_key) and examples:
        raise SpecError(FIELD, f"none of the attempts in {attempts_path} is for an example of this run's train "
                        f"split (keys differ: another corpus, split or sampling.per_annotator)")
    return records


def load(ref: str, base_dir: Path, spec, guideline: str, examples: Sequence, own: Sequence[dict]) -> list[dict]:
    """Check `sampling.attempts_from` against this run and return the attempts to replay (see `reused_attempts`)."""
    attempts, spec_path = source_files(ref, base_dir)
    try:
        source_spec = yaml.safe_load(spec_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise SpecError(FIELD, f"{spec_path} is not YAML ({one_line(err)})") from None
    check_same_requests(source_spec, spec, guideline)
    return reused_attempts(attempts, examples, own)
