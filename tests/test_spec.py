import pytest
import yaml
from support.specs import toy_spec, write_spec

from thinktrace.errors import SpecError
from thinktrace.spec import apply_override, load_spec


def error_of(tmp_path, spec, overrides=None) -> SpecError:
    path = write_spec(tmp_path, spec) if isinstance(spec, dict) else spec
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return info.value


def test_valid_spec_loads_with_defaults(tmp_path):
    loaded = load_spec(write_spec(tmp_path, toy_spec()))
    assert loaded.spec.sampling.strategy == "blind" and loaded.spec.programs.adapter == "plain"
    assert loaded.guideline == "Rate the sentiment of the text."
    assert loaded.spec.generator.name == "kw"


@pytest.mark.parametrize("mutate, field, says", [
    (lambda s: s.update(colour="red"), "colour", "unknown field; allowed: name"),
    (lambda s: s["sampling"].update(k="many"), "sampling.k", "integer"),
    (lambda s: s["sampling"].update(k=0), "sampling.k", "greater than or equal to 1"),
    (lambda s: s["sampling"].update(keep=9), "sampling.keep", "keep (9) cannot exceed k (4)"),
    (lambda s: s["sampling"].update(strategy="psychic"), "sampling.strategy", "one of: blind, hinted, blind_then_hinted"),
    (lambda s: s["sampling"].update(tolerance=1), "sampling.tolerance", "tolerance needs data.level ordinal or interval"),
    (lambda s: s.pop("models"), "models", "Field required"),
    (lambda s: s["models"].update(raters=[]), "models.raters", "at least 1"),
    (lambda s: s["models"]["raters"].append(dict(s["models"]["raters"][0])), "models.raters", "names must be unique"),
    (lambda s: s.update(codebook_file="guide.md"), "codebook", "exactly one of `codebook`"),
    (lambda s: s.update(name="has space"), "name", "letters, digits"),
    (lambda s: s["data"].update(label_set=["a"]), "data.label_set", "at least"),
    (lambda s: s["evaluate"].update(splits=["holdout"]), "evaluate.splits.0", "'test'"),
])
def test_invalid_fields_name_the_field(tmp_path, mutate, field, says):
    spec = toy_spec()
    mutate(spec)
    err = error_of(tmp_path, spec)
    assert err.field.startswith(field) and says in str(err), str(err)


def test_yaml_and_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: [unclosed\n")
    assert "invalid YAML at line" in str(error_of(tmp_path, bad))
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    assert "YAML mapping" in str(error_of(tmp_path, listy))
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert "UTF-8" in str(error_of(tmp_path, latin))
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "missing.yaml")
    spec = toy_spec(codebook=None, codebook_file="nowhere.md")
    assert "file not found" in str(error_of(tmp_path, spec))


def test_codebook_file_and_python_object_tags_are_refused(tmp_path):
    (tmp_path / "guide.md").write_text("Be careful.")
    spec = toy_spec(codebook=None, codebook_file="guide.md")
    assert load_spec(write_spec(tmp_path, spec)).guideline == "Be careful."
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    assert "invalid YAML" in str(error_of(tmp_path, evil))


def test_overrides(tmp_path):
    raw = toy_spec()
    apply_override(raw, "sampling.k=6")
    apply_override(raw, "models.raters.0.temperature=0.5")
    apply_override(raw, "evaluate.splits=[dev, test]")
    assert raw["sampling"]["k"] == 6 and raw["models"]["raters"][0]["temperature"] == 0.5
    assert raw["evaluate"]["splits"] == ["dev", "test"]
    with pytest.raises(SpecError):
        apply_override(raw, "models.raters.3.model=x")
    with pytest.raises(SpecError):
        apply_override(raw, "no-equals-sign")
    loaded = load_spec(write_spec(tmp_path, toy_spec()), ["seed=7", "data.limit=12"])
    assert loaded.spec.seed == 7 and loaded.spec.data.limit == 12
    assert yaml.safe_load((tmp_path / "spec.yaml").read_text())["seed"] == 0  # the file is not modified
