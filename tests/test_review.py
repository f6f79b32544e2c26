"""Reviewing a run's traces (thinktrace.review): the review journal, the blind judge on edits, the reviewers'
agreement, the JSON endpoints (the ones the page uses), a scripted policy through them, Label Studio export /
import, bad input, and a reviewed resume that changes the SFT rows and demos and reports reviewed vs raw."""

from __future__ import annotations

import json
import shutil

import krippendorff
import numpy as np
import pytest
from fastapi.testclient import TestClient
from support import read_jsonl
from support.toy_runs import compile_run

from thinktrace.compile import main as compile_main
from thinktrace.leak import states_label
from thinktrace.review.app import create_app
from thinktrace.review.cli import Server, main as review_main
from thinktrace.review.exchange import from_label_studio, to_label_studio
from thinktrace.review.judge import RunJudge
from thinktrace.review.policy import reject_label_leaks
from thinktrace.review.records import ReviewError
from thinktrace.review.store import ReviewStore
from thinktrace.teleprompt import select_demos


class FakeJudge:
    """A blind judge that reads the last word of the rationale as its label (and counts its calls)."""

    def __init__(self):
        self.calls = []

    def check(self, item: str, rationale: str) -> dict:
        self.calls.append((item, rationale))
        word = rationale.rstrip(". ").rsplit(" ", 1)[-1]
        return {"label": word if word in ("negative", "neutral", "positive") else None, "raw": word, "model": "fake"}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A compiled toy run (fake engine, demos on): its folder, not to be written to (tests copy it)."""
    return compile_run(tmp_path_factory.mktemp("review"), "toy", **{"sampling.max_demos": 2})


@pytest.fixture
def spec(toy_run):
    """The toy run's spec file (what a resume is given)."""
    return toy_run.parents[1] / "toy.yaml"


