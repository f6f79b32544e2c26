"""Rater programs around a guideline: per-rater factories and prompt formats, reading a guideline back from
instructions, and the compiled programs written with the refined guideline."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Collection, Mapping

import dspy

from thinktrace.rundir import write_atomic



_SENTINEL = "@@THINKTRACE-GUIDELINE@@"


def _judge(program: dspy.Module):
    from thinktrace.teleprompt import judge_predictor

    return judge_predictor(program)


def guideline_from_instructions(instructions: str, rater_factory: Callable[[str], dspy.Module]) -> str:
    """The guideline inside a rater's judge instructions: what rater_factory adds around a guideline (found by
    building a rater around a sentinel) is stripped, so rater_factory(result) does not repeat it."""
    probe = _judge(rater_factory(_SENTINEL)).signature.instructions
    text = instructions.strip()
    if _SENTINEL in probe:
        prefix, suffix = (p.strip() for p in probe.split(_SENTINEL, 1))
        if prefix and text.startswith(prefix):
            text = text[len(prefix):].strip()
        if suffix and text.endswith(suffix):
            text = text[: -len(suffix)].strip()
    return text


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "rater"


def write_rater_programs(best_guideline: str, raters: Collection[str] | Mapping[str, object],
                         rater_factory: Callable[[str], dspy.Module] | Mapping[str, Callable], out_dir: str | Path, *,
                         original: str | None = None, program_guideline: str | None = None) -> dict:
    """Write `guideline.md` (and `guideline.original.md` when `original` is given) and one compiled rater
    program per rater, `programs/<rater>.json` (DSPy JSON, `program.save`): the judge's instructions carry
    `program_guideline` (default: the guideline of guideline.md; the run passes the candidate its dev selection
    chose, and factories that add the trace demos when that candidate is a program with demos). The programs name no
    LM (no provider state, no keys): load one with `rater_factory(...).load(path)` and run it under
    `dspy.context(lm=...)`. Returns the paths written."""
    out = Path(out_dir)
    (out / "programs").mkdir(parents=True, exist_ok=True)
    paths: dict = {"guideline": out / "guideline.md", "programs": {}}
    write_atomic(paths["guideline"], best_guideline.rstrip() + "\n")
    if original is not None:
        paths["original"] = out / "guideline.original.md"
        write_atomic(paths["original"], original.rstrip() + "\n")
    for name in raters:
        text = best_guideline if program_guideline is None else program_guideline
        program = factory_of(rater_factory, str(name))(text)
        program._compiled = True
        path = out / "programs" / f"{_slug(str(name))}.json"
        program.save(str(path))
        paths["programs"][str(name)] = path
    return paths


def factory_of(rater_factory, rater: str | None = None):
    """The rater program factory of one rater: `rater_factory` itself, or its entry in a {rater: factory} mapping
    (the first entry when rater is None or not in it)."""
    if isinstance(rater_factory, Mapping):
        return rater_factory.get(rater) or next(iter(rater_factory.values()))
    return rater_factory


def adapter_of(adapter: "dspy.Adapter | Mapping[str, dspy.Adapter] | None", rater: str):
    """The prompt format of one rater: `adapter` itself, or its entry when it is a {rater: adapter} mapping."""
    return adapter.get(rater) if isinstance(adapter, Mapping) else adapter
