"""Endpoint fleets and budgets against two real OpenAI-compatible servers on 127.0.0.1 (tests/support/openai_fake.py).

A rater's `api_base` lists both servers. Requests spread over them; the flaky one answers 500 (or 429) to every
n-th request it receives, and each of those is retried on the other at once; one server killed: the run goes on
on the other; both killed: exit 3 and a resume (on a changed fleet) that completes. A budget stops the run with
exit 5; the resume with a raised budget ends with the records of an uninterrupted run. Every check counts
requests per server and makes sure no unit was answered twice.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from support import read_jsonl
from support.openai_fake import FakeOpenAI, is_rating
from support.specs import remote, spec_for, write_spec

from thinktrace.compile import EXIT_BUDGET, EXIT_INCOMPLETE, main
from thinktrace.journal import latest_settled, prediction_key

EVAL_ONLY = {"sampling.enabled": False, "guidelines.enabled": False, "finetune.enabled": False}


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-test")


@pytest.fixture
def servers(key):
    steady, flaky = FakeOpenAI().start(), FakeOpenAI(fail_every=3, fail_status=500).start()
    yield steady, flaky
    steady.stop()
    flaky.stop()


def fleet_spec(tmp_path, urls: list[str], **extra) -> dict:
    spec = spec_for(tmp_path, urls[0], **{**EVAL_ONLY, **extra})
    spec["models"]["raters"] = [{**remote(urls[0]), "api_base": urls}]
    return spec


def settled_predictions(out) -> dict:
    return latest_settled(read_jsonl(out / "predictions.jsonl", missing_ok=True), prediction_key)


def n_test(out) -> int:
    return len(json.loads((out / "data.json").read_text())["splits"]["test"])


def stderr_error(capsys) -> str:
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


def test_requests_spread_over_the_fleet_and_failures_retry_on_the_other(tmp_path, monkeypatch, servers):
    monkeypatch.chdir(tmp_path)
    steady, flaky = servers
    out = tmp_path / "run"
    assert main([str(write_spec(tmp_path, fleet_spec(tmp_path, [steady.url, flaky.url]))), "--out", str(out)]) == 0
    done, n = settled_predictions(out), n_test(out)
    assert len(done) == n and not any(r["error"] for r in done.values())
    # both servers answered a share; the flaky one failed some requests, and each was answered elsewhere. The split
    # follows the least busy endpoint, so it depends on timing: on a quiet machine the flaky server answers about a
    # third (it fails one in three of the half it receives), on busy cores it was seen at 14 of 60. The bound checks
    # that work is spread, not the exact ratio.
    assert len(steady.answered) >= n // 3 and len(flaky.answered) >= n // 5
    assert flaky.failed >= 5
    assert set(flaky.failed_bodies) <= set(steady.answered)  # each failed request was answered by the other
    assert len(steady.answered) + len(flaky.answered) == n  # one answer per unit over the fleet
    assert max(Counter(steady.answered + flaky.answered).values()) == 1
    records = read_jsonl(out / "predictions.jsonl", missing_ok=True)
    assert len(records) == n  # no failed record: every failure was retried inside its call
    assert sum(r["retries"] for r in records) == flaky.failed
    calls = json.loads((out / "metrics.json").read_text())["calls"]
    assert calls["fleets"]["judge"] == {steady.url: steady.received, flaky.url: flaky.received}
    assert calls["endpoints"][f"judge @ {flaky.url}"]["retries"]["transient"] == flaky.failed
    print(f"fleet: {n} units; steady answered {len(steady.answered)}, flaky answered {len(flaky.answered)} and "
          f"failed {flaky.failed} (each retried on the other); {sum(r['retries'] for r in records)} retries")


def test_rate_limits_are_retried_too(tmp_path, monkeypatch, key):
    monkeypatch.chdir(tmp_path)
    a, b = FakeOpenAI(fail_every=4, fail_status=429).start(), FakeOpenAI(fail_every=5, fail_status=503).start()
    try:
        out = tmp_path / "run"
        assert main([str(write_spec(tmp_path, fleet_spec(tmp_path, [a.url, b.url]))), "--out", str(out)]) == 0
        assert len(settled_predictions(out)) == n_test(out) and a.failed and b.failed
        assert max(Counter(a.answered + b.answered).values()) == 1
    finally:
        a.stop()
        b.stop()


def test_one_endpoint_killed_the_fleet_keeps_running(tmp_path, monkeypatch, servers):
    monkeypatch.chdir(tmp_path)
    steady, flaky = servers
    flaky.go_down_after(8, is_rating)
    out = tmp_path / "run"
    assert main([str(write_spec(tmp_path, fleet_spec(tmp_path, [steady.url, flaky.url]))), "--out", str(out)]) == 0
    assert flaky.down.is_set()
    done, n = settled_predictions(out), n_test(out)
    assert len(done) == n and not any(r["error"] for r in done.values())
    # it goes down after its 8th answer, but a request it had already accepted is still answered (seen: 9)
    assert len(flaky.answered) >= 8 and len(flaky.answered) + len(steady.answered) == n
    assert max(Counter(steady.answered + flaky.answered).values()) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"]["state"] == "complete"
    assert "connection failures in a row" in metrics["calls"]["endpoints"][f"judge @ {flaky.url}"]["down"]
    assert metrics["calls"]["endpoints"][f"judge @ {steady.url}"]["down"] is None


def test_whole_fleet_down_stops_with_exit_3_and_a_resume_on_a_changed_fleet_completes(tmp_path, monkeypatch,
                                                                                        servers, capsys):
    monkeypatch.chdir(tmp_path)
    a, b = servers
    b.fail_every = 0
    a.go_down_after(6, is_rating)
    b.go_down_after(6, is_rating)
    path = write_spec(tmp_path, fleet_spec(tmp_path, [a.url, b.url]))
    out = tmp_path / "run"
    assert main([str(path), "--out", str(out)]) == EXIT_INCOMPLETE
    err = stderr_error(capsys)
    assert "all 2 endpoints down" in err and a.url in err and b.url in err and "--resume" in err
    assert json.loads((out / "metrics.json").read_text())["status"]["state"] == "incomplete"
    before = settled_predictions(out)
    assert 12 <= len(before) < n_test(out)
    # the fleet changes on resume: only the second server comes back, and the spec now lists a third
    b.start()
    c = FakeOpenAI().start()
    try:
        code = main([str(path), "--resume", str(out), "--set", f"models.raters.0.api_base=[{b.url}, {c.url}]"])
        assert code == 0
        done = settled_predictions(out)
        assert len(done) == n_test(out) and not any(r["error"] for r in done.values())
        assert max(Counter(a.answered + b.answered + c.answered).values()) == 1
        assert len(a.answered) + len(b.answered) + len(c.answered) == n_test(out)
        assert c.answered  # the new replica took part
        print(f"whole fleet down: {len(before)} settled before exit 3; resume on [b, c]: b answered "
              f"{len(b.answered)} in all, c {len(c.answered)}")
    finally:
        c.stop()


def test_budget_stops_cleanly_and_a_raised_budget_resumes_to_the_uninterrupted_records(tmp_path, monkeypatch,
                                                                                       servers, capsys):
    monkeypatch.chdir(tmp_path)
    a, b = servers
    b.fail_every = 0
    # the fake server reports 15 tokens per call: the budget allows 20 calls (plus those in flight)
    spec = fleet_spec(tmp_path, [a.url, b.url], **{"budget.max_tokens": 300})
    path = write_spec(tmp_path, spec)
    out = tmp_path / "run"
    assert main([str(path), "--out", str(out)]) == EXIT_BUDGET
    err = stderr_error(capsys)
    assert "budget reached" in err and "budget.max_tokens is 300" in err and "--resume" in err
    first = settled_predictions(out)
    n = n_test(out)
    assert 20 <= len(first) <= 20 + 4 < n  # 4 threads: at most 4 calls were in flight when it was reached
    usage = json.loads((out / "usage.json").read_text())
    assert usage["calls"] == len(first) and usage["input_tokens"] + usage["output_tokens"] == 15 * len(first)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"]["state"] == "incomplete" and "budget reached" in metrics["status"]["reason"]
    # the same budget: stops again at once, no call made
    sent = a.received + b.received
    assert main([str(path), "--resume", str(out)]) == EXIT_BUDGET
    assert a.received + b.received == sent
    capsys.readouterr()
    # raised: completes
    assert main([str(path), "--resume", str(out), "--set", "budget.max_tokens=100000"]) == 0
    done = settled_predictions(out)
    assert len(done) == n and max(Counter(a.answered + b.answered).values()) == 1
    assert json.loads((out / "usage.json").read_text())["calls"] == n
    print(f"budget: stopped after {len(first)} of {n} units ({usage['input_tokens'] + usage['output_tokens']} "
          f"tokens); the raised budget completed {n}")
    # the same records as a run without a budget
    ref = tmp_path / "ref"
    assert main([str(path), "--out", str(ref), "--set", "budget.max_tokens=null"]) == 0
    assert {k: (r["label"], r["rationale"]) for k, r in done.items()} == \
        {k: (r["label"], r["rationale"]) for k, r in settled_predictions(ref).items()}


def test_usd_budget_counts_priced_models(tmp_path, monkeypatch, servers, capsys):
    """gpt-4o-mini is in LiteLLM's price map: 10 input + 5 output tokens cost $4.5e-6 a call."""
    monkeypatch.chdir(tmp_path)
    a, b = servers
    b.fail_every = 0
    spec = fleet_spec(tmp_path, [a.url, b.url], **{"budget.max_usd": 4.5e-5})
    spec["models"]["raters"][0]["model"] = "gpt-4o-mini"
    out = tmp_path / "run"
    assert main([str(write_spec(tmp_path, spec)), "--out", str(out)]) == EXIT_BUDGET
    usage = json.loads((out / "usage.json").read_text())
    assert usage["unpriced_calls"] == 0 and usage["usd"] == pytest.approx(4.5e-6 * usage["calls"])
    assert 10 <= usage["calls"] <= 14
    assert "budget.max_usd" in stderr_error(capsys)


