"""A compile run: its context (`RunContext`), the roles its models play (`roles`), its stages (`stages`, one module
each), the loop over them (`Pipeline`), resuming (`resume`), how its calls went (`calls`) and the Python API
(`api`: `compile`, `Run`, `compare`, `load_spec`)."""

from thinktrace.run.api import Run, compare, compile, load_spec

__all__ = ["Run", "compare", "compile", "load_spec"]
