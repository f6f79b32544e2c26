"""benchmarks/guidelines.py: resumable runs per corpus and the published table (fake engines, a toy corpus)."""

from __future__ import annotations

import json
from pathlib import Path

from support import benchmark
from support.specs import fake_model, toy_spec, write_spec

ROOT = Path(__file__).resolve().parent.parent


def bench():
    return benchmark("guidelines")


def toy(tmp_path: Path) -> Path:
    rater = {"provider": "python", "model": fake_model("guideline_aware"), "cache": False}
    s = toy_spec(**{"models.raters": [dict(rater, name="a"), dict(rater, name="b")],
                    "guidelines": {"enabled": True, "candidates": 1, "rounds": 1}})
    s["name"] = "guidelines-toy"
    s["sampling"]["max_demos"] = 2
    return write_spec(tmp_path, s)


def test_a_complete_run_is_not_rerun_and_the_table_has_ids_not_text(tmp_path):
    b = bench()
    spec = toy(tmp_path)
    run, code, _ = b.run_corpus(spec, tmp_path / "runs")
    assert code == 0 and b.is_complete(run) and run.name == "guidelines-toy"
    stamp = (run / "metrics.json").stat().st_mtime_ns
    again, code, seconds = b.run_corpus(spec, tmp_path / "runs")
    assert again == run and code == 0 and seconds == 0.0 and (run / "metrics.json").stat().st_mtime_ns == stamp
    b.record(run, tmp_path / "out", "toy")
    table = b.build_table(b.recorded_rows(tmp_path / "out"), tmp_path / "out")
    row = table["corpora"]["toy"]
    comps = row["raters"]["a"]
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["splits"]["test"]
    truth = next(c for c in test["comparisons"] if c["a"] == "a" and c["b"] == "a+compiled")
    assert comps["compiled vs original zero-shot"]["diff"] == truth["diff"]
    assert set(comps) == {"compiled vs original zero-shot", "compiled vs demos alone",
                          "compiled vs refined guideline alone", "refined guideline vs original"}
    assert all(v is not None for v in comps.values())
    assert row["inter_rater"]["change"]["n"] == test["n_items"]
    assert row["selection"]["chosen"] and row["power"]["n_dev"] > 0 and row["overlap"]
    md = (tmp_path / "out" / "guidelines.md").read_text()
    assert (tmp_path / "out" / "guidelines.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| toy | a |" in md and ("**not reached**" in md or "**open: 1 of 3 corpora measured**" in md)
    texts = [json.loads(line)["item"] for line in (run / "traces.jsonl").read_text().splitlines()]
    assert texts and not any(t in md or t in (tmp_path / "out" / "guidelines.json").read_text() for t in texts)


def test_the_goal_needs_two_corpora_and_no_refined_loss():
    b = bench()
    win = {"diff": 0.2, "ci": [0.05, 0.3]}
    flat = {"diff": 0.0, "ci": [-0.1, 0.1]}
    loss = {"diff": -0.2, "ci": [-0.3, -0.05]}

    def row(compiled, refined):
        return {"raters": {"q": {"compiled vs original zero-shot": compiled, "refined guideline vs original": refined}}}
    assert b.goal({"v": row(win, flat), "c": row(win, flat), "n": row(flat, flat)})["q"]["reached"]
    assert not b.goal({"v": row(win, flat), "c": row(win, flat), "n": row(flat, loss)})["q"]["reached"]
    assert not b.goal({"v": row(win, flat), "c": row(flat, flat), "n": row(flat, flat)})["q"]["reached"]
    assert b.goal({"v": row(win, flat), "c": row(flat, flat), "n": row(flat, flat)})["q"]["verdict"] == "not reached"
    assert b.goal({"v": row(win, flat)})["q"]["verdict"] == "open: 1 of 3 corpora measured"
    assert b.goal({"v": row(flat, flat), "c": row(flat, flat)})["q"]["verdict"] == "not reached"
    assert b.goal({"v": row(win, loss)})["q"]["verdict"] == "not reached"


def test_a_flagged_side_is_marked_in_the_table_and_named_by_the_goal():
    """A Δα against a collapsed rater still counts (its α is its agreement), but the table marks it and says why."""
    b = bench()
    win = {"diff": 0.2, "ci": [0.05, 0.3], "ci_undefined": False}
    flat = {"diff": 0.0, "ci": [-0.1, 0.1], "ci_undefined": False}
    comps = {"compiled vs original zero-shot": win, "compiled vs demos alone": flat,
             "compiled vs refined guideline alone": flat, "refined guideline vs original": flat}
    row = {"raters": {"q": comps}, "flags": {"q": "collapsed: answers 5 for 160/168 items"}, "n_test": 168,
           "inter_rater": {"original": None, "compiled": None, "change": None}, "power": {}, "selection": {},
           "runtime_total_s": 1.0, "rule_faults": None, "overlap": None, "writer": {"calls": 0, "fallbacks": 0}}
    goals = b.goal({"n": row})
    assert goals["q"]["compiled_beats_original"] == ["n"] and goals["q"]["flagged"] == ["n (compiled vs original)"]
    md = b.markdown({"n": row}, goals)
    assert "| n | q | +0.200 [+0.050, +0.300] ⚑ | +0.000 [-0.100, +0.100] |" in md
    assert "Flagged: n q: collapsed: answers 5 for 160/168 items." in md
    assert "counted with a flagged side (⚑): n (compiled vs original)" in md
    plain = dict(row, flags={})
    assert "| n | q | +0.200 [+0.050, +0.300] |" in b.markdown({"n": plain}, b.goal({"n": plain}))
    assert "flagged" not in b.goal({"n": plain})["q"]


def test_a_recorded_corpus_survives_its_run_folder_and_is_published_by_id(tmp_path, monkeypatch):
    """A corpus takes hours: once complete, its row and its published results outlive the run folder, and the
    benchmark does not run it again; a corpus not shipped with the code is published without item text."""
    import shutil

    b = bench()
    spec = toy(tmp_path)
    run, code, _ = b.run_corpus(spec, tmp_path / "runs")
    assert code == 0
    monkeypatch.setattr(b, "SPECS", tmp_path)
    monkeypatch.setattr(b, "CORPORA", ("toy",))
    shutil.copy(spec, tmp_path / "toy.yaml")
    out, results, docs = tmp_path / "out", tmp_path / "results", tmp_path / "docs"
    args = ["--corpus", "toy", "--runs", str(tmp_path / "runs"), "--out", str(out), "--results", str(results),
            "--docs", str(docs), "--figure", str(tmp_path / "fig.png"), "--table-only"]
    assert b.main(args) == 0
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    published = results / "guidelines-toy"
    assert (published / "metrics.json").exists() and (published / "summary.md").exists()
    assert not (published / "report.md").exists() and not (published / "attempts.jsonl").exists()
    assert (docs / "guidelines-toy.md").exists() and not b.is_public(spec)
    shutil.rmtree(run)
    calls = []
    monkeypatch.setattr(b, "run_corpus", lambda *a: calls.append(a) or (run, 1, 0.0))
    assert b.main(args[:-1]) == 0 and not calls  # recorded: not run again
    table = json.loads((out / "guidelines.json").read_text())
    assert list(table["corpora"]) == ["toy"] and table["corpora"]["toy"]["raters"]["a"]
    (out / "guidelines" / "toy.json").unlink()
    assert b.main(args[:-1]) == 3 and len(calls) == 1  # no row, no run: it runs (here: fails) again


def test_the_committed_table_is_what_the_recorded_rows_render():
    """benchmarks/results/guidelines.md (quoted by the docs) says what the recorded rows say, nothing more."""
    b = bench()
    out = ROOT / "benchmarks" / "results"
    rows = b.recorded_rows(out)
    if not rows:
        assert not (out / "guidelines.md").exists(), "a table without recorded rows"
        return
    assert (out / "guidelines.md").read_text(encoding="utf-8") == b.markdown(rows, b.goal(rows)), (
        "benchmarks/results/guidelines.md is stale: run `python benchmarks/guidelines.py --table-only`")
    assert json.loads((out / "guidelines.json").read_text(encoding="utf-8"))["corpora"] == rows
