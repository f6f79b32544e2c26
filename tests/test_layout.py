"""The repository's layout: the default DSPy programs and signatures are the top-level programs/ and signatures/
(one copy), shipped in the wheel as thinktrace.programs / thinktrace.signatures by pyproject's package-dir; a
program's relative signature path (`../signatures/judge.py`) resolves installed and in a checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAPPED = {"thinktrace.programs": "programs", "thinktrace.signatures": "signatures"}
#: what the wheel build never reads (big or machine-local): left out of the copy it is built from
NOT_BUILT_FROM = {".git", ".venv", "build", "runs", "results", "tests", "benchmarks", ".pytest_cache", ".cache", ".ci"}


def _run(script: str, cwd: Path, timeout: int = 120) -> dict:
    """Run `script` in a fresh interpreter of this venv from `cwd` (not the checkout); its last line is JSON."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


#: loads the default programs the way a spec names them (by module, by relative file from a folder without one),
#: then `thinktrace init` a project and loads the project's own rater by its spec's file-relative ref
PROBE = r"""
import json, sys
from pathlib import Path
if {site!r}:  # the unpacked wheel, ahead of the venv's editable checkout
    sys.path.insert(0, {site!r})
import thinktrace
from thinktrace.cli import main
from thinktrace.labels import LabelSet
from thinktrace.loader import load_object, packaged_dir, user_modules

by_module = load_object("thinktrace.programs.rater:Rater", [], "programs.rater")
by_file = load_object("programs/rater.py:Rater", [], "programs.rater")
for ref in ("thinktrace.programs.trace:TraceInferrer", "thinktrace.programs.guideline:GuidelineWriter",
            "thinktrace.programs.reader:TraceReader"):
    load_object(ref, [], "programs")
rater = by_module("g", LabelSet.of(["a", "b"]))
assert main(["init", "proj"]) == 0
spec = Path("proj/experiments")
import yaml
project_ref = yaml.safe_load((spec / "quickstart.yaml").read_text())["programs"]["rater"]
project_rater = load_object(project_ref, [spec], "programs.rater")
print(json.dumps({{
    "thinktrace": thinktrace.__file__,
    "programs": str(packaged_dir("programs")), "signatures": str(packaged_dir("signatures")),
    "same_class": by_module is by_file,
    "rater_file": sys.modules[by_module.__module__].__file__,
    "project_rater_file": sys.modules[project_rater.__module__].__file__,
    "fields": list(rater.judge.signature.output_fields),
    "modules": sorted(user_modules().values()),
    "project": sorted(str(p.relative_to("proj")) for p in Path("proj").rglob("*.py")),
}}))
"""


def test_one_copy_at_the_top():
    for sub in MAPPED.values():
        assert (ROOT / sub / "__init__.py").is_file(), sub
        assert not (ROOT / "thinktrace" / sub).exists(), f"thinktrace/{sub} is a second copy; the one is {sub}/"
    assert {p.name for p in (ROOT / "programs").glob("*.py")} >= {"rater.py", "trace.py", "guideline.py", "reader.py"}
    assert {p.name for p in (ROOT / "signatures").glob("*.py")} >= {"judge.py", "infer.py", "guideline.py", "read.py"}


def test_pyproject_maps_the_folders_and_lists_every_package():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == MAPPED
    # packages are listed (a package-dir mapping does not mix with packages.find): a new folder must be added
    on_disk = {".".join(d.relative_to(ROOT).parts) for d in [ROOT / "thinktrace", *(ROOT / "thinktrace").rglob("*")]
               if d.is_dir() and d.name != "__pycache__" and d.name.isidentifier()}
    missing = on_disk - set(tool["packages"])
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"
    assert set(tool["packages"]) == on_disk | set(MAPPED)


def test_the_checkout_imports_the_top_level_folders(tmp_path):
    """In a checkout (the editable install) thinktrace.programs is the top-level programs/, from any folder."""
    import thinktrace.programs
    import thinktrace.signatures

    assert Path(thinktrace.programs.__file__).resolve() == ROOT / "programs" / "__init__.py"
    assert Path(thinktrace.signatures.__file__).resolve() == ROOT / "signatures" / "__init__.py"
    got = _run(PROBE.format(site=""), tmp_path)
    assert Path(got["thinktrace"]).resolve() == ROOT / "thinktrace" / "__init__.py", \
        "the venv's thinktrace is not this checkout (pip install -e . again?)"
    _check(got, ROOT, tmp_path)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built once from a copy of the checkout (the checkout's own build/ may hold stale files that an
    in-tree build would pack, and other builds may be using it); offline when setuptools is in the venv."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=lambda d, names: [
        n for n in names if n == "__pycache__" or n.endswith(".egg-info") or (Path(d) == ROOT and n in NOT_BUILT_FROM)])
    offline = ["--no-build-isolation"] if find_spec("setuptools") else []
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *offline, "-w", str(tmp / "dist"),
                          str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return next((tmp / "dist").glob("thinktrace-*.whl"))


@pytest.mark.slow
def test_the_wheel_carries_the_top_level_folders_as_packages(wheel):
    z = zipfile.ZipFile(wheel)
    names = set(z.namelist())
    for package, folder in MAPPED.items():
        files = sorted((ROOT / folder).glob("*.py"))
        assert files
        for f in files:
            inside = f"{package.replace('.', '/')}/{f.name}"
            assert inside in names, inside
            assert z.read(inside) == f.read_bytes(), f"{inside} differs from {folder}/{f.name}"
    assert not any(n.startswith(("programs/", "signatures/")) for n in names)
    top = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert z.read(top).decode().split() == ["thinktrace"]
    # package data still ships
    assert "thinktrace/templates/quickstart.yaml" in names
    for j2 in (ROOT / "thinktrace" / "report" / "templates").glob("*.j2"):
        assert f"thinktrace/report/templates/{j2.name}" in names, j2.name


@pytest.mark.slow
def test_the_installed_wheel_resolves_relative_signature_paths(wheel, tmp_path):
    """The wheel unpacked as a site folder, first on sys.path, run from a folder that has no programs/: the
    packaged programs load by module and by relative file and find their signatures inside the package; `thinktrace
    init` copies them from there, and the project's rater loads the project's own signature."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    got = _run(PROBE.format(site=str(site)), work)
    assert Path(got["thinktrace"]).resolve() == (site / "thinktrace" / "__init__.py").resolve()
    _check(got, site / "thinktrace", work)


def _check(got: dict, parent: Path, work: Path):
    """programs/ and signatures/ are siblings under `parent` (the checkout's root, or the installed thinktrace/)."""
    programs, signatures = parent.resolve() / "programs", parent.resolve() / "signatures"
    assert Path(got["programs"]) == programs and Path(got["signatures"]) == signatures
    assert got["same_class"]
    assert Path(got["rater_file"]) == programs / "rater.py"
    modules = {Path(m) for m in got["modules"]}
    # each program's ../signatures/<name>.py came from the packaged signatures next to it
    for name in ("judge.py", "infer.py", "guideline.py", "read.py"):
        assert signatures / name in modules, name
    assert got["fields"] == ["rationale", "label"]
    # the project has its own copies, and its rater imports its own signature
    proj = (work / "proj").resolve()
    assert {"programs/rater.py", "signatures/judge.py"} <= set(got["project"])
    assert Path(got["project_rater_file"]) == proj / "programs" / "rater.py"
    assert proj / "signatures" / "judge.py" in modules
