"""Resuming a run folder: which spec fields a resume may change, how an older folder's spec.resolved.yaml reads
under this version (fields added since take their defaults, or the old value where the default changed results:
`LEGACY_VALUES`), and the check that a resume uses the spec its folder was made with."""

from __future__ import annotations

from pathlib import Path

import yaml

from thinktrace.errors import SpecError
from thinktrace.gold import LEGACY_TIE_BREAK
from thinktrace.spec import LoadedSpec


RESUMABLE_CHANGES = ("calls", "budget", "execution", "description", "output_dir")  #: spec fields a resume may change
#: and, in every model entry, thinktrace.lm.config.RESUMABLE_MODEL_FIELDS (api_base: the fleet; max_concurrency)


def upgraded(resolved: dict) -> dict:
    """A run folder's spec.resolved.yaml as this version resolves it: fields added since it was written take their
    defaults (an older run folder still resumes) or, where the default changed results, the old value it was made
    under (`LEGACY_VALUES`); fields it has are kept as written. Returned unchanged when it
    no longer validates (a removed or renamed field: the comparison then names it)."""
    from pydantic import ValidationError

    from thinktrace.spec import Spec

    resolved = with_legacy_values(resolved)
    try:
        return {**Spec.model_validate(resolved).model_dump(mode="json"), "codebook": resolved.get("codebook"),
                "codebook_file": resolved.get("codebook_file")}
    except (ValidationError, TypeError):
        return resolved


#: spec fields added with a default that changes results: a run folder whose spec.resolved.yaml lacks one was made
#: under the value here (the old behaviour), which its resume keeps, so its results never change silently
LEGACY_VALUES: dict[tuple[str, str], object] = {
    ("data", "tie_break"): LEGACY_TIE_BREAK,  # ties before data.tie_break: midpoints down, majority to the earliest
    ("sampling", "accept_cut"): True,  # before sampling.accept_cut a cut answer whose label matched was a trace
}


def with_legacy_values(resolved: dict) -> dict:
    """A stored spec.resolved.yaml with each `LEGACY_VALUES` field it lacks set to the value it was made under."""
    if not isinstance(resolved, dict):
        return resolved
    out = dict(resolved)
    for (section, field), value in LEGACY_VALUES.items():
        if isinstance(out.get(section), dict) and field not in out[section]:
            out[section] = {**out[section], field: value}
    return out


def pin_legacy_values(loaded: LoadedSpec, run_dir: str | Path | None) -> list[str]:
    """Before a resume loads the data: each `LEGACY_VALUES` field that the run folder was made with at its old value
    (its spec.resolved.yaml lacks the field: made before it existed; or holds that value) and that the spec leaves
    unset is set on `loaded.spec` to that value; one note per field pinned. A spec that sets the field to another
    value is left as it is (the resume check then refuses it: that would change the run's results)."""
    path = Path(run_dir) / "spec.resolved.yaml" if run_dir else None
    if path is None or not path.is_file():
        return []
    try:
        stored = with_legacy_values(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []  # the resume check names what it cannot read
    notes = []
    for (section, field), value in LEGACY_VALUES.items():
        node = stored.get(section) if isinstance(stored, dict) else None
        cfg = getattr(loaded.spec, section, None)
        if (isinstance(node, dict) and node.get(field) == value and cfg is not None
                and field not in cfg.model_fields_set and getattr(cfg, field) != value):
            setattr(cfg, field, value)
            notes.append(f"note: {run_dir} was made with {section}.{field}: {value} (the rule before that field "
                         "existed); it resumes with it so its results do not change (set the field to silence this)")
    return notes


def check_same_spec(rundir, resolved: dict) -> None:
    """Refuse a resume of `rundir` whose spec (`resolved`) differs from the one it was made with, outside the
    fields a resume may change (`RESUMABLE_CHANGES`, and each model entry's resumable fields)."""
    path = rundir.file("spec.resolved.yaml")
    if not path.exists():
        return
    from thinktrace.lm.config import without_resumable_model_fields as comparable

    before = comparable(upgraded(yaml.safe_load(path.read_text(encoding="utf-8"))))
    now = comparable(resolved)
    # `calls` (retries, breaker, failure threshold), the budget, the description, where runs go and where
    # models are served may change between a run and its resume; they change no result
    changed = sorted(k for k in set(before) | set(now) if k not in RESUMABLE_CHANGES and before.get(k) != now.get(k))
    if changed:
        raise SpecError(", ".join(changed), f"the run folder {rundir.path} was made with a different spec (these "
                        "sections differ); resume it with the same spec or start a new run")
