"""thinktrace: infer the thinking traces behind human labels (rejection sampling) and use them to fine-tune open
LLM raters and to synthesize clearer annotation guidelines. See README.md."""

from thinktrace import _env  # noqa: F401  (must run before dspy is imported anywhere)

__version__ = "0.1.0"
