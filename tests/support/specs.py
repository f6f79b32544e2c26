"""Specs for tests to modify: a valid spec on the toy corpus and the fake keyword engine (`toy_spec`), and specs whose
rater is an OpenAI-compatible endpoint (`spec_for`, for support.openai_fake's server)."""

from __future__ import annotations

from pathlib import Path

import yaml

from . import DATA, TESTS
from .fake_engines import NEGATIVE, POSITIVE, truth

#: the `provider: python` engines (support/fake_engines.py), named by file path: a compile in a child process
#: loads them without tests/ on its path
FAKE_ENGINES = TESTS / "support" / "fake_engines.py"
__all__ = ["FAKE_ENGINES", "TESTS", "corpus", "fake_model", "remote", "spec_for", "toy_spec", "write_spec"]


def fake_model(engine: str) -> str:
    """The `model` of a `provider: python` entry for one of support/fake_engines.py's engines."""
    return f"{FAKE_ENGINES}:{engine}"


def toy_spec(**overrides) -> dict:
    """The toy spec; each override key is a dotted path (`"sampling.k": 2`), set after the defaults."""
    spec = {
        "name": "toy",
        "seed": 0,
        "data": {"source": str(DATA / "toy_long.csv"), "format": "long",
                 "label_set": ["negative", "neutral", "positive"], "level": "nominal",
                 "split": {"train": 0.5, "dev": 0.25, "test": 0.25}},
        "codebook": "Rate the sentiment of the text.",
        "models": {"raters": [{"name": "kw", "provider": "python", "model": fake_model("keyword_rater"),
                               "cache": False}]},
        "sampling": {"k": 4, "strategy": "blind", "max_demos": 0},  # a demos variant only where a test asks
        "evaluate": {"bootstrap": 50},
    }
    for key, value in overrides.items():
        node = spec
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return spec


def write_spec(tmp_path: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# -- raters behind an OpenAI-compatible endpoint (support.openai_fake.FakeOpenAI) ----------------------------------

WORDS = ["window", "table", *POSITIVE, *NEGATIVE, "chair", "door"]


def corpus(tmp_path: Path, n: int) -> Path:
    """n items, 3 annotators agreeing with the keyword truth."""
    rows = ["item_id,text,annotator_id,label"]
    for i in range(n):
        text = f"a {WORDS[i % len(WORDS)]} thing number {i}"
        rows += [f"i{i:03d},{text},ann{a},{truth(text)}" for a in range(3)]
    path = tmp_path / "corpus.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def remote(url, name: str = "judge") -> dict:
    """A `provider: openai` rater at `url` (one api_base or a list: a fleet); its key is read from FAKE_KEY."""
    return {"name": name, "provider": "openai", "model": "judge-1", "api_base": url, "api_key_env": "FAKE_KEY",
            "cache": False, "num_threads": 4}


def spec_for(tmp_path: Path, url, **extra) -> dict:
    """The toy spec on `corpus(n=80)` (extra `n`, `split` change it) with one `remote(url)` rater."""
    data = {"source": str(corpus(tmp_path, extra.pop("n", 80))), "format": "long",
            "label_set": ["negative", "neutral", "positive"], "level": "nominal",
            "split": extra.pop("split", {"train": 0.25, "dev": 0.0, "test": 0.75})}
    return toy_spec(**{"data": data, "models.raters": [remote(url)], "calls.backoff_s": 0.0,
                       "evaluate.bootstrap": 20, **extra})
