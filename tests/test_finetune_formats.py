"""`finetune.format` (rationale_then_label | multitask | label_then_rationale) and `finetune.ablation_label_all`:
the rows each format trains on, the same steps for every format, the variants the plan names and the run evaluates
(multitask rated by its label alone, label-first with the label first), the paired comparisons and findings rows,
rows per label. Fake teacher engines; fine-tuning runs on a tiny random checkpoint."""

from __future__ import annotations

import json

import pytest
from support import read_jsonl
from support.specs import FAKE_ENGINES, toy_spec, write_spec
from support.tiny_model import children_in_process

from thinktrace.compile import main
from thinktrace.finetune import FinetuneConfig, plan_steps
from thinktrace.finetune.formats import FORMAT_KINDS, format_config, format_rows, rows_per_label

KINDS = ("trace-sft", "trace-sft-multitask", "trace-sft-label-first")


def traces() -> list[dict]:
    return [{"key": f"i{n}", "item_id": f"i{n}", "item": f"text {n}", "label": lab, "human": lab,
             "rationale": f"why text {n} is {lab}"} for n, lab in enumerate(["pos", "neg", "pos"])]


def signature_of(order: str):
    import sys

    from support import TESTS

    sys.path.insert(0, str(TESTS.parent))
    from programs.rater import judge_signature

    return judge_signature(order)


def answers(rows):
    return [r["messages"][-1]["content"] for r in rows]


def test_each_format_writes_the_trace_as_it_says():
    import dspy

    adapter = dspy.ChatAdapter()
    plain = format_rows("rationale_then_label", traces(), signature_of, adapter)
    first = format_rows("label_then_rationale", traces(), signature_of, adapter)
    multi = format_rows("multitask", traces(), signature_of, adapter)
    for a in answers(plain):
        assert a.index("## rationale ##") < a.index("## label ##")
    for a in answers(first):
        assert a.index("## label ##") < a.index("## rationale ##")
    assert len(plain) == len(first) == 3 and len(multi) == 6
    # multitask: label task then rationale task per trace, told apart by the prompt
    assert [r["task"] for r in multi] == ["label", "rationale"] * 3
    assert [r["item_id"] for r in multi] == ["i0", "i0", "i1", "i1", "i2", "i2"]
    label_rows, rationale_rows = multi[0::2], multi[1::2]
    from thinktrace.traces import sft_rows

    label_sft = sft_rows(traces(), signature_of("rationale_first"), adapter, with_rationale=False)
    assert [r["messages"] for r in label_rows] == [r["messages"] for r in label_sft]  # exactly label-sft's rows
    assert all("## rationale ##" not in a and "why" not in a for a in answers(label_rows))
    assert all("## label ##" not in a and "why text" in a for a in answers(rationale_rows))
    assert label_rows[0]["messages"][:-1] != rationale_rows[0]["messages"][:-1]  # distinguishable prompts
    assert rows_per_label(multi) == rows_per_label(plain) == {"neg": 1, "pos": 2}  # a trace counts once
    with pytest.raises(ValueError, match="allowed"):
        format_rows("label_only", traces(), signature_of, adapter)


def test_multitask_takes_the_steps_of_one_row_per_trace():
    cfg = FinetuneConfig(enabled=True, batch_size=4, epochs=2, max_rows=10)
    assert format_config(cfg, "rationale_then_label", 40) is cfg
    multi = format_config(cfg, "multitask", 40)
    assert multi.max_steps == plan_steps(cfg, 40) == 6  # 10 traces (max_rows) / 4 per batch x 2 epochs
    assert multi.max_rows == 20 and plan_steps(multi, 80) == plan_steps(cfg, 40)
    fixed = format_config(cfg.model_copy(update={"max_steps": 3}), "multitask", 40)
    assert fixed.max_steps == 3


def test_format_field_takes_a_name_or_a_list_and_names_what_is_allowed():
    assert FinetuneConfig(format="multitask").format == ["multitask"]
    assert FinetuneConfig().format == ["rationale_then_label"]  # today's behaviour stays the default
    assert FinetuneConfig(format=["multitask", "multitask", "label_then_rationale"]).format == \
        ["multitask", "label_then_rationale"]
    for bad, says in (("cot", "allowed: rationale_then_label, multitask, label_then_rationale"), ([], "at least")):
        with pytest.raises(ValueError, match=says):
            FinetuneConfig(format=bad)


