"""`provider: python`: an engine of your own. `model:` names a callable (a class or a function, no arguments)
returning an object with DSPy's engine method `complete(request) -> dspy.lm15.Response` (see
dspy.clients.engines.base), either by where it is defined (`path/to/file.py:make_engine`, `package.module:make_engine`;
the file is imported only because the spec names it) or by a NAME registered in ``thinktrace.registry.engines`` (in
code, or through the entry-point group ``thinktrace.engines`` of an installed package). Use it for in-house serving
stacks, for fault injection and for offline tests."""

from __future__ import annotations

from thinktrace.errors import SpecError
from thinktrace.loader import load_object
from thinktrace.registry import engines

PYTHON = "python"


def engine_factory(model: str, field: str):
    """The engine factory `model` names: `file.py:callable` / `module:callable` (a reference has a colon), else a
    name registered in ``thinktrace.registry.engines`` (unknown: a SpecError on `field` listing the names)."""
    if ":" in model:
        return load_object(model, [], field)
    return engines.get(model, field)


def build_custom_lm(cfg, field: str, fleet):
    from thinktrace.lm.guarded import GuardedLM  # imports dspy: only when an LM is built

    factory = engine_factory(cfg.model, f"{field}.model")
    try:
        engine = factory()
    except Exception as err:
        raise SpecError(f"{field}.model", f"{cfg.model} failed: {type(err).__name__}: {err}") from err
    if not callable(getattr(engine, "complete", None)):
        raise SpecError(f"{field}.model", f"{cfg.model} returned {type(engine).__name__}, which has no complete(request)")
    return GuardedLM(f"local/{cfg.name}", engine=engine, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                     cache=cfg.cache, fleet=fleet)