@pytest.fixture
def run(toy_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(toy_run, out)
    return out


def mixed_leaks(run) -> list[dict]:
    """Rewrite every other trace's rationale so that it no longer names its label (the toy engine's always do)."""
    traces = read_jsonl(run / "traces.jsonl")
    for n, t in enumerate(traces):
        if n % 2:
            t["rationale"] = f"the words of '{t['item']}' carry the tone"
    (run / "traces.jsonl").write_text("".join(json.dumps(t) + "\n" for t in traces))
    return traces


# -- the journal ---------------------------------------------------------------------------------------------------

def test_two_writers_keep_their_lines_and_the_later_one_counts(run, toy_run):
    a, b = ReviewStore(run), ReviewStore(run)  # two tabs' worth of writers on the same folder
    tid = a.traces[0]["id"]
    a.new_review(tid, "accept", "ann", reason="fine")
    b.new_review(tid, "reject", "ann", reason="restates the guideline")
    lines = read_jsonl(run / "reviews.jsonl")
    assert [r["action"] for r in lines] == ["accept", "reject"]
    assert all(r["schema_version"] == 1 and r["reviewer"] == "ann" and r["at"] for r in lines)
    fresh = ReviewStore(run)
    assert fresh.effective("ann")[tid].action == "reject"
    kept, counts = fresh.reviewed_traces()
    assert tid not in {f"{t['key']}|{t['strategy']}|{t['attempt']}" for t in kept}
    assert counts["rejected"] == 1 and counts["reviewed"] == 1 and len(kept) == len(fresh.traces) - 1
    assert (run / "traces.jsonl").read_bytes() == (toy_run / "traces.jsonl").read_bytes()


def test_traces_jsonl_is_never_rewritten(run):
    before = (run / "traces.jsonl").read_bytes()
    store, judge = ReviewStore(run), FakeJudge()
    for t in store.traces[:3]:
        store.new_review(t["id"], "edit", "ann", rationale=f"it reads {t['human']}", judge=judge)
    assert (run / "traces.jsonl").read_bytes() == before


def test_an_edit_is_read_by_the_blind_judge_before_it_counts(run):
    store, judge = ReviewStore(run), FakeJudge()
    t, u = store.traces[0], store.traces[1]
    wrong = next(x for x in ("negative", "neutral", "positive") if x != u["human"])
    good = store.new_review(t["id"], "edit", "ann", rationale=f"on reflection {t['human']}", reason="clearer", judge=judge)
    bad = store.new_review(u["id"], "edit", "ann", rationale=f"on reflection {wrong}", judge=judge)
    assert judge.calls == [(t["item"], f"on reflection {t['human']}"), (u["item"], f"on reflection {wrong}")]
    assert good.judge.label == t["human"] and good.judge.agrees and good.counts and good.before == t["rationale"]
    assert bad.judge.label == wrong and not bad.judge.agrees and not bad.counts
    kept, counts = ReviewStore(run).reviewed_traces("ann")
    by_key = {x["key"]: x for x in kept}
    assert by_key[t["key"]]["rationale"] == f"on reflection {t['human']}" and by_key[t["key"]]["reviewed"] == "edited"
    assert by_key[u["key"]]["rationale"] == u["rationale"]  # the unconfirmed edit left it as it was
    assert counts["edited"] == 1 and counts["edits_not_confirmed"] == 1
    with pytest.raises(ReviewError, match="blind judge"):
        store.new_review(t["id"], "edit", "ann", rationale="another text positive")


def test_a_judge_that_fails_writes_nothing_and_says_so(run):
    class Down:
        def check(self, item, rationale):
            raise ConnectionError("judge endpoint refused the connection")

    store = ReviewStore(run)
    client = TestClient(create_app(store, judge=Down(), reviewer="ann"), base_url="http://127.0.0.1")
    t = store.traces[0]
    resp = client.post("/api/reviews", json={"trace": t["id"], "action": "edit", "reviewer": "ann",
                                             "rationale": f"so {t['human']}"})
    assert resp.status_code == 503 and "could not read the edit" in resp.json()["error"]
    assert "refused the connection" in resp.json()["error"]
    assert not (run / "reviews.jsonl").exists()


def test_the_runs_own_judge_reads_an_edit(run):
    """RunJudge builds the run's trace program on its generator from spec.resolved.yaml (the toy fake engine reads
    the last word of a rationale as its label)."""
    store = ReviewStore(run)
    judge = RunJudge(run, store.label_set)
    t = store.traces[0]
    r = store.new_review(t["id"], "edit", "ann", rationale=f"the tone is {t['human']}", judge=judge)
    assert r.judge.label == t["human"] and r.judge.agrees and r.judge.model == "kw"


def test_a_crash_mid_line_loses_no_later_review(run):
    store = ReviewStore(run)
    store.new_review(store.traces[0]["id"], "accept", "ann")
    with open(run / "reviews.jsonl", "a") as fh:
        fh.write('{"schema_version": 1, "id": "torn", "tra')  # killed while writing
    store = ReviewStore(run)  # the torn line is left out
    assert len(store.reviews) == 1
    store.new_review(store.traces[1]["id"], "reject", "ann", reason="x")
    again = ReviewStore(run)
    assert [r.action for r in again.reviews] == ["accept", "reject"]
    assert (run / "reviews.jsonl.torn").read_text().startswith('{"schema_version": 1, "id": "torn"')


@pytest.mark.parametrize("line, why", [
    ("not json at all\n", "line 2: not JSON"),
    ('{"schema_version": 1, "id": "x", "trace": "t1|blind|0", "item_id": "t1", "reviewer": "a", "at": "now", '
     '"action": "approve"}\n', "line 2: not a review record (action"),
    ('{"schema_version": 1, "id": "x", "trace": "nope|blind|0", "item_id": "t1", "reviewer": "a", "at": "now", '
     '"action": "accept"}\n', "line 2: names trace 'nope|blind|0'"),
])
def test_a_tampered_reviews_file_is_a_one_line_error(run, capsys, line, why):
    store = ReviewStore(run)
    store.new_review(store.traces[0]["id"], "accept", "ann")
    with open(run / "reviews.jsonl", "a") as fh:
        fh.write(line)
    before = (run / "reviews.jsonl").read_bytes()
    with pytest.raises(ReviewError, match=why.replace("(", r"\(").replace("|", r"\|")):
        ReviewStore(run)
    assert review_main([str(run), "--summary"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and why.split(":")[0] in err
    assert (run / "reviews.jsonl").read_bytes() == before  # nothing rewritten, nothing lost


def test_a_run_folder_without_traces_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert review_main([str(tmp_path / "empty"), "--summary"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no traces.jsonl" in err and "\n" not in err
    assert review_main([str(tmp_path / "missing"), "--summary"]) == 2
    assert "no such run folder" in capsys.readouterr().err


# -- reviewers -----------------------------------------------------------------------------------------------------

def test_a_second_reviewer_is_kept_apart_and_their_agreement_is_alpha(run):
    store, judge = ReviewStore(run), FakeJudge()
    ids = [t["id"] for t in store.traces]
    ann = ["reject" if n % 3 == 0 else "accept" for n in range(len(ids))]
    bob = ["reject" if n % 4 == 0 else "accept" for n in range(len(ids) - 2)]  # bob skips the last two
    for tid, action in zip(ids, ann):
        store.new_review(tid, action, "ann", reason="r")
    for tid, action in zip(ids, bob):
        store.new_review(tid, action, "bob", reason="r")
    t = store.traces[1]  # a confirmed edit counts as keeping the trace (accept)
    store.new_review(t["id"], "edit", "bob", rationale=f"so {t['human']}", judge=judge)
    assert store.reviewers() == ["ann", "bob"]
    assert store.reviewed_traces()[1]["reviewer"] == "ann"  # the first reviewer's set, unless named
    assert store.reviewed_traces("bob")[1]["edited"] == 1 and store.reviewed_traces("ann")[1]["edited"] == 0
    agreement = store.agreement(n_boot=50)
    n = len(bob)
    codes = {"accept": 0, "reject": 1}
    expected = krippendorff.alpha(reliability_data=np.array([[codes[a] for a in ann[:n]], [codes[b] for b in bob]],
                                                            dtype=float), level_of_measurement="nominal")
    assert agreement["traces_by_two_or_more"] == n
    assert agreement["alpha"]["value"] == pytest.approx(expected)
    assert agreement["disagreements"] == sum(a != b for a, b in zip(ann, bob))


# -- the endpoints -------------------------------------------------------------------------------------------------

def test_endpoints_list_filter_review_and_refuse_bad_input(run):
    mixed_leaks(run)
    store = ReviewStore(run)
    client = TestClient(create_app(store, judge=FakeJudge(), reviewer="ann"), base_url="http://127.0.0.1")
    page = client.get("/")
    assert page.status_code == 200 and 'value="ann"' in page.text and "/api/traces" in page.text
    marked = TestClient(create_app(store, reviewer='a"><script>x</script>'), base_url="http://localhost").get("/")
    assert "<script>x</script>" not in marked.text and "&quot;&gt;&lt;script&gt;" in marked.text
    rows = client.get("/api/traces", params={"reviewer": "ann"}).json()["traces"]
    assert len(rows) == len(store.traces)
    order = list(store.label_set.labels)
    assert [order.index(r["label"]) for r in rows] == sorted(order.index(r["label"]) for r in rows)
    leaking = client.get("/api/traces", params={"states_label": "true"}).json()["traces"]
    expected = {t["id"] for t in store.traces if states_label(t["rationale"], store.label_set, t["label"])}
    assert {r["id"] for r in leaking} == expected and 0 < len(expected) < len(rows)
    pos = client.get("/api/traces", params={"label": "positive"}).json()["traces"]
    assert pos and all(r["label"] == "positive" for r in pos)
    disagree = client.get("/api/traces", params={"disagreement": "true"}).json()["traces"]
    assert {r["id"] for r in disagree} == {t["id"] for t in store.traces if len(set(t["human_labels"])) > 1}
    with_rejected = [r for r in rows if r["rejected_attempts"]]
    assert with_rejected and all(a["rationale"] for r in with_rejected for a in r["rejected_attempts"])

    tid = rows[0]["id"]
    ok = client.post("/api/reviews", json={"trace": tid, "action": "reject", "reviewer": "ann", "reason": "quotes"})
    assert ok.status_code == 200 and ok.json()["trace"]["status"] == "rejected"
    assert client.get(f"/api/traces/{tid}", params={"reviewer": "ann"}).json()["status"] == "rejected"
    assert client.get("/api/traces", params={"status": "rejected", "reviewer": "ann"}).json()["traces"][0]["id"] == tid
    summary = client.get("/api/summary").json()
    assert summary["counts"]["rejected"] == 1 and summary["reviewers"] == ["ann"]

    n_lines = len(read_jsonl(run / "reviews.jsonl"))
    bad = [({"trace": "nope|blind|0", "action": "accept", "reviewer": "ann"}, 404, "unknown trace id"),
           ({"trace": tid, "action": "approve", "reviewer": "ann"}, 422, "action"),
           ({"trace": tid, "action": "accept", "reviewer": ""}, 422, "reviewer"),
           ({"trace": tid, "action": "edit", "reviewer": "ann", "rationale": "  "}, 422, "needs the new rationale")]
    for body, status, why in bad:
        resp = client.post("/api/reviews", json=body)
        assert resp.status_code == status and why in resp.json()["error"], (body, resp.text)
        assert "\n" not in resp.json()["error"]
    assert client.get("/api/traces", params={"label": "great"}).status_code == 422
    assert client.get("/api/traces/nope|x|1").status_code == 404
    form = client.post("/api/reviews", content=json.dumps({"trace": tid, "action": "accept", "reviewer": "ann"}),
                       headers={"Content-Type": "text/plain"})  # what a cross-site form or simple request sends
    assert form.status_code == 415
    elsewhere = TestClient(client.app, base_url="http://evil.example")  # a rebound name: not the loopback
    assert elsewhere.get("/api/reviews").status_code == 400
    assert len(read_jsonl(run / "reviews.jsonl")) == n_lines  # nothing written by bad input


def test_a_scripted_policy_through_the_endpoints_rejects_every_trace_that_states_its_label(run):
    mixed_leaks(run)
    store = ReviewStore(run)
    with Server(create_app(store, reviewer="policy")) as server:
        counts = reject_label_leaks(server.url, "policy")
    leaking = {t["id"] for t in store.traces if states_label(t["rationale"], store.label_set, t["label"])}
    assert counts == {"rejected": len(leaking), "accepted": len(store.traces) - len(leaking)}
    lines = read_jsonl(run / "reviews.jsonl")
    assert {r["trace"] for r in lines if r["action"] == "reject"} == leaking
    assert all(r["source"] == "policy:reject-label-leaks" for r in lines)
    kept, summary = ReviewStore(run).reviewed_traces()
    assert not any(states_label(t["rationale"], store.label_set, t["label"]) for t in kept)
    assert summary["rejected"] == len(leaking) and summary["unreviewed"] == 0


def test_the_policy_command(run, capsys):
    assert review_main([str(run), "--policy", "reject-label-leaks"]) == 0
    assert "rejected" in capsys.readouterr().out
    assert len(read_jsonl(run / "reviews.jsonl")) == len(ReviewStore(run).traces)


# -- Label Studio --------------------------------------------------------------------------------------------------

def test_label_studio_export_and_import(run, tmp_path):
    store = ReviewStore(run)
    assert review_main([str(run), "--export", str(tmp_path / "tasks.json")]) == 0
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert "<Choices name=\"verdict\"" in (tmp_path / "tasks.json.config.xml").read_text()
    assert [t["data"]["trace_id"] for t in tasks] == [t["id"] for t in store.traces]
    assert to_label_studio(store)["tasks"] == tasks

    def annotation(email, verdict, reason="", edited=None):
        result = [{"from_name": "verdict", "to_name": "rationale", "type": "choices", "value": {"choices": [verdict]}}]
        if reason:
            result.append({"from_name": "reason", "to_name": "rationale", "type": "textarea", "value": {"text": [reason]}})
        if edited:
            result.append({"from_name": "edited", "to_name": "rationale", "type": "textarea", "value": {"text": [edited]}})
        return {"completed_by": {"email": email}, "result": result}

    human = tasks[2]["data"]["human"]
    tasks[0]["annotations"] = [annotation("ann@x", "reject", "restates the guideline"), annotation("bob@x", "accept")]
    tasks[1]["annotations"] = [annotation("ann@x", "accept"), annotation("bob@x", "accept")]
    tasks[2]["annotations"] = [annotation("ann@x", "edit", "clearer", edited=f"the cue is {human}")]
    bad = json.loads(json.dumps(tasks))
    bad[3]["data"]["trace_id"] = "nope|blind|0"
    bad[3]["annotations"] = [annotation("ann@x", "accept")]
    with pytest.raises(ReviewError, match="unknown trace"):
        from_label_studio(store, bad, judge=FakeJudge())
    assert not (run / "reviews.jsonl").exists()  # checked first, nothing written
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    assert review_main([str(run), "--import", str(tmp_path / "export.json")]) == 0  # the run's own judge
    fresh = ReviewStore(run)
    assert fresh.reviewers() == ["ann@x", "bob@x"] and len(fresh.reviews) == 5
    assert all(r.source == "import:label-studio" for r in fresh.reviews)
    assert fresh.effective("ann@x")[tasks[2]["data"]["trace_id"]].judge.agrees
    assert fresh.agreement(n_boot=20)["disagreements"] == 1


# -- the reviewed resume -------------------------------------------------------------------------------------------

def test_a_reviewed_resume_changes_sft_rows_and_demos_and_reports_reviewed_vs_raw(run, spec):
    store = ReviewStore(run)
    raw_demos = select_demos(store.traces, store.label_set, 2)
    rejected = {d["key"] for d in raw_demos}
    judge = RunJudge(run, store.label_set)
    edited = next(t for t in store.traces if t["key"] not in rejected)
    for t in store.traces:
        if t["key"] in rejected:
            store.new_review(t["id"], "reject", "ann", reason="demo quotes its label")
    store.new_review(edited["id"], "edit", "ann", rationale=f"a plain reading: {edited['human']}", judge=judge)
    assert compile_main([str(spec), "--resume", str(run), "--reviewer", "ann"]) == 2  # --reviewer needs --reviewed
    assert compile_main([str(spec), "--resume", str(run), "--reviewed"]) == 0
    rows = read_jsonl(run / "reviewed" / "sft.jsonl")
    raw_rows = read_jsonl(run / "sft.jsonl")
    assert len(raw_rows) == len(store.traces) and len(rows) == len(store.traces) - len(rejected)
    assert not rejected & {r["key"] for r in rows}
    edited_row = next(r for r in rows if r["key"] == edited["key"])
    assert f"a plain reading: {edited['human']}" in edited_row["messages"][-1]["content"]
    metrics = json.loads((run / "metrics.json").read_text())
    review = metrics["traces"]["reviewed"]
    assert review["rejected"] == len(rejected) and review["edited"] == 1 and review["reviewer"] == "ann"
    assert review["demo_keys"] and not set(review["demo_keys"]) & rejected
    test = metrics["splits"]["test"]
    assert "kw+reviewed-demos" in test["raters"]
    assert {(c["a"], c["b"]) for c in test["comparisons"]} >= {("kw+demos", "kw+reviewed-demos"),
                                                                ("kw", "kw+reviewed-demos")}
    report = (run / "report.md").read_text()
    assert "reviewed vs raw traces as few-shot demos" in report and "Reviewed vs raw traces:" in report
    assert f"{len(rejected)} rejected, 1 edited" in report


def test_a_reviewed_resume_without_reviews_is_refused(run, spec, capsys):
    assert compile_main([str(spec), "--resume", str(run), "--reviewed"]) == 2
    err = capsys.readouterr().err
    assert "holds no review yet" in err
    assert compile_main([str(spec), "--reviewed"]) == 2
    assert "needs --resume" in capsys.readouterr().err


def test_the_app_sees_another_writers_reviews_and_stops_on_a_file_tampered_while_it_runs(run):
    client = TestClient(create_app(ReviewStore(run), judge=FakeJudge(), reviewer="ann"), base_url="http://127.0.0.1")
    other = ReviewStore(run)  # e.g. a second server, or an import, on the same folder
    tid = other.traces[0]["id"]
    other.new_review(tid, "reject", "bob", reason="from elsewhere")
    assert [r["reviewer"] for r in client.get("/api/reviews").json()["reviews"]] == ["bob"]
    assert client.get("/api/summary").json()["reviewers"] == ["bob"]
    assert client.post("/api/reviews", json={"trace": tid, "action": "accept", "reviewer": "ann"}).status_code == 200
    assert [r.reviewer for r in ReviewStore(run).reviews] == ["bob", "ann"]
    with open(run / "reviews.jsonl", "a") as fh:
        fh.write("{broken\n")
    before = (run / "reviews.jsonl").read_bytes()
    resp = client.post("/api/reviews", json={"trace": tid, "action": "accept", "reviewer": "ann"})
    assert resp.status_code == 409 and "line 3: not JSON" in resp.json()["error"]
    assert (run / "reviews.jsonl").read_bytes() == before


def test_the_review_command_serves_the_app_on_the_loopback(run, capsys):
    """`thinktrace review RUN_DIR --port P` as a user starts it: the page and the endpoints answer on 127.0.0.1."""
    import subprocess
    import sys
    import time
    import urllib.request

    from thinktrace.review.cli import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "thinktrace.cli", "review", str(run), "--port", str(port),
                             "--reviewer", "ann"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        summary = None
        for _ in range(300):  # up to ~30 s for the imports on a busy machine
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/summary", timeout=2) as resp:
                    summary = json.loads(resp.read())
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        assert summary is not None, proc.stderr.read() if proc.poll() is not None else "no answer"
        assert summary["counts"]["traces"] == len(ReviewStore(run).traces)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert 'value="ann"' in resp.read().decode()
        assert review_main([str(run), "--port", str(port)]) == 2
        assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
    finally:
        proc.terminate()
        proc.wait(timeout=30)
