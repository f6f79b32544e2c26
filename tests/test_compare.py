"""python -m thinktrace.compare: one table over runs and variants, paired only where the test items coincide."""

import json
import os
import re
import subprocess
import sys

import pytest
from support import read_jsonl
from support.toy_runs import add_later_stages, compile_run

from thinktrace.agreement import paired_difference
from thinktrace.compare import compare, main
from thinktrace.labels import LabelSet
from thinktrace.runview import RunView

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """r1, r2: same items (k differs), both with a trace-sft variant; r3: another seed, so other test items."""
    tmp = tmp_path_factory.mktemp("cmp")
    r1 = add_later_stages(compile_run(tmp, "r1"))
    r2 = add_later_stages(compile_run(tmp, "r2", **{"sampling.k": 2}))
    r3 = compile_run(tmp, "r3", seed=3)
    return r1, r2, r3


def rows_by(comp):
    return {(r["run"], r["variant"]): r for r in comp.rows}


def test_same_items_are_paired_within_and_across_runs(runs):
    r1, r2, _ = runs
    comp = compare([RunView(r1), RunView(r2)])
    assert not comp.notes
    rows = rows_by(comp)
    assert set(rows) == {("toy/r1", "kw"), ("toy/r1", "kw-sft"), ("toy/r2", "kw"), ("toy/r2", "kw-sft")}
    sft = rows[("toy/r1", "kw-sft")]
    assert sft["kind"] == "trace-sft" and sft["vs_baseline_note"] == "vs kw"
    # the same paired bootstrap, recomputed from the prediction records
    preds = read_jsonl(r1 / "predictions.jsonl")
    items = json.loads((r1 / "data.json").read_text())["splits"]["test"]
    lab = {(p["rater"], p["item_id"]): p["label"] for p in preds}
    human = {p["item_id"]: p["human"] for p in preds}
    spec_boot = 50  # toy_spec evaluate.bootstrap
    want = paired_difference([human[i] for i in items], [lab[("kw", i)] for i in items],
                             [lab[("kw-sft", i)] for i in items], LabelSet.of(["negative", "neutral", "positive"]),
                             n_boot=spec_boot, seed=0)
    assert sft["vs_baseline"]["diff"] == pytest.approx(want["diff"]) and want["diff"] < 0
    assert sft["vs_baseline"]["ci"] == pytest.approx(want["ci"])
    assert rows[("toy/r1", "kw")]["vs_baseline"] is None and rows[("toy/r1", "kw")]["vs_baseline_note"] == "(baseline)"
    # across runs: the fake rater is deterministic at temperature 0, so r2 - r1 is exactly 0 for both variants
    for v in ("kw", "kw-sft"):
        assert rows[("toy/r2", v)]["vs_first"]["diff"] == pytest.approx(0.0)
        assert rows[("toy/r2", v)]["vs_first"]["n"] == 10
    assert rows[("toy/r1", "kw")]["vs_first"] is None


def test_different_items_are_listed_but_not_paired(runs, capsys):
    r1, _, r3 = runs
    assert main([str(r1), str(r3), "--n-boot", "20"]) == 0
    out = capsys.readouterr().out
    assert "runs toy/r1 and toy/r3 have different test items: not paired" in out
    row = next(line for line in out.splitlines() if line.startswith("| toy/r3 | kw |"))
    assert "not paired" in row and "[" in row  # α with its CI is still listed
    comp = compare([RunView(r1), RunView(r3)], n_boot=20)
    assert rows_by(comp)[("toy/r3", "kw")]["vs_first"] is None


