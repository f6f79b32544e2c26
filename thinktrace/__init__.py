"""thinktrace: infer the thinking traces behind human labels (rejection sampling) and use them to fine-tune open
LLM raters and to synthesize clearer annotation guidelines. See README.md.

The Python API::

    import thinktrace

    run = thinktrace.compile("experiments/quickstart.yaml", data={"limit": 60})
    run.metrics.splits["test"].raters      # typed metrics; run.report is report.md
    thinktrace.compare(run, "runs/other/20260101-120000")
"""

from thinktrace import _env  # noqa: F401  (must run before dspy is imported anywhere)
from thinktrace.run.api import Run, compare, compile, load_spec

__version__ = "0.1.0"

__all__ = ["Run", "__version__", "compare", "compile", "load_spec"]
