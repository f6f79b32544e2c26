"""Named extension points: where a user adds a stage, a guideline optimizer, a sampling strategy or an engine.

Each kind of extension has one `Registry` (name -> object). The built-in ones register themselves where they are
defined; a user's register from their own code before the run starts::

    from thinktrace.registry import stages

    @stages.register("my_stage", after="traces")
    class MyStage(thinktrace.run.stages.Stage): ...

or, for an installed package, through an entry point in the registry's group (`thinktrace.stages`,
`thinktrace.guideline_optimizers`, `thinktrace.sampling_strategies`, `thinktrace.engines`), loaded the first time
the registry is read::

    [project.entry-points."thinktrace.engines"]
    my_engine = "my_package.engines:make_engine"

A spec names an entry by its name; an unknown name is a one-line error naming the spec field and every name
registered.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

from thinktrace.errors import SpecError

T = TypeVar("T")
_imported: set[str] = set()  #: built-in modules already imported (or being imported)


class Registry(Generic[T]):
    """name -> object, in registration order (a stage registry's order is the run's order)."""

    def __init__(self, kind: str, group: str, builtins: str | None = None):
        self.kind = kind  #: what an entry is, for messages ("stage", "guideline optimizer")
        self.group = group  #: the entry-point group an installed package registers in
        #: the module that registers the built-in entries, imported the first time the registry is read (so a
        #: reader never needs to know where they are defined)
        self.builtins = builtins
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str, obj: T | None = None, *, replace: bool = False, after: str | None = None):
        """Register `obj` under `name` (or, without `obj`, a decorator that does). `after`: insert it right after
        that entry instead of at the end (the order matters for stages). A name taken is an error unless
        `replace` (a replaced entry keeps its place unless `after` is given)."""
        def add(value: T) -> T:
            self._load_builtins()
            if name in self._entries and not replace:
                raise ValueError(f"a {self.kind} named {name!r} is already registered (pass replace=True)")
            if name in self._entries and after is None:
                self._entries[name] = value
                return value
            entries = {k: v for k, v in self._entries.items() if k != name}
            if after is None:
                entries[name] = value
            else:
                if after not in entries:
                    raise ValueError(f"cannot register {self.kind} {name!r} after {after!r}: no such {self.kind}; "
                                     f"one of: {', '.join(entries)}")
                out: dict[str, T] = {}
                for k, v in entries.items():
                    out[k] = v
                    if k == after:
                        out[name] = value
                entries = out
            self._entries = entries
            return value

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def _load_builtins(self) -> None:
        if self.builtins and self.builtins not in _imported:
            _imported.add(self.builtins)
            import_module(self.builtins)

    def _load_entry_points(self) -> None:
        self._load_builtins()
        if self._loaded:
            return
        self._loaded = True
        for ep in entry_points(group=self.group):
            if ep.name not in self._entries:
                self._entries[ep.name] = ep.load()

    def get(self, name: str, field: str = "") -> T:
        """The entry named `name`; an unknown name is a SpecError on `field` listing every registered name."""
        self._load_entry_points()
        if name not in self._entries:
            raise SpecError(field, f"unknown {self.kind} {name!r}; one of: {', '.join(self._entries)} (or register "
                            f"one: thinktrace.registry, entry-point group {self.group})")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load_entry_points()
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._load_entry_points()
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


#: the stages of a compile run, in the order they run (thinktrace.run.stages registers the built-in ones)
stages: Registry = Registry("stage", "thinktrace.stages", builtins="thinktrace.run.stages")
#: how guideline candidates are proposed (`guidelines.optimizer`)
guideline_optimizers: Registry = Registry("guideline optimizer", "thinktrace.guideline_optimizers",
                                          builtins="thinktrace.guidelines.strategies")
#: how a trace is sampled for an example (`sampling.strategy`)
sampling_strategies: Registry = Registry("sampling strategy", "thinktrace.sampling_strategies",
                                         builtins="thinktrace.sampling")
#: engines a model entry names with `provider: python` and `model: NAME` (a no-argument callable returning an
#: object with DSPy's `complete(request)`)
engines: Registry[Callable[[], object]] = Registry("engine", "thinktrace.engines")

__all__ = ["Registry", "engines", "guideline_optimizers", "sampling_strategies", "stages"]