def test_markdown_and_html(runs, tmp_path, capsys):
    r1, r2, r3 = runs
    out_html = tmp_path / "sub" / "cmp.html"
    assert main([str(r1), str(r2), str(r3), "--html", str(out_html)]) == 0
    cap = capsys.readouterr()
    md = cap.out
    assert "| run | variant | kind | rater |" in md and "## Runs and cost" in md
    assert re.search(r"\| toy/r1 \| kw-sft \| trace-sft \| kw \| 0\.510 \[0\.200, 0\.800\] \| 10 \| 90\.0% \| -0\.\d{3} \[", md)
    assert re.search(r"\| toy/r2 \| kw \| .*\| \+0\.000 \[\+0\.000, \+0\.000\]", md)
    cost = [line for line in md.splitlines() if line.startswith("| 1 | toy/r1 |")][0].split(" | ")
    metrics = json.loads((r1 / "metrics.json").read_text())
    wall = sum(float(str(v).split()[0]) for v in metrics["timing"].values())  # incl. finetune 12.5 s, guidelines 3.5
    n_calls = sum(1 for _ in (r1 / "predictions.jsonl").open()) + sum(1 for _ in (r1 / "attempts.jsonl").open())
    assert cost[3:5] == ["10", str(n_calls)] and cost[7] == f"{wall:.1f} s"
    assert cost[8] == f"{100 * metrics['traces']['acceptance_rate']:.1f}%"
    html = out_html.read_text()
    assert '<img class="plot" alt="alpha forest plot" src="data:image/png;base64,' in html
    assert html.count("<tr>") >= 1 + 5 + 1 + 3  # variant rows and run rows with their headers
    assert "runs toy/r1 and toy/r3 have different test items: not paired" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", html, re.I)
    assert "<script" not in html.lower()


@pytest.mark.parametrize("bad", ["missing", "file", "empty_dir", "bad_json"])
def test_bad_path_exits_2_with_one_line(runs, tmp_path, capsys, bad):
    path = tmp_path / bad
    if bad == "file":
        path.write_text("x")
    elif bad == "empty_dir":
        path.mkdir()
    elif bad == "bad_json":
        path.mkdir()
        (path / "metrics.json").write_text("{not json")
    assert main([str(runs[0]), str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and err.startswith("error: ")


def test_cli_bad_path_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "thinktrace.compare", str(tmp_path / "nope")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope'}: no such run folder"
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_a_comparison_carries_its_resample_count_and_prints_an_undefined_ci_as_undefined(runs):
    from thinktrace.compare import fmt_delta_alpha

    r1, r2, _ = runs
    sft = rows_by(compare([RunView(r1), RunView(r2)]))[("toy/r1", "kw-sft")]["vs_baseline"]
    assert sft["n_boot"] == 50 and sft["n_valid"] <= 50 and sft["ci_undefined"] == (sft["n_valid"] < 47.5)
    undefined = {"diff": -0.1, "ci": [None, None], "p": 0.9, "n": 150, "n_boot": 1000, "n_valid": 646,
                 "ci_undefined": True}
    assert fmt_delta_alpha(undefined) == "-0.100 [CI undefined (646/1000 valid resamples)] p=0.900"
    assert fmt_delta_alpha({"diff": -0.1, "ci": [-0.2, 0.0], "p": 0.9}) == "-0.100 [-0.200, +0.000] p=0.900"  # old


def test_match_pairs_a_later_runs_rater_with_another_rater_of_the_first_run(runs, capsys):
    r1, r2, _ = runs
    comp = compare([RunView(r1), RunView(r2)], match=[("kw-sft", "kw")])
    rows = rows_by(comp)
    # r2's kw is paired with r1's kw-sft: the reverse of r1's own kw-sft - kw (the fake rater repeats itself)
    mapped = rows[("toy/r2", "kw")]
    assert mapped["vs_first_note"] == "vs toy/r1 kw-sft"
    assert mapped["vs_first"]["diff"] == pytest.approx(-rows[("toy/r1", "kw-sft")]["vs_baseline"]["diff"])
    assert rows[("toy/r2", "kw-sft")]["vs_first"]["diff"] == pytest.approx(0.0)  # not `kw+...`: its own name
    assert main([str(r1), str(r2), "--match", "kw-sft=kw", "--n-boot", "20"]) == 0
    assert "vs toy/r1 kw-sft" in capsys.readouterr().out
    assert main([str(r1), str(r2), "--match", "kw-sft"]) == 2
    assert "--match takes FIRST=OTHER" in capsys.readouterr().err