def _plan(tmp_path, **finetune):
    from thinktrace.data import load_corpus
    from thinktrace.run.stages import plan_stages
    from thinktrace.spec import load_spec

    path = write_spec(tmp_path, toy_spec(**{"finetune": {"enabled": True, "base": "smollm2-135m", **finetune}}))
    loaded = load_spec(path)
    return plan_stages(loaded.spec, load_corpus(loaded.spec.data, loaded.base_dir, loaded.spec.seed))


def test_the_plan_names_every_format_and_the_label_all_baseline(tmp_path, capsys):
    plan = _plan(tmp_path, format=["rationale_then_label", "multitask", "label_then_rationale"],
                 ablation_label_all=True)
    assert plan["finetune"]["adapters"] == [*KINDS, "label-sft", "label-sft-all", "shuffled-trace-sft"]
    assert plan["finetune"]["formats"] == ["rationale_then_label", "multitask", "label_then_rationale"]
    assert {f"smollm2-135m+{k}" for k in [*KINDS, "label-sft-all"]} <= set(plan["evaluate"]["variants"])
    default = _plan(tmp_path)
    assert default["finetune"]["adapters"] == ["trace-sft", "label-sft", "shuffled-trace-sft"]  # as before
    only = _plan(tmp_path, format="multitask")  # the shuffled control shuffles trace-sft's rows: not trained
    assert only["finetune"]["adapters"] == ["trace-sft-multitask", "label-sft"]
    per_format = _plan(tmp_path, format=["rationale_then_label", "label_then_rationale"],
                       ablation_shuffled=["label_then_rationale"])  # a control per listed format, none for the others
    assert per_format["finetune"]["adapters"] == ["trace-sft", "trace-sft-label-first", "label-sft",
                                                  "shuffled-trace-sft-label-first"]
    assert "smollm2-135m+shuffled-trace-sft-label-first" in per_format["evaluate"]["variants"]
    from thinktrace.run.stages import FinetuneStage

    assert "shuffled-trace-sft-label-first" in FinetuneStage.against["trace-sft-label-first"]
    path = write_spec(tmp_path, toy_spec(**{"finetune": {"enabled": True, "base": "smollm2-135m",
                                                         "format": ["multitask"], "ablation_label_all": True}}))
    assert main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m+trace-sft-multitask" in out and "smollm2-135m+label-sft-all" in out


@pytest.mark.parametrize("value, error", [
    (["label_then_rationale"], "ablation_shuffled names 'label_then_rationale', which is not in format"),
    (["sideways"], "unknown format 'sideways'; allowed: true, false or a list of"),
])
def test_a_shuffled_control_of_a_format_not_trained_is_refused(tmp_path, value, error):
    from thinktrace.errors import SpecError
    from thinktrace.spec import load_spec

    path = write_spec(tmp_path, toy_spec(**{"finetune": {"enabled": True, "base": "smollm2-135m",
                                                         "ablation_shuffled": value}}))
    with pytest.raises(SpecError, match="finetune.ablation_shuffled") as err:
        load_spec(path)
    assert error in str(err.value)


def _compile(tmp_path_factory, tiny_model_dir, name: str, **finetune) -> tuple:
    """A run with the fake teacher and `finetune` settings (training on the tiny checkpoint): (run folder, metrics)."""
    work = tmp_path_factory.mktemp(name)
    spec = toy_spec(**{
        "models.generator": {"name": "teacher", "provider": "python", "model": f"{FAKE_ENGINES}:keyword_rater",
                             "cache": False},
        "sampling.k": 4, "trace_quality.enabled": False, "evaluate.bootstrap": 20, "evaluate.max_items": 4,
        "finetune": {"enabled": True, "base": str(tiny_model_dir), "epochs": 1, "save_steps": 50, "batch_size": 4,
                     "max_length": 480, "num_threads": 1, "ablation_label_all": True, **finetune}})
    path = write_spec(work, spec)
    out = work / "run"
    with children_in_process():
        assert main([str(path), "--out", str(out)]) == 0
    return out, json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    return _compile(tmp_path_factory, tiny_model_dir, "formats", ablation_shuffled=["multitask", "label_then_rationale"],
                    format=["rationale_then_label", "multitask", "label_then_rationale"])


