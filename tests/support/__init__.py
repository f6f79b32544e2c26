"""Fakes and helpers shared by the tests (imported as `support.<module>`: pyproject's pytest `pythonpath` puts tests/
on sys.path; a test that starts a Python child process puts it there itself).

- specs: a valid toy spec on a fake engine (`toy_spec`, `write_spec`), remote-rater specs for the fake server;
- fake_engines: the `provider: python` engines those specs name by file path (FAKE_ENGINES);
- fakes: a GuardedLM over a ScriptedEngine, for unit tests of programs and optimizers;
- openai_fake: a scripted OpenAI-compatible HTTP server on 127.0.0.1 that can go down and come back;
- toy_runs: compiled toy run folders with later stages' artifacts, for the report / compare tests;
- tiny_model: a tiny random Llama checkpoint and LoRA adapter, fine-tuning rows and configs, and running
  thinktrace's child-process work (fine-tuning, GGUF conversion) in the test process;
- here: the repository paths, `read_jsonl`, `shared_datasets`, `benchmark` (a script of benchmarks/ as a module).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent
DATA = TESTS / "data"


def read_jsonl(path: Path, *, missing_ok: bool = False, partial_ok: bool = False) -> list[dict]:
    """The records of a JSONL file (blank lines skipped). `missing_ok`: [] when the file does not exist (yet);
    `partial_ok`: leave out a line that is not a whole record (a file another process appends to, or was killed
    while writing)."""
    path = Path(path)
    if missing_ok and not path.exists():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [json.loads(line) for line in lines if not partial_ok or line.rstrip().endswith("}")]


def shared_datasets() -> Path:
    """Real corpora for tests (THINKTRACE_SHARED_DATASETS, default ../shared/datasets next to the repo)."""
    return Path(os.environ.get("THINKTRACE_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))


def benchmark(name: str):
    """benchmarks/<name>.py loaded as a module (benchmarks/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
