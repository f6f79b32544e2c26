"""Test-session set-up and the fixtures shared by every test folder. Helpers and fakes live in tests/support/
(imported as `support.<module>`: pyproject's pytest `pythonpath` puts tests/ on sys.path).

Markers (pyproject.toml): `slow` tests run in `make test-slow` (CI's second step), the rest in `make test`;
every `integration` test (real embedded models) is also `slow`."""

import os
import tempfile
from pathlib import Path

import pytest

# A private DSPy cache per test process (set before dspy is imported): runs never read another session's answers.
os.environ["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="thinktrace-test-dspy-")

import thinktrace  # noqa: E402,F401  (offline env before dspy)
from support.tiny_model import build_tiny_adapter, build_tiny_checkpoint, children_in_process  # noqa: E402


@pytest.hookimpl(tryfirst=True)  # before -m selects
def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("integration") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _no_run_budget_left_behind():
    """Each test starts with no run's budget meter: a Pipeline starts its run's meter when it is built and ends it
    when run() ends, so a test that builds one without running it would leave a meter writing usage.json into a
    run folder (a relative path, after a chdir) for every later LM call in this process."""
    yield
    from thinktrace.lm.budget import start_budget

    start_budget(None, None)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny random Llama checkpoint (support.tiny_model), built once per test process; tests only read it."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A random LoRA adapter on tiny_model_dir (q, v, o projections), built once per test process."""
    return build_tiny_adapter(tiny_model_dir, tmp_path_factory.mktemp("tiny-lora"))


@pytest.fixture
def in_process_children():
    """thinktrace's child-process work (fine-tuning, model conversion) in the test process: see support.tiny_model."""
    with children_in_process():
        yield