def test_every_format_trains_the_same_items_and_steps(run):
    out, metrics = run
    ft = metrics["finetune"]
    n_traces = len(read_jsonl(out / "traces.jsonl"))
    assert 0 < n_traces
    steps = {k: ft[k]["steps"] for k in (*KINDS, "label-sft")}
    assert len(set(steps.values())) == 1, steps  # same steps for every format and the label-only ablation
    items = {k: ft[k]["trained_on"]["items"] for k in (*KINDS, "label-sft")}
    assert len(set(items.values())) == 1
    assert ft["trace-sft-multitask"]["trained_on"]["rows"] == 2 * n_traces == 2 * ft["trace-sft"]["trained_on"]["rows"]
    multi = read_jsonl(out / "sft_multitask.jsonl")
    assert [r["task"] for r in multi] == ["label", "rationale"] * n_traces
    first = read_jsonl(out / "sft_label_then_rationale.jsonl")
    assert all(r["messages"][-1]["content"].lower().index("label") <
               r["messages"][-1]["content"].lower().index("rationale") for r in first)
    per_label = ft["trace-sft"]["trained_on"]["rows_per_label"]
    assert sum(per_label.values()) == n_traces
    assert ft["trace-sft-multitask"]["trained_on"]["rows_per_label"] == per_label == \
        ft["label-sft"]["trained_on"]["rows_per_label"]


def test_label_all_trains_on_every_train_example(run):
    out, metrics = run
    info = metrics["finetune"]["label-sft-all"]["trained_on"]
    train = metrics["traces"]["examples"]
    rows = read_jsonl(out / "sft_label_all.jsonl")
    assert info["rows"] == len(rows) == train > len(read_jsonl(out / "traces.jsonl"))  # more than the explained
    assert all("rationale" not in r["messages"][-1]["content"].lower() for r in rows)
    assert sum(info["rows_per_label"].values()) == train


def test_variants_are_rated_as_trained_and_paired(run):
    out, metrics = run
    variants = {v["kind"]: v for v in metrics["variants"]}
    base = variants["trace-sft"]["rater"]
    pairs = {(c["a"], c["b"]) for c in metrics["splits"]["test"]["comparisons"]}
    for kind in KINDS:
        assert (f"{base}+label-sft", f"{base}+{kind}") in pairs and (f"{base}+label-sft-all", f"{base}+{kind}") in pairs
    assert (f"{base}+trace-sft", f"{base}+trace-sft-multitask") in pairs
    assert (f"{base}+label-sft", f"{base}+label-sft-all") in pairs
    preds = read_jsonl(out / "predictions.jsonl")
    multi = [p for p in preds if p["rater"] == f"{base}+trace-sft-multitask"]
    assert multi and all(not p.get("rationale") for p in multi)  # rated by its label alone
    report = (out / "report.md").read_text()
    for question in ("traces vs labels alone, multitask format", "traces vs labels on all train items",
                     "label-then-rationale vs rationale-then-label format", "rows per label",
                     "traces vs shuffled traces, label-then-rationale format",
                     "traces vs shuffled traces, multitask format", "shuffled-trace controls:"):
        assert question in report


def test_each_listed_format_gets_its_shuffled_control_trained_and_rated_like_it(run):
    out, metrics = run
    ft = metrics["finetune"]
    assert "shuffled-trace-sft" not in ft  # rationale-then-label is not listed in ablation_shuffled
    assert ft["shuffled-trace-sft-label-first"]["steps"] == ft["trace-sft-label-first"]["steps"]
    assert ft["shuffled-trace-sft-multitask"]["steps"] == ft["trace-sft-multitask"]["steps"]
    first, control = (read_jsonl(out / f) for f in ("sft_label_then_rationale.jsonl",
                                                    "sft_shuffled_label_then_rationale.jsonl"))
    assert [r["key"] for r in control] == [r["key"] for r in first]  # the same rows, the same labels
    assert [r["label"] for r in control] == [r["label"] for r in first]
    moved = ft["shuffled-trace-sft-label-first"]["trained_on"]["rationales_moved"]
    assert sum(a["messages"][-1]["content"] != b["messages"][-1]["content"] for a, b in zip(first, control)) == moved
    assert all(r["messages"][-1]["content"].lower().index("label") <
               r["messages"][-1]["content"].lower().index("rationale") for r in control)
    multi = read_jsonl(out / "sft_shuffled_multitask.jsonl")
    assert [r["task"] for r in multi] == ["label", "rationale"] * len(first)
    variants = {v["kind"]: v for v in metrics["variants"]}
    base = variants["trace-sft"]["rater"]
    pairs = {(c["a"], c["b"]) for c in metrics["splits"]["test"]["comparisons"]}
    assert (f"{base}+shuffled-trace-sft-label-first", f"{base}+trace-sft-label-first") in pairs
    assert (f"{base}+shuffled-trace-sft-multitask", f"{base}+trace-sft-multitask") in pairs
    preds = read_jsonl(out / "predictions.jsonl")
    multi_preds = [p for p in preds if p["rater"] == f"{base}+shuffled-trace-sft-multitask"]
    assert multi_preds and all(not p.get("rationale") for p in multi_preds)  # rated by its label alone


