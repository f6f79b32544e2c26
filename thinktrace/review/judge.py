"""The blind judge that re-checks an edited trace: the run's own trace program (`programs.infer`, its `verify`: the
item and the rationale, not the label) on the run's trace generator (`models.generator`, else the first rater) at
temperature 0, in the run's prompt format — the check a hinted trace passes before it is accepted. Built from the
run folder's spec.resolved.yaml (or the spec given), loaded on the first edit."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

from thinktrace.review.records import ReviewError


class Judge(Protocol):
    def check(self, item: str, rationale: str) -> dict:
        """{"label": the label the rationale leads to or None, "raw": the unparsed answer, "model": name}."""


class RunJudge:
    """The run's blind judge, built lazily (no model is loaded until an edit is checked)."""

    def __init__(self, run_dir: str | Path, label_set, spec: str | Path | None = None):
        self.run_dir = Path(run_dir)
        self.label_set = label_set
        self.spec_path = spec
        self._lock = threading.Lock()
        self._built = None

    def _build(self):
        import yaml

        from thinktrace.loader import load_object
        from thinktrace.lm import build_lm
        from thinktrace.prompt_formats import make_prompt_format
        from thinktrace.run.api import load_spec
        from thinktrace.run.roles import Roles

        if self.spec_path is not None:
            loaded = load_spec(self.spec_path)
        else:
            path = self.run_dir / "spec.resolved.yaml"
            try:
                raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
                raise ReviewError(f"{path}: unreadable, so no blind judge ({err.__class__.__name__}); "
                                  "pass --spec SPEC") from None
            loaded = load_spec(raw, base_dir=self.run_dir)
        spec = loaded.spec
        role = Roles(spec).teacher()
        label_set = self.label_set
        program = load_object(spec.programs.infer, [loaded.base_dir], "programs.infer")(
            guideline=loaded.guideline, label_set=label_set)
        lm = build_lm(role.model, role.field, calls=spec.calls).copy(temperature=0.0)
        return program, lm, make_prompt_format(spec.programs.adapter), role.model.name

    def check(self, item: str, rationale: str) -> dict:
        import dspy

        with self._lock:  # one model, one edit at a time
            if self._built is None:
                self._built = self._build()
            program, lm, adapter, name = self._built
            with dspy.context(lm=lm, adapter=adapter):
                pred = program.verify(item, rationale)
        return {"label": pred.label, "raw": pred.get("raw_label") or pred.get("raw"), "model": name}
