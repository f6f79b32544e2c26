"""`python -m thinktrace.serve`: llama.cpp's OpenAI-compatible HTTP server on 127.0.0.1 for a local model and its
adapters, reached by the OpenAI client and by a `provider: openai` spec entry."""

from __future__ import annotations

import json
import urllib.request

import dspy
import pytest

from thinktrace.lm import ModelConfig, build_lm
from thinktrace.serve import LocalServer, main


@pytest.fixture(scope="module")
def server(tiny_model_dir, tiny_adapter_dir):
    srv = LocalServer(str(tiny_model_dir), adapters=(str(tiny_adapter_dir),), name="tiny")
    yield srv
    srv.close()


def post(url: str, body: dict):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.status, json.loads(resp.read())


def test_dspy_lm_reaches_the_server(server):
    assert server.url.startswith("http://127.0.0.1:")
    lm = dspy.LM("openai/tiny", api_base=server.url, api_key="x", temperature=0.0, max_tokens=6, cache=False)
    out = lm("hello there")
    assert isinstance(out[0], str) and out[0]
    assert 0 < lm.history[-1]["usage"]["completion_tokens"] <= 6


def test_remote_model_config_reaches_the_server(server, monkeypatch):
    monkeypatch.setenv("TINY_KEY", "not-checked")
    cfg = ModelConfig(provider="openai", model="tiny", api_base=server.url, api_key_env="TINY_KEY", max_tokens=4,
                      cache=False)
    lm = build_lm(cfg)
    assert isinstance(lm("2+2?")[0], str)
    assert lm.history[-1]["usage"]["prompt_tokens"] > 0


def test_seeded_samples_repeat_and_defaults_are_plain(server):
    import openai

    client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    runs = [[client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=1.0,
                                            seed=s).choices[0].message.content for s in range(6)] for _ in range(2)]
    assert runs[0] == runs[1] and len(set(runs[0])) > 1
    _, props = 200, json.loads(urllib.request.urlopen(server.base_url + "/props", timeout=30).read())
    params = props["default_generation_settings"]["params"]
    assert (params["top_k"], params["top_p"], params["min_p"]) == (0, 1.0, 0.0)


def test_adapters_are_listed_and_selected_per_request(server):
    adapters = json.loads(urllib.request.urlopen(server.base_url + "/lora-adapters", timeout=30).read())
    assert len(adapters) == 1 and adapters[0]["id"] == 0
    body = {"prompt": "the quick brown fox", "max_tokens": 12, "temperature": 0}
    _, base = post(server.url + "/completions", {**body, "lora": [{"id": 0, "scale": 0.0}]})
    _, tuned = post(server.url + "/completions", {**body, "lora": [{"id": 0, "scale": 1.0}]})
    assert base["choices"][0]["text"] != tuned["choices"][0]["text"]


def test_bad_model_is_a_one_line_error(capsys, tmp_path):
    assert main(["--model", str(tmp_path / "missing.gguf"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --model") and "\n" not in err