def test_the_gpu_spec_for_an_8b_student_dry_runs_without_downloading(monkeypatch, capsys):
    """experiments/distill-gpu-8b.yaml: a hub student on CUDA, every format; its plan needs neither the hub nor a
    GPU (a download attempt fails the test)."""
    import huggingface_hub

    from support import TESTS

    def no_download(*args, **kwargs):
        raise AssertionError("the dry run tried to download")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = TESTS.parent / "experiments" / "distill-gpu-8b.yaml"
    assert main([str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    from thinktrace.spec import load_spec

    cfg = load_spec(spec).spec.finetune
    assert cfg.device == "cuda" and cfg.precision == "bf16" and cfg.base.count("/") == 1
    assert cfg.format == ["rationale_then_label", "multitask", "label_then_rationale"] and cfg.ablation_label_all
    for kind in (*KINDS, "label-sft", "label-sft-all", "shuffled-trace-sft"):
        assert f"qwen2.5-7b+{kind}" in out


def test_the_cap_per_label_keeps_the_first_examples_of_each_label_in_order():
    from thinktrace.traces import cap_per_label

    rows = [{"item_id": f"i{n}", "label": lab} for n, lab in enumerate(["1", "1", "-2", "1", "-2", "0"])]
    assert [r["item_id"] for r in cap_per_label(rows, 1)] == ["i0", "i2", "i5"]
    assert [r["item_id"] for r in cap_per_label(rows, 2)] == ["i0", "i1", "i2", "i4", "i5"]
    assert cap_per_label(rows, None) == rows


def test_the_plan_counts_the_steps_of_capped_rows(tmp_path):
    free = _plan(tmp_path, ablation_label_all=True)["finetune"]["steps_max"]
    capped = _plan(tmp_path, ablation_label_all=True, max_per_label=1)["finetune"]["steps_max"]
    assert capped < free


@pytest.fixture(scope="module")
def capped_run(tiny_model_dir, tmp_path_factory):
    return _compile(tmp_path_factory, tiny_model_dir, "capped", max_per_label=1,
                    format=["rationale_then_label", "multitask"])


def test_max_per_label_caps_every_adapter_on_the_same_items(capped_run):
    out, metrics = capped_run
    ft = metrics["finetune"]
    traces = read_jsonl(out / "traces.jsonl")
    labels = {t["label"] for t in traces}
    assert len(traces) > len(labels)  # the cap binds: some label has more than one trace
    kinds = ("trace-sft", "trace-sft-multitask", "label-sft", "shuffled-trace-sft", "label-sft-all")
    for kind in kinds:
        per_label = ft[kind]["trained_on"]["rows_per_label"]
        assert max(per_label.values()) == 1 and ft[kind]["trained_on"]["max_per_label"] == 1, (kind, per_label)
    assert len({ft[k]["trained_on"]["items"] for k in kinds[:4]}) == 1  # the same items for traces and labels
    rows = read_jsonl(out / "sft_rationale_then_label.jsonl")  # what trace-sft trained on; sft.jsonl keeps all
    assert len(rows) == len(labels) < len(read_jsonl(out / "sft.jsonl")) == len(traces)
    job = json.loads((out / "finetune" / "trace-sft" / "job.json").read_text())
    assert "sft_rationale_then_label.jsonl" in json.dumps(job)  # a launcher reads the capped rows too
    assert "capped at 1 examples per label" in (out / "report.md").read_text()
