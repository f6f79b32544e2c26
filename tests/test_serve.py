"""The OpenAI-compatible server, over real HTTP on 127.0.0.1, backed by a batching engine on a tiny checkpoint."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import dspy
import pytest

from lm.conftest import build_tiny_checkpoint
from thinktrace.lm import BatchingEngine, ModelConfig, build_lm
from thinktrace.serve import serve_in_thread


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model_dir = build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-serve"))
    engine = BatchingEngine(str(model_dir), batch_window_s=0.05)
    srv = serve_in_thread(engine, "tiny")
    yield srv
    srv.shutdown()
    srv.server_close()
    engine.close()


def post(url: str, body: bytes, content_type="application/json"):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_dspy_lm_reaches_the_server(server):
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


def test_openai_client_with_n_and_seed(server):
    import openai

    client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
    r = client.chat.completions.create(model="tiny", messages=[{"role": "system", "content": "be brief"},
                                                               {"role": "user", "content": "hi"}],
                                       max_tokens=5, n=3, temperature=1.0, seed=3)
    assert len(r.choices) == 3 and 0 < r.usage.completion_tokens <= 15
    again = client.chat.completions.create(model="tiny", messages=[{"role": "system", "content": "be brief"},
                                                                   {"role": "user", "content": "hi"}],
                                           max_tokens=5, n=3, temperature=1.0, seed=3)
    assert [c.message.content for c in r.choices] == [c.message.content for c in again.choices]
    assert [m.id for m in client.models.list().data] == ["tiny"]


@pytest.mark.parametrize(
    "body, status, param",
    [
        (b"{not json", 400, None),
        (b"[]", 400, None),
        (b'{"model": "tiny"}', 400, "messages"),
        (b'{"model": "tiny", "messages": []}', 400, "messages"),
        (b'{"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}', 400, "messages[0].role"),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}', 400,
         "messages[0].content[0]"),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', 400,
         "temperature"),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', 400, "max_tokens"),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": true}', 400, "stream"),
        (b'{"model": "other", "messages": [{"role": "user", "content": "x"}]}', 404, "model"),
    ],
)
def test_malformed_requests_get_json_errors(server, body, status, param):
    code, payload = post(server.url + "/chat/completions", body)
    assert code == status
    assert payload["error"]["type"] == "invalid_request_error" and payload["error"]["message"]
    assert payload["error"]["param"] == param


def test_unknown_route_and_server_keeps_serving(server):
    code, payload = post(server.url + "/completions", b"{}")
    assert code == 404 and "error" in payload
    code, payload = post(server.url + "/chat/completions",
                         b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}')
    assert code == 200 and payload["choices"][0]["finish_reason"] in ("stop", "length")
