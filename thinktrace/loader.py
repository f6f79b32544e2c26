"""Load programs and signatures named by a spec: by file (`programs/rater.py:Rater`) or by module
(`thinktrace.programs.rater:Rater`).

The default signatures and programs are the repository's top-level `signatures/` and `programs/`, shipped in the
wheel as the packages `thinktrace.signatures` and `thinktrace.programs` (pyproject's package-dir maps them: one
copy; installed they sit in `thinktrace/signatures/`, `thinktrace/programs/`, in a checkout at the top). Either way
the two folders are siblings, so a program's `../signatures/judge.py` resolves in both. `thinktrace init DIR` writes
editable copies into a project (`DIR/signatures/`, `DIR/programs/`) that import each other by relative file path,
so an edit takes effect. A program file is imported under a private module name derived from its path (a module
ref is located, then loaded the same way, so a class has one identity however it is named). Only files a spec (or
a program it names) asks for are ever imported. A relative file path is looked up in the spec's folder, the working
directory, then the package (so `programs/rater.py` finds the packaged default, installed or in a checkout).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import threading
from pathlib import Path

from thinktrace.errors import SpecError

#: The package folder: the last place to look for a relative path (other than programs/..., signatures/...).
PACKAGE_DIR = Path(__file__).resolve().parent

#: folder name -> the package that ships it (the folder of the packaged defaults, see packaged_dir)
PACKAGED = {"programs": "thinktrace.programs", "signatures": "thinktrace.signatures"}

_lock = threading.RLock()


def packaged_dir(sub: str) -> Path:
    """The folder of the packaged default `programs` or `signatures`: thinktrace/programs/ in an installed wheel,
    the repository's top-level programs/ in a checkout (the editable install maps it). Nothing in it is imported."""
    found = importlib.util.find_spec(PACKAGED[sub])
    if found is None or not found.submodule_search_locations:
        raise ImportError(f"package {PACKAGED[sub]} not found: is thinktrace installed (pip install -e .)?")
    return Path(next(iter(found.submodule_search_locations))).resolve()


def _packaged(path: Path) -> Path:
    """Where a relative path falls back to in the package: programs/x.py and signatures/x.py in their packages."""
    if len(path.parts) > 1 and path.parts[0] in PACKAGED:
        return packaged_dir(path.parts[0]).joinpath(*path.parts[1:])
    return PACKAGE_DIR / path


def resolve_path(ref: str, base_dirs: list[Path], field: str) -> Path:
    """Find a relative path under the first base dir that has it (spec dir, cwd, then the package)."""
    path = Path(ref)
    candidates = [path] if path.is_absolute() else [*(b / path for b in [*base_dirs, Path.cwd()]), _packaged(path)]
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


def module_file(module: str, field: str) -> Path:
    """The source file of a dotted module name (its parent packages are imported, the module itself is not)."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as err:
        raise SpecError(field, f"module {module!r} not found ({err})") from None
    if found is None or not found.origin or not found.origin.endswith(".py"):
        raise SpecError(field, f"module {module!r} not found (or not a Python source file)")
    return Path(found.origin).resolve()


def load_object(ref: str, base_dirs: list[Path], field: str):
    """`path/to/file.py:Name` or `package.module:Name` -> the object `Name` defined there."""
    expected = "'<file.py>:<Name>' or '<package.module>:<Name>'"
    if ref.count(":") != 1:
        raise SpecError(field, f"expected {expected}, got {ref!r}")
    file_part, name = ref.split(":")
    is_module = not file_part.endswith(".py") and all(p.isidentifier() for p in file_part.split("."))
    if not (file_part.endswith(".py") or is_module) or not name.isidentifier():
        raise SpecError(field, f"expected {expected}, got {ref!r}")
    path = module_file(file_part, field) if is_module else resolve_path(file_part, base_dirs, field)
    module = _import_file(path, field)
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, type) and v.__module__ == module.__name__)
        raise SpecError(field, f"{file_part} has no {name!r}; classes defined there: {', '.join(found) or 'none'}")
    return getattr(module, name)


def user_modules() -> dict[str, str]:
    """{private module name: file} of every program file imported so far (a Ray worker imports the same files
    under the same names before it unpickles a program made of their classes)."""
    with _lock:
        return {name: str(m.__file__) for name, m in list(sys.modules.items())
                if name.startswith("thinktrace_user_") and getattr(m, "__file__", None)}


def load_relative(from_file: str, relative: str, name: str):
    """For program files: import `name` (a signature, a program) from a file given relative to the caller's file,
    e.g. ``Judge = load_relative(__file__, "../signatures/judge.py", "Judge")``."""
    path = (Path(from_file).resolve().parent / relative).resolve()
    return load_object(f"{path}:{name}", [], field=f"{relative}:{name}")
