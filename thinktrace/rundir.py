"""The run folder `runs/<name>/<timestamp>/`: append-only JSONL records (flushed and fsynced per record, so a
kill loses at most the record being written) and JSON/Markdown artifacts written atomically."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively (metrics.json stays strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class JsonlLog:
    """An append-only JSONL file shared by worker threads. Reading skips a torn last line (from a kill). With a
    `model` (thinktrace.records), every record is validated on append and on read (older records upgraded)."""

    def __init__(self, path: Path, model=None):
        self.path = path
        self.model = model
        self._lock = threading.Lock()

    def append(self, record: dict) -> None:
        if self.model is not None:
            from thinktrace.records import dump

            record = dump(self.model, record)
        line = json.dumps(json_safe(record), ensure_ascii=False) + "\n"
        with self._lock:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())

    def read(self) -> list[dict]:
        return list(self)

    def __iter__(self) -> Iterator[dict]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break  # torn by a kill mid-write: that record was never complete
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                yield self._typed(record) if self.model is not None else record

    def _typed(self, record: dict) -> dict:
        from pydantic import ValidationError

        from thinktrace.errors import SpecError
        from thinktrace.records import dump

        try:
            return dump(self.model, record)
        except ValidationError as err:
            first = err.errors()[0]
            raise SpecError(".".join(map(str, first["loc"])), f"a {self.model.__name__} record does not fit: "
                            f"{first['msg']}", file=str(self.path)) from None


class RunDir:
    """Paths and writers of one run."""

    def __init__(self, path: Path):
        self.path = path  # created by `ensure()` when the run starts writing, not before (a failed preflight
        # leaves no empty folder behind)

    def ensure(self) -> "RunDir":
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    @classmethod
    def create(cls, output_dir: str | Path, name: str) -> "RunDir":
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(output_dir) / name
        path, n = base / stamp, 1
        while path.exists():
            n += 1
            path = base / f"{stamp}-{n}"
        return cls(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def log(self, name: str) -> JsonlLog:
        """The journal `name`, typed by its kind of record (thinktrace.records) when it is one of the run's."""
        from thinktrace.records import Attempt, Prediction, Trace

        model = {"predictions.jsonl": Prediction, "prompts_dev.jsonl": Prediction, "attempts.jsonl": Attempt,
                 "traces.jsonl": Trace}.get(name)
        return JsonlLog(self.file(name), model=model)

    def write_json(self, name: str, data: Any) -> Path:
        path = self.file(name)
        write_atomic(path, json.dumps(json_safe(data), indent=2, ensure_ascii=False) + "\n")
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.file(name)
        write_atomic(path, text)
        return path


def write_jsonl(path: Path, records: Iterable[dict], model=None) -> None:
    if model is not None:
        from thinktrace.records import dump

        records = [dump(model, r) for r in records]
    write_atomic(path, "".join(json.dumps(json_safe(r), ensure_ascii=False) + "\n" for r in records))
