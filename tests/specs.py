"""A valid spec on the toy corpus and a fake engine, for tests to modify."""

from __future__ import annotations

from pathlib import Path

import yaml

TESTS = Path(__file__).resolve().parent


def toy_spec(**overrides) -> dict:
    spec = {
        "name": "toy",
        "seed": 0,
        "data": {"source": str(TESTS / "data" / "toy_long.csv"), "format": "long",
                 "label_set": ["negative", "neutral", "positive"], "level": "nominal",
                 "split": {"train": 0.5, "dev": 0.25, "test": 0.25}},
        "codebook": "Rate the sentiment of the text.",
        "models": {"raters": [{"name": "kw", "provider": "python",
                               "model": f"{TESTS / 'fake_engines.py'}:keyword_rater", "cache": False}]},
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
