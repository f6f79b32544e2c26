"""Process environment set before dspy/litellm are imported: never touch the network for cost maps, keep the
DSPy cache inside the project unless the user chose one. Import this module before importing dspy."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DSPY_CACHEDIR", os.path.join(os.path.expanduser("~"), ".cache", "thinktrace", "dspy"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
