"""Issue 23, honest measurement: a rater that never answers a label is a failed variant (exit 4, flagged at the top
of the report), and a rater that answers (almost) one label is flagged as collapsed, relative to how spread the
gold labels are (a concentrated gold is no collapse)."""

import json

from support.specs import fake_model, toy_spec, write_spec

from thinktrace.compile import EXIT_FAILURES, main
from thinktrace.data import Corpus, Item
from thinktrace.labels import LabelSet
from thinktrace.metrics import collapse, split_metrics
from thinktrace.report.flags import variant_flags
from thinktrace.runview import RunView

KW = {"name": "kw", "provider": "python", "model": fake_model("keyword_rater"), "cache": False}


def rater(name, engine):
    return {"name": name, "provider": "python", "model": fake_model(engine), "cache": False}


def compile_toy(tmp_path, raters, *args, **extra):
    spec = write_spec(tmp_path, toy_spec(**{"models.raters": raters, "sampling.enabled": False, **extra}))
    out = tmp_path / "run"
    return main([str(spec), "--out", str(out), *args]), out


# -- the collapse rule ---------------------------------------------------------------------------------------

def test_collapse_is_relative_to_the_gold_spread():
    labels = ["0", "1", "2", "3"]
    spread = ["0"] * 31 + ["1"] * 40 + ["2"] * 40 + ["3"] * 39  # gold: the top label 27 % of 150
    c = collapse(spread, ["1"] * 149 + ["2"], labels)
    assert c["collapsed"] and (c["top_label"], c["top_count"], c["n"]) == ("1", 149, 150)
    assert c["gold_top_share"] == round(40 / 150, 4) and c["threshold"] == 0.9
    assert not collapse(spread, ["1"] * 134 + ["2"] * 16, labels)["collapsed"]  # 89 %: spread enough
    convabuse = ["1"] * 78 + ["0"] * 10 + ["2"] * 8 + ["3"] * 4  # gold 78 % one label
    assert not collapse(convabuse, ["1"] * 90 + ["0"] * 10, labels)["collapsed"]  # 90 % vs 78 %: not far less spread
    assert collapse(convabuse, ["1"] * 95 + ["0"] * 5, labels)["collapsed"]  # 95 %: a quarter of the gold's spread
    assert collapse(convabuse, ["1"] * 95 + ["0"] * 5, labels)["threshold"] == round(1 - 0.22 / 3, 4)
    assert collapse(convabuse, [None] * 100, labels) is None  # nothing parsed: nothing to say
    assert not collapse(convabuse, ["1"] * 95 + ["0"] * 5, labels, spread=0.2)["collapsed"]  # the knob


def test_split_metrics_parse_rate_and_collapse():
    ls = LabelSet.of(["neg", "neu", "pos"], "nominal")
    gold = ["neg", "neu", "pos"] * 10
    items = [Item(f"t{i:02d}", f"text {i}", g, [g], ["h0"], "test") for i, g in enumerate(gold)]
    records = []
    for i, it in enumerate(items):
        records.append({"item_id": it.item_id, "split": "test", "rater": "good", "label": it.label})
        records.append({"item_id": it.item_id, "split": "test", "rater": "flat", "label": "pos"})
        # mute: 3 LM errors (not answers), 25 unparsed answers, 2 parsed
        err = "LMInvalidRequestError: 400" if i < 3 else None
        records.append({"item_id": it.item_id, "split": "test", "rater": "mute", "error": err,
                        "label": "neg" if i in (3, 4) else None})
    corpus = Corpus(items=items, label_set=ls, per_annotator=False, stats={})
    doc = split_metrics(corpus, "test", items, records, n_boot=0, seed=0, aggregate="majority")
    good, flat, mute = (doc["raters"][n] for n in ("good", "flat", "mute"))
    assert (good["n_answers"], good["parse_rate"], good["parse_failed"]) == (30, 1.0, False)
    assert not good["collapse"]["collapsed"] and good["collapse"]["gold_top_share"] == round(1 / 3, 4)
    assert flat["collapse"] == {"top_label": "pos", "top_count": 30, "n": 30, "share": 1.0, "gold_top_label": "neg",
                                "gold_top_share": round(1 / 3, 4), "threshold": 0.9, "collapsed": True}
    assert not flat["parse_failed"]
    assert (mute["n_answers"], mute["parse_rate"], mute["parse_failed"]) == (27, round(2 / 27, 4), True)
    lenient = split_metrics(corpus, "test", items, records, n_boot=0, seed=0, aggregate="majority",
                            min_parse_rate=0.0, collapse_share=1.0, collapse_spread=0.0)["raters"]
    assert not lenient["mute"]["parse_failed"] and lenient["flat"]["collapse"]["collapsed"]  # 100 % >= 1.0
    assert not lenient["good"]["collapse"]["collapsed"]


