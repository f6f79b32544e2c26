"""ModelConfig validation and build_lm: local engines shared, remote keys only from the environment."""

from __future__ import annotations

import json

import dspy
import pytest
from pydantic import ValidationError

from thinktrace.errors import SpecError
from thinktrace.lm import LlamaCppEngine, ModelConfig, build_lm
from thinktrace.lm.factory import clear_engines, engine_stats, lm_usage


def test_defaults_and_name():
    cfg = ModelConfig(model="smollm2-135m")
    assert (cfg.provider, cfg.name, cfg.temperature, cfg.max_tokens, cfg.num_threads, cfg.cache) == (
        "local", "smollm2-135m", 0.0, 256, 4, True)
    assert cfg.dspy_model == "local/smollm2-135m"
    assert ModelConfig(name="gpt", provider="openai", model="gpt-4o-mini").dspy_model == "openai/gpt-4o-mini"


def test_every_field_is_documented():
    assert all(f.description for f in ModelConfig.model_fields.values())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(model="m", adapter="/x", provider="openai"), "`local` only"),
        (dict(model="m", provider="openai", api_base="ftp://host"), "http"),
        (dict(model="m", provider="openai", api_base="localhost:8000"), "http"),
        (dict(model="m", api_base="http://127.0.0.1:8011/v1"), "remote providers"),
        (dict(model="m", temperature=-0.1), "greater than or equal"),
        (dict(model="m", max_tokens=0), "greater than"),
        (dict(model="m", num_threads=0), "greater than or equal"),
        (dict(model="m", provider="openai", api_key_env="sk-abc123"), "NAME of an environment variable"),
        (dict(model="m", provider="openai/gpt"), "provider prefix"),
        (dict(model="m", bogus=1), "Extra inputs"),
    ],
)
def test_invalid_configs(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        ModelConfig(**kwargs)


def test_remote_missing_key_env_is_a_spec_error(monkeypatch):
    monkeypatch.delenv("THINKTRACE_TEST_KEY", raising=False)
    cfg = ModelConfig(provider="openai", model="gpt-4o-mini", api_key_env="THINKTRACE_TEST_KEY")  # valid spec
    with pytest.raises(SpecError) as err:
        build_lm(cfg, field="models.raters.1")
    assert err.value.field == "models.raters.1.api_key_env" and "THINKTRACE_TEST_KEY" in str(err.value)


def test_remote_key_never_in_repr_or_saved_state(monkeypatch, tmp_path):
    monkeypatch.setenv("THINKTRACE_TEST_KEY", "sk-very-secret-42")
    cfg = ModelConfig(provider="openai", model="gpt-4o-mini", api_key_env="THINKTRACE_TEST_KEY",
                      api_base="http://127.0.0.1:9/v1")
    lm = build_lm(cfg)
    assert lm.kwargs.get("api_key") == "sk-very-secret-42"  # it does reach the client
    assert "sk-very-secret-42" not in repr(cfg) + repr(cfg.model_dump()) + repr(lm)
    assert "sk-very-secret-42" not in json.dumps(lm.dump_state(), default=str)
    program = dspy.Predict("q -> a")
    program.lm = lm
    program.save(str(tmp_path / "p.json"))
    assert "sk-very-secret-42" not in (tmp_path / "p.json").read_text()


def test_local_lms_share_one_server(tiny_model_dir, tiny_adapter_dir):
    clear_engines()
    a = build_lm(ModelConfig(name="a", model=str(tiny_model_dir), max_tokens=4, cache=False))
    b = build_lm(ModelConfig(name="b", model=str(tiny_model_dir), temperature=0.5, cache=False))
    c = build_lm(ModelConfig(name="c", model=str(tiny_model_dir), adapter=str(tiny_adapter_dir), cache=False))
    assert isinstance(a.engine, LlamaCppEngine) and a.engine.server is b.engine.server
    assert c.engine.server is a.engine.server and c.engine.adapter_id == 0  # a checkpoint dir is its training base
    assert a.model == "local/a"
    a("hi")
    assert lm_usage(a)["calls"] == 1 and lm_usage(a)["output_tokens"] <= 4
    (stats,) = engine_stats().values()
    assert stats["calls"] == 1 and stats["output_tokens"] <= 4
    clear_engines()


def test_sampling_settings_validate():
    assert ModelConfig(model="m", top_k=0, top_p=0.9, min_p=0.05).min_p == 0.05
    with pytest.raises(ValueError, match="min_p applies to provider `local` only"):
        ModelConfig(provider="openai", model="gpt-4o-mini", min_p=0.1)
    with pytest.raises(ValueError, match="threads"):
        ModelConfig(model="m", llama={"threads": 0})
    with pytest.raises(ValueError, match="extra|not permitted"):
        ModelConfig(model="m", llama={"gpu_layers": 3})


def test_local_missing_paths_are_spec_errors(tmp_path, tiny_model_dir):
    with pytest.raises(SpecError, match="does not exist") as err:
        build_lm(ModelConfig(model=str(tmp_path / "missing")), field="models.generator")
    assert err.value.field == "models.generator.model"
    with pytest.raises(SpecError, match="adapter_config.json") as err:
        build_lm(ModelConfig(model=str(tiny_model_dir), adapter=str(tmp_path)), field="models.generator")
    assert err.value.field == "models.generator.adapter"
