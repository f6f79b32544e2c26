"""A remote rater through dspy.LM/LiteLLM against a real OpenAI-compatible HTTP server on 127.0.0.1; the API key
comes from the environment and never reaches the run folder."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support.fake_engines import truth
from support.openai_fake import send_chat_reply
from support.specs import toy_spec, write_spec

from thinktrace.compile import main

KEY = "sk-test-PLANTED-4f9c2e7a1b"


class Handler(BaseHTTPRequestHandler):
    seen_keys: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.seen_keys.append(self.headers.get("Authorization"))
        user = body["messages"][-1]["content"]
        item = user.split("Item:", 1)[-1].strip().splitlines()[0]
        send_chat_reply(self, body, f"Rationale: the words suggest it\nLabel: {truth(item)}")


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def remote_spec(api_base):
    return toy_spec(**{"models.raters": [{"name": "remote", "provider": "openai", "model": "judge-1",
                                          "api_base": api_base, "api_key_env": "THINKTRACE_TEST_KEY",
                                          "cache": False}],
                       "sampling.enabled": False})


def test_remote_rater_key_from_env_never_written(tmp_path, monkeypatch, server):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("THINKTRACE_TEST_KEY", KEY)
    out = tmp_path / "run"
    assert main([str(write_spec(tmp_path, remote_spec(server))), "--out", str(out)]) == 0
    assert Handler.seen_keys and all(k == f"Bearer {KEY}" for k in Handler.seen_keys)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["splits"]["test"]["raters"]["remote"]["n_unparsed"] == 0
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"API key leaked into {path}"


def test_missing_key_is_a_clear_error(tmp_path, monkeypatch, capsys, server):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("THINKTRACE_TEST_KEY", raising=False)
    spec = write_spec(tmp_path, remote_spec(server))
    assert main([str(spec), "--dry-run"]) == 0  # validation needs no key
    assert main([str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "THINKTRACE_TEST_KEY" in err[0] and "models.raters.0.api_key_env" in err[0]


def test_unknown_provider_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = toy_spec(**{"models.raters": [{"name": "x", "provider": "opneai", "model": "m"}],
                       "sampling.enabled": False})
    path = write_spec(tmp_path, spec)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "models.raters.0.provider" in err[0] and "opneai" in err[0], err
    assert not (tmp_path / "runs").exists()


def test_only_program_files_the_spec_names_are_imported(tmp_path, monkeypatch):
    import sys

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bystander.py").write_text("raise SystemExit('imported a file no spec names')\n")
    out = tmp_path / "run"
    assert main([str(write_spec(tmp_path, toy_spec(**{"sampling.enabled": False}))), "--out", str(out)]) == 0
    loaded = [m for m in sys.modules if m.startswith("thinktrace_user_")]
    assert loaded  # the named programs were imported through thinktrace.loader
    files = [getattr(sys.modules[m], "__file__", "") for m in loaded]
    assert not any(f.endswith("bystander.py") for f in files)
    # every imported user file is one a spec (in this test session) named, or a file those programs import
    named = ("rater.py", "trace.py", "judge.py", "infer.py", "guideline.py", "reader.py", "read.py", "fake_engines.py",
             "mywriter.py")
    assert [f for f in files if not f.endswith(named)] == []