# -- through a compile ---------------------------------------------------------------------------------------

def test_a_rater_that_never_answers_a_label_fails_the_run(tmp_path, monkeypatch, capsys):
    """The SmolLM2 case: every answer recites the label set, 0 parsed, α n/a; the run finishes and exits 4."""
    monkeypatch.chdir(tmp_path)
    code, out = compile_toy(tmp_path, [KW, rater("lister", "label_lister")])
    assert code == EXIT_FAILURES
    captured = capsys.readouterr()
    assert "evaluate.min_parse_rate" in captured.err and "lister parsed 0/10 answers" in captured.err
    assert "FAILED variants" in captured.out and "test lister (0/10 answers parsed)" in captured.out
    assert "LM errors 0; failed: parsed 0/10 answers" in captured.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"]["state"] == "variants_failed"
    assert metrics["status"]["failed_variants"] == [
        {"split": "test", "variant": "lister", "parsed": 0, "n_answers": 10, "parse_rate": 0.0}]
    lister, kw = metrics["splits"]["test"]["raters"]["lister"], metrics["splits"]["test"]["raters"]["kw"]
    assert (lister["parse_rate"], lister["parse_failed"], lister["collapse"]) == (0.0, True, None)
    assert (kw["parse_rate"], kw["parse_failed"], kw["collapse"]["collapsed"]) == (1.0, False, False)
    report = (out / "report.md").read_text()
    assert report.splitlines()[2].startswith("> **Failed variants:** lister parsed 0/10 answers: parse rate below "
                                             "evaluate.min_parse_rate (90%)")
    assert "failed: parsed 0/10 answers" in report  # the agreement table's flags column
    assert variant_flags(RunView(out), "test", "lister") == ["parsed 0/10 answers"]
    assert variant_flags(RunView(out), "test", "kw") == []
    assert (out / "report.html").exists()


def test_min_parse_rate_zero_accepts_a_rater_that_never_answers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out = compile_toy(tmp_path, [rater("lister", "label_lister")], "--set", "evaluate.min_parse_rate=0")
    assert code == 0
    assert json.loads((out / "metrics.json").read_text())["status"]["state"] == "complete"
    assert "Failed variants" not in (out / "report.md").read_text()


def test_a_collapsed_rater_is_flagged_not_failed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out = compile_toy(tmp_path, [KW, rater("flat", "one_label")])
    assert code == 0  # a flag, not a failure
    assert "LM errors 0; collapsed: answers positive for 10/10 items" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"]["state"] == "complete"
    c = metrics["splits"]["test"]["raters"]["flat"]["collapse"]
    assert (c["top_label"], c["top_count"], c["n"], c["collapsed"]) == ("positive", 10, 10, True)
    assert c["gold_top_share"] < 0.7
    report = (out / "report.md").read_text()
    top = report.splitlines()[2]
    assert top.startswith("> **Collapsed variants:** flat answers positive for 10/10 items (the gold's most "
                          "frequent label: ") and "kw" not in top
    assert "collapsed: answers positive for 10/10 items" in report and "| flags |" in report
    assert variant_flags(RunView(out), "test", "flat") == ["answers positive for 10/10 items"]
    assert variant_flags(RunView(out), "test", "kw") == []


def test_fine_raters_get_no_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out = compile_toy(tmp_path, [KW])
    assert code == 0
    assert capsys.readouterr().out.split("test kw:", 1)[1].splitlines()[0].endswith("LM errors 0")
    report = (out / "report.md").read_text()
    assert "Failed variants" not in report and "Collapsed variants" not in report and "flags" not in report
    assert report.splitlines()[2].startswith("*run folder ")
