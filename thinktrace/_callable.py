"""`thinktrace.compile` and `thinktrace.compare` are both a command (`python -m thinktrace.compile`) and a
function of the Python API. Importing a submodule sets it as an attribute of its package, which would replace the
function `thinktrace/__init__.py` exports; so these two modules are callable themselves (Python allows a module's
class to be a `ModuleType` subclass) and calling one calls the API function. Either way,
`thinktrace.compile("spec.yaml")` is the API call."""

from __future__ import annotations

import sys
import types
from typing import Callable


def callable_module(name: str, target: Callable[[], Callable]) -> None:
    """Make module `name` callable: `module(*args, **kwargs)` is `target()(*args, **kwargs)`."""

    class _Module(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return target()(*args, **kwargs)

    module = sys.modules.get(name)
    if module is not None and not isinstance(module, _Module):
        module.__class__ = _Module
