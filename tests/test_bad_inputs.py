"""The bad-input catalog: every malformed spec or data file gives one line on stderr naming the file and the field,
exit code 2, no traceback, and writes nothing."""

import json

import pytest
from support.specs import TESTS, toy_spec, write_spec

from thinktrace.compile import main

TOY = TESTS / "data" / "toy_long.csv"


def csv(tmp_path, text, name="data.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return str(path)


def spec_with(**kv):
    return lambda tmp_path: toy_spec(**kv)


def data_file(text, encoding="utf-8", **kv):
    return lambda tmp_path: toy_spec(**{"data.source": csv(tmp_path, text, encoding=encoding), **kv})


HEADER = "item_id,text,annotator_id,label\n"
CASES = {
    "unknown top-level key": (spec_with(colour="red"), "colour"),
    "unknown nested key": (spec_with(**{"sampling.kk": 3}), "sampling.kk"),
    "wrong type": (spec_with(**{"sampling.k": "many"}), "sampling.k"),
    "k = 0": (spec_with(**{"sampling.k": 0}), "sampling.k"),
    "keep > k": (spec_with(**{"sampling.keep": 9}), "sampling.keep"),
    "negative temperature": (spec_with(**{"sampling.temperature": -1}), "sampling.temperature"),
    "unknown strategy": (spec_with(**{"sampling.strategy": "psychic"}), "sampling.strategy"),
    "unknown level": (spec_with(**{"data.level": "cardinal"}), "data.level"),
    "split not summing to 1": (spec_with(**{"data.split": {"train": 0.9, "dev": 0.2, "test": 0.2}}), "data.split"),
    "split with no test items": (spec_with(**{"data.split": {"train": 0.99, "dev": 0.01, "test": 0.0}}),
                                 "data.split"),
    "missing data file": (spec_with(**{"data.source": "nowhere.csv"}), "data.source"),
    "unsupported extension": (lambda t: toy_spec(**{"data.source": csv(t, "x", "data.xlsx")}), "data.source"),
    "empty data": (data_file(HEADER), "data.source"),
    "missing column": (data_file("item_id,text,label\na,b,positive\n"), "data.columns"),
    "labels outside label_set": (data_file(HEADER + "a,hello,1,happy\nb,bye,1,negative\n"), "data.label_set"),
    "duplicate item ids with conflicting text": (
        data_file(HEADER + "a,hello,1,positive\na,bye,2,negative\n"), "data.columns.item_id"),
    "non-UTF-8 data": (data_file(HEADER + "a,caf\xe9,1,positive\nb,x,1,neutral\n", encoding="latin-1"),
                       "data.encoding"),
    "empty text": (data_file(HEADER + "a,,1,positive\nb,x,1,neutral\n"), "data.columns.text"),
    "one label only": (spec_with(**{"data.label_set": ["positive"]}), "data.label_set"),
    "mean on nominal": (spec_with(**{"data.aggregate": "mean"}), "data.aggregate"),
    "unknown tie_break": (spec_with(**{"data.tie_break": "round_down"}), "data.tie_break"),
    "no raters": (spec_with(**{"models.raters": []}), "models.raters"),
    "duplicate rater names": (lambda t: toy_spec(**{"models.raters": toy_spec()["models"]["raters"] * 2}),
                              "models.raters"),
    "bad api_base": (spec_with(**{"models.raters": [{"provider": "openai", "model": "m", "api_base": "ftp://x"}]}),
                     "models.raters.0.api_base"),
    "adapter on a remote model": (spec_with(**{"models.raters": [{"provider": "openai", "model": "m",
                                                                   "adapter": "/tmp"}]}), "models.raters.0"),
    "local model dir missing": (spec_with(**{"models.raters": [{"provider": "local", "model": "/no/such/dir"}]}),
                                "models.raters.0.model"),
    "program file missing": (spec_with(**{"programs.rater": "programs/nope.py:Rater"}), "programs.rater"),
    "program class missing": (spec_with(**{"programs.rater": "programs/rater.py:Nope"}), "programs.rater"),
    "program ref malformed": (spec_with(**{"programs.infer": "programs/trace.py"}), "programs.infer"),
    "unknown adapter": (spec_with(**{"programs.adapter": "xml"}), "programs.adapter"),
    "guideline writer not a model": (spec_with(**{"guidelines.enabled": True, "guidelines.writer": "nobody"}),
                                     "guidelines.writer"),
    "identical guideline candidates": (spec_with(**{"guidelines.temperature": 0.0, "guidelines.candidates": 2}),
                                       "guidelines"),
    "writer program missing": (spec_with(**{"programs.writer": "programs/guideline.py:Nope"}), "programs.writer"),
    "both codebook and codebook_file": (spec_with(codebook_file="g.md"), "codebook"),
    "tolerance on nominal data": (spec_with(**{"sampling.tolerance": 1}), "sampling.tolerance"),
    "finetune without traces": (spec_with(**{"finetune.enabled": True, "sampling.enabled": False}),
                                "finetune.enabled"),
    "bad bootstrap": (spec_with(**{"evaluate.bootstrap": -5}), "evaluate.bootstrap"),
    "unknown training device": (spec_with(**{"finetune.device": "gpu"}), "finetune.device"),
    "processes without a launcher": (spec_with(**{"finetune.launcher": {"num_processes": 2}}), "finetune.launcher"),
    "self-traces without fine-tuning": (spec_with(**{"sampling.self_traces": True}), "sampling.self_traces"),
    "self-traces generator not a model": (spec_with(**{"sampling.self_traces": True, "finetune.enabled": True,
                                                       "sampling.self_generator": "nobody"}),
                                          "sampling.self_generator"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path, monkeypatch, capsys):
    make, field = CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path = write_spec(tmp_path, make(tmp_path))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: {path}: ") or err[0].startswith("error: ") and "data" in field, err[0]
    assert field in err[0], err[0]
    assert "Traceback" not in err[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, no run folder


def test_bad_yaml(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\n  data: [\n")
    assert main([str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: invalid YAML at line") and "\n" not in err


def test_catalog_names_real_fields_of_every_section():
    """Each case's expected field is a field of the spec schema (or a data field the loader names), and together
    the cases reach every section a user edits: a catalog entry cannot name a field that does not exist."""
    from thinktrace.schema_doc import markdown
    from thinktrace.spec import Spec

    schema = {line.split("`")[1] for line in markdown(Spec).splitlines() if line.startswith("| `")}
    schema |= {f.replace("[]", "") for f in schema}
    unknown = [(case, field) for case, (_, field) in CASES.items() if not case.startswith("unknown")
               and not any(field == f or field.startswith(f + ".") or f.startswith(field + ".") or
                          field.rstrip(".0123456789") == f.replace("[]", "").rstrip(".") for f in schema)]
    assert not unknown, unknown
    sections = {field.split(".")[0] for _, field in CASES.values()}
    assert {"data", "models", "programs", "sampling", "finetune", "guidelines", "evaluate"} <= sections, sections
    json.dumps(list(CASES))
