import os
import sys
import tempfile
from pathlib import Path

# A private DSPy cache per test session (set before dspy is imported): runs never read another session's answers.
os.environ["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="thinktrace-test-dspy-")

import thinktrace  # noqa: E402,F401  (offline env before dspy)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def shared_datasets() -> Path:
    """Real corpora for tests (THINKTRACE_SHARED_DATASETS, default ../shared/datasets next to the repo)."""
    return Path(os.environ.get("THINKTRACE_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