def test_dry_run_prints_cost_for_priced_models_and_unknown_otherwise(tmp_path, capsys):
    spec = spec_for(tmp_path, "http://127.0.0.1:9/v1", **EVAL_ONLY, **{"budget.max_usd": 0.0001})
    priced = {**remote("http://127.0.0.1:9/v1", "mini"), "model": "gpt-4o-mini", "max_tokens": 100}
    spec["models"]["raters"] = [priced, remote(["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"]),
                                {"name": "kw", "provider": "local", "model": "smollm2-135m"}]
    assert main([str(write_spec(tmp_path, spec)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    mini = next(x for x in out.splitlines() if x.strip().startswith("cost mini"))
    n = int(mini.split("at most ")[1].split(" calls")[0].replace(",", ""))
    assert n == 60 and "(openai/gpt-4o-mini)" in mini and "6,000 output tokens" in mini
    usd = float(mini.split("~$")[1].split(" ")[0])
    tokens_in = int(mini.split("~")[1].split(" input")[0].replace(",", ""))
    assert usd == pytest.approx(round(tokens_in * 0.15e-6 + 6000 * 0.6e-6, 2))
    judge = next(x for x in out.splitlines() if x.strip().startswith("cost judge"))
    assert "cost unknown (not in LiteLLM's price map)" in judge
    local = next(x for x in out.splitlines() if x.strip().startswith("cost kw"))
    assert "cost unknown (local model" in local
    assert "budget: the estimate is above budget.max_usd 0.0001" in out
