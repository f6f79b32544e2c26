"""A stage's footprint: its own peak memory (not the process's peak so far), and the local models' tokens it used."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from thinktrace.run import footprint
from thinktrace.run.footprint import StageFootprint


@pytest.mark.skipif(not sys.platform.startswith("linux") or not Path("/proc/self/clear_refs").exists(),
                    reason="a per-stage peak needs Linux's /proc/self/clear_refs")
def test_each_stage_has_its_own_peak():
    big = StageFootprint.start()
    block = bytearray(300 * 1024 * 1024)  # 300 MiB, touched
    for i in range(0, len(block), 4096):
        block[i] = 1
    del block
    footprint.trim_heap()
    big = big.stop(1.0)
    small = StageFootprint.start().stop(1.0)
    assert big.peak_rss_mib - small.peak_rss_mib > 200, (big, small)


def test_tokens_are_the_stage_own(monkeypatch):
    totals = {"m": {"calls": 3, "input_tokens": 300, "cached_tokens": 200, "output_tokens": 30, "load_s": 1.5}}
    monkeypatch.setattr("thinktrace.lm.llamacpp.engine_stats", lambda: {k: dict(v) for k, v in totals.items()})
    fp = StageFootprint.start()
    totals["m"] = {"calls": 5, "input_tokens": 500, "cached_tokens": 260, "output_tokens": 45, "load_s": 1.5}
    totals["n"] = {"calls": 1, "input_tokens": 10, "cached_tokens": 0, "output_tokens": 2, "load_s": 0.75}
    rec = fp.stop(2.5).record()
    assert rec["calls"] == 3 and rec["prompt_tokens"] == 210 and rec["cached_prompt_tokens"] == 60
    assert rec["generated_tokens"] == 17 and rec["seconds"] == 2.5
    assert rec["load_seconds"] == 0.75  # the model this stage loaded, not the one loaded before it
    assert set(rec) == {"seconds", "peak_rss_mib", "children_peak_rss_mib", "calls", "prompt_tokens",
                        "cached_prompt_tokens", "generated_tokens", "load_seconds"}


def test_a_child_process_peak_is_the_stage_own():
    from thinktrace._child import call_in_child

    import resource

    mib = 200 + int(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)  # above any earlier child
    fp = StageFootprint.start()
    call_in_child(_allocate, mib)
    rec = fp.stop(1.0).record()
    assert rec["children_peak_rss_mib"] is not None and rec["children_peak_rss_mib"] > mib
    assert StageFootprint.start().stop(1.0).children_peak_rss_mib is None  # no child in this one


def _allocate(mib: int) -> int:
    block = bytearray(mib * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block)


def test_a_footprint_adds_the_earlier_sessions_and_keeps_their_peaks():
    now = StageFootprint(seconds=2.0, peak_rss_mib=400.0, calls=1, prompt_tokens=10, generated_tokens=3)
    earlier = {"seconds": 600.0, "peak_rss_mib": 2100.0, "children_peak_rss_mib": 3000.0, "calls": 470,
               "prompt_tokens": 1000, "cached_prompt_tokens": 900, "generated_tokens": 80, "load_seconds": 9.5}
    rec = now.merged(earlier).record()
    assert rec == {"seconds": 602.0, "peak_rss_mib": 2100.0, "children_peak_rss_mib": 3000.0, "calls": 471,
                   "prompt_tokens": 1010, "cached_prompt_tokens": 900, "generated_tokens": 83, "load_seconds": 9.5}
    assert now.merged(None) is now and now.merged({"peak_rss_mib": "x"}).peak_rss_mib == 400.0  # torn: ignored


def test_a_resume_that_finds_the_stages_done_keeps_what_they_cost_when_they_ran(tmp_path):
    import json

    from support.specs import toy_spec, write_spec

    from thinktrace.compile import main

    spec, out = write_spec(tmp_path, toy_spec(), "toy.yaml"), tmp_path / "run"
    assert main([str(spec), "--out", str(out)]) == 0
    journal = json.loads((out / "footprints.json").read_text())
    assert set(journal) >= {"traces", "evaluate"}
    journal["evaluate"].update(peak_rss_mib=99999.0, calls=1234)  # what a heavy first session would have left
    (out / "footprints.json").write_text(json.dumps(journal))
    first = json.loads((out / "metrics.json").read_text())["stages"]["evaluate"]
    assert main([str(spec), "--resume", str(out)]) == 0
    stages = json.loads((out / "metrics.json").read_text())
    assert stages["stages"]["evaluate"]["peak_rss_mib"] == 99999.0 and stages["peak_rss_mib"]["evaluate"] == 99999
    assert stages["stages"]["evaluate"]["calls"] == 1234 + 0  # the resume rated nothing anew
    assert stages["stages"]["evaluate"]["seconds"] >= first["seconds"]  # the sessions add up
