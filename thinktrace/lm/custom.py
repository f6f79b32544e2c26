"""`provider: python`: an engine of your own. `model: path/to/file.py:make_engine` names a callable (a class or a
function, no arguments) returning an object with DSPy's engine method `complete(request) -> dspy.lm15.Response`
(see dspy.clients.engines.base). Use it for in-house serving stacks, for fault injection and for offline tests;
the file is imported only because the spec names it."""

from __future__ import annotations

from thinktrace.errors import SpecError

PYTHON = "python"


def build_custom_lm(cfg, field: str, fleet):
    from thinktrace.lm.guard import GuardedLM
    from thinktrace.loader import load_object

    factory = load_object(cfg.model, [], f"{field}.model")
    try:
        engine = factory()
    except Exception as err:
        raise SpecError(f"{field}.model", f"{cfg.model} failed: {type(err).__name__}: {err}") from err
    if not callable(getattr(engine, "complete", None)):
        raise SpecError(f"{field}.model", f"{cfg.model} returned {type(engine).__name__}, which has no complete(request)")
    return GuardedLM(f"local/{cfg.name}", engine=engine, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                     cache=cfg.cache, fleet=fleet)
