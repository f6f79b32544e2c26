"""Use 2 end to end: traces -> refined guideline -> raters re-evaluated with it on test, paired to the original."""

import json

from specs import TESTS, toy_spec, write_spec

from thinktrace.compile import main


def spec():
    rater = {"provider": "python", "model": f"{TESTS / 'fake_engines.py'}:guideline_aware", "cache": False}
    return toy_spec(**{"models.raters": [dict(rater, name="a"), dict(rater, name="b")],
                       "guidelines": {"enabled": True, "candidates": 1, "rounds": 1}})


def test_refined_guideline_is_written_compiled_and_evaluated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main([str(write_spec(tmp_path, spec())), "--out", str(out)]) == 0
    assert "RULE" in (out / "guideline.md").read_text()
    assert "RULE" not in (out / "guideline.original.md").read_text()
    for name in ("a", "b"):
        program = json.loads((out / "programs" / f"{name}.json").read_text())
        assert "RULE" in json.dumps(program)
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["splits"]["test"]
    assert {"a+refined", "b+refined"} <= set(test["raters"])
    assert test["raters"]["a+refined"]["alpha"]["value"] > test["raters"]["a"]["alpha"]["value"]
    pairs = {(c["a"], c["b"]) for c in test["comparisons"]}
    assert {("a", "a+refined"), ("b", "b+refined")} <= pairs
    assert set(test["inter_rater"]) >= {"baseline", "refined-guideline"}
    assert not metrics["guidelines"]["kept_original"]
    report = (out / "report.md").read_text()
    assert "Guideline refinement" in report and "a+refined − a" in report
