"""Process environment set before dspy/litellm are imported: never touch the network for cost maps, keep the
DSPy cache inside the project unless the user chose one. Import this module before importing dspy."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DSPY_CACHEDIR", os.path.join(os.path.expanduser("~"), ".cache", "thinktrace", "dspy"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import logging  # noqa: E402


class _DropTruncationWarnings(logging.Filter):
    """Raters and samplers run with a small max_tokens on purpose (a rationale, then a label); DSPy's per-call
    'response was truncated' warning would flood the progress bars."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LM response was truncated" not in record.getMessage()


logging.getLogger("dspy.clients.lm").addFilter(_DropTruncationWarnings())
