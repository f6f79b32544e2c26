"""Load user programs and signatures by path (`programs/rater.py:Rater`).

signatures/ and programs/ are plain folders a prompt engineer edits, not installed packages. A spec names a class
as `<file.py>:<Class>`; the file is imported under a private module name. Only files a spec (or a program it
names) asks for are ever imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import threading
from pathlib import Path

from thinktrace.errors import SpecError

#: The repository root (the folder holding thinktrace/, programs/ and signatures/), a last place to look for
#: relative program paths.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

_lock = threading.RLock()


def resolve_path(ref: str, base_dirs: list[Path], field: str) -> Path:
    """Find a relative path under the first base dir that has it (spec dir, cwd, project root)."""
    path = Path(ref)
    candidates = [path] if path.is_absolute() else [b / path for b in [*base_dirs, Path.cwd(), PROJECT_ROOT]]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise SpecError(field, f"file not found: {ref} (looked in {', '.join(str(c.parent) for c in candidates)})")


def _import_file(path: Path, field: str):
    name = "thinktrace_user_" + hashlib.sha1(str(path).encode()).hexdigest()[:12] + "_" + path.stem
    with _lock:
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise SpecError(field, f"cannot import {path}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except SpecError:
            sys.modules.pop(name, None)
            raise
        except Exception as err:  # a user file that fails to import: one line, the file and the error
            sys.modules.pop(name, None)
            raise SpecError(field, f"importing {path} failed: {type(err).__name__}: {err}") from err
        return module


def load_object(ref: str, base_dirs: list[Path], field: str):
    """`path/to/file.py:Name` -> the object `Name` defined in that file."""
    if ref.count(":") != 1:
        raise SpecError(field, f"expected '<file.py>:<ClassName>', got {ref!r}")
    file_part, name = ref.split(":")
    if not file_part.endswith(".py") or not name.isidentifier():
        raise SpecError(field, f"expected '<file.py>:<ClassName>', got {ref!r}")
    module = _import_file(resolve_path(file_part, base_dirs, field), field)
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, type) and v.__module__ == module.__name__)
        raise SpecError(field, f"{file_part} has no {name!r}; classes defined there: {', '.join(found) or 'none'}")
    return getattr(module, name)


def load_relative(from_file: str, relative: str, name: str):
    """For program files: import `name` (a signature, a program) from a file given relative to the caller's file,
    e.g. ``Judge = load_relative(__file__, "../signatures/judge.py", "Judge")``."""
    path = (Path(from_file).resolve().parent / relative).resolve()
    return load_object(f"{path}:{name}", [], field=f"{relative}:{name}")
