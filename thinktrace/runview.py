"""Read-only view of a finished (or partly finished) run folder, for the HTML report and `thinktrace.compare`.

Every artifact is optional except metrics.json: a reader asks for what it needs and gets an empty value when the
run has not written it (an older run, a stage that was disabled or is still running)."""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path

import yaml

from pydantic import ValidationError

from thinktrace.journal import latest_settled
from thinktrace.records import MetricsDocument, seconds
from thinktrace.rundir import JsonlLog


class RunError(Exception):
    """A path that is not a readable run folder; str() is one line naming the path."""

    def __init__(self, path: Path | str, why: str):
        super().__init__(f"{path}: {why}")


class RunView:
    def __init__(self, path: Path | str, metrics: dict | None = None):
        """A run folder; `metrics`: its metrics document when it is not on disk yet (a run writing its reports)."""
        self.path = Path(path)
        if not self.path.exists():
            raise RunError(path, "no such run folder")
        if not self.path.is_dir():
            raise RunError(path, "not a run folder (not a directory)")
        if metrics is None:
            mpath = self.path / "metrics.json"
            if not mpath.exists():
                raise RunError(path, "not a run folder (no metrics.json)")
            try:
                metrics = json.loads(mpath.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise RunError(path, f"metrics.json is unreadable ({err.__class__.__name__}: {err})") from None
            if not isinstance(metrics, dict):
                raise RunError(path, "metrics.json is not a JSON object")
        try:
            self.metrics = MetricsDocument.document(metrics)  # checked, and upgraded when older
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise RunError(path, f"metrics.json: {where}: {first['msg']}") from None

    # -- identity --------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str((self.metrics.get("spec") or {}).get("name") or self.path.parent.name)

    @property
    def label(self) -> str:
        """`<spec name>/<run folder>` (the folder is the run's timestamp)."""
        return f"{self.name}/{self.path.name}"

    @property
    def timestamp(self) -> str:
        m = re.match(r"(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})", self.path.name)
        if m:
            y, mo, d, h, mi, s = m.groups()
            return f"{y}-{mo}-{d} {h}:{mi}:{s}"
        import time

        mpath = self.path / "metrics.json"
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mpath.stat().st_mtime if mpath.exists() else None))

    # -- artifacts -------------------------------------------------------------------------------------------
    def _json(self, name: str):
        path = self.path / name
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None

    def _jsonl(self, name: str) -> list[dict]:
        try:
            return [r for r in JsonlLog(self.path / name) if isinstance(r, dict)]
        except (OSError, UnicodeDecodeError):
            return []

    @cached_property
    def data(self) -> dict:
        return self._json("data.json") or {}

    @cached_property
    def spec(self) -> dict:
        path = self.path / "spec.resolved.yaml"
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            spec = None
        return spec if isinstance(spec, dict) else {}

    @cached_property
    def predictions(self) -> list[dict]:
        """The last settled record per (split, rater, item): retryable failures are not predictions."""
        rows = self._jsonl("predictions.jsonl")
        return list(latest_settled(rows, lambda r: (r.get("split"), r.get("rater"), r.get("item_id"))).values())

    @cached_property
    def attempts(self) -> list[dict]:
        """Settled sampling attempts (one per slot)."""
        rows = self._jsonl("attempts.jsonl")
        return list(latest_settled(rows, lambda r: (r.get("key"), r.get("strategy"), r.get("attempt"))).values())

    @cached_property
    def traces(self) -> list[dict]:
        return self._jsonl("traces.jsonl")

    @property
    def label_set(self) -> list[str]:
        return [str(x) for x in (self.metrics.get("data") or {}).get("label_set") or []]

    @property
    def level(self) -> str:
        return (self.metrics.get("data") or {}).get("level") or "nominal"

    def splits(self) -> list[str]:
        return list((self.metrics.get("splits") or {}))

    def main_split(self, prefer: str = "test") -> str | None:
        splits = self.splits()
        return prefer if prefer in splits else (splits[0] if splits else None)

    def split(self, split: str) -> dict:
        return (self.metrics.get("splits") or {}).get(split) or {}

    # -- variants and labels ---------------------------------------------------------------------------------
    def variants(self, split: str | None = None) -> list[dict]:
        """metrics.json `variants` (name, kind, rater, model, ...), plus any rater evaluated on `split` that the
        list lacks; an older run without the list has one baseline variant per rater."""
        declared = [dict(v) for v in self.metrics.get("variants") or [] if isinstance(v, dict) and v.get("name")]
        models = {r.get("name"): r.get("model") for r in (self.spec.get("models") or {}).get("raters") or []
                  if isinstance(r, dict)}
        names = {v["name"] for v in declared}
        raters = list(self.split(split).get("raters") or {}) if split else \
            [r for s in self.splits() for r in self.split(s).get("raters") or {}]
        for name in raters:
            if name not in names:
                names.add(name)
                declared.append({"name": name, "kind": "baseline" if not self.metrics.get("variants") else "?",
                                 "rater": name, "model": models.get(name)})
        return declared

    def eval_items(self, split: str) -> list[str] | None:
        """Item ids the run evaluated on `split`, in order (data.json, cut to evaluate.max_items); None unknown."""
        ids = (self.data.get("splits") or {}).get(split)
        if ids is None:
            seen = []
            for r in self.predictions:
                if r.get("split") == split and r.get("item_id") not in seen:
                    seen.append(r.get("item_id"))
            return seen or None
        limit = (self.spec.get("evaluate") or {}).get("max_items")
        return list(ids[:limit] if limit else ids)

    def labels(self, split: str, variant: str) -> dict[str, str | None]:
        """{item_id: parsed label or None} of one variant on one split (the last record of an item wins)."""
        return {r["item_id"]: r.get("label") for r in self.predictions
                if r.get("split") == split and r.get("rater") == variant and "item_id" in r}

    def human(self, split: str) -> dict[str, str]:
        """{item_id: aggregated human label} from the prediction records of `split`."""
        return {r["item_id"]: r.get("human") for r in self.predictions
                if r.get("split") == split and "item_id" in r and r.get("human") is not None}

    # -- optional artifacts of later stages ------------------------------------------------------------------
    def guideline_texts(self) -> tuple[str, str, Path] | None:
        """(original, refined, path of the refined file) when the run refined its guideline, else None."""
        candidates = [self.path / "guideline.md"]
        candidates += sorted(p for p in self.path.glob("*/guideline.md"))
        candidates += sorted(p for p in self.path.glob("*/*/guideline.md"))
        for path in candidates:
            if not path.is_file():
                continue
            original_path = path.with_name("guideline.original.md")
            try:
                refined = path.read_text(encoding="utf-8")
                original = original_path.read_text(encoding="utf-8") if original_path.is_file() else None
            except (OSError, UnicodeDecodeError):
                continue
            if original is None:
                original = self.spec.get("codebook")
            if original is None:
                continue
            return str(original), refined, path
        return None

    def train_logs(self) -> dict[str, list[dict]]:
        """{variant: train_log.jsonl rows} of every fine-tuned adapter under finetune/."""
        out = {}
        root = self.path / "finetune"
        if not root.is_dir():
            return out
        for path in sorted(root.rglob("train_log.jsonl")):
            name = str(path.parent.relative_to(root)) or path.parent.name
            try:
                rows = [r for r in JsonlLog(path) if isinstance(r, dict)]
            except (OSError, UnicodeDecodeError):
                continue
            out[name] = rows
        return out

    def timing(self) -> dict[str, float]:
        """Wall time per stage in seconds (metrics.json `timing`), unreadable values dropped."""
        out = {}
        for k, v in (self.metrics.get("timing") or {}).items():
            s = seconds(v)
            if s is not None:
                out[str(k)] = s
        return out

    def cost(self) -> dict:
        """LM calls and tokens of the rating (per variant) and sampling stages, wall time, acceptance rate."""
        def tokens(rows):
            return {k: sum(int((r.get("tokens") or {}).get(k) or 0) for r in rows) for k in ("prompt", "completion")}

        rating: dict[str, list[dict]] = {}
        for r in self.predictions:
            rating.setdefault(str(r.get("rater")), []).append(r)
        per_variant = {name: {"calls": len(rows), **tokens(rows)} for name, rows in rating.items()}
        sampling = {"calls": len(self.attempts), **tokens(self.attempts)}
        guide = self.metrics.get("guidelines") if isinstance(self.metrics.get("guidelines"), dict) else {}
        timing = self.timing()
        traces = self.metrics.get("traces") or {}
        return {
            "rating": per_variant, "sampling": sampling,
            "guideline_writer_calls": guide.get("writer_calls"),
            "calls": sum(v["calls"] for v in per_variant.values()) + sampling["calls"],
            "prompt": sum(v["prompt"] for v in per_variant.values()) + sampling["prompt"],
            "completion": sum(v["completion"] for v in per_variant.values()) + sampling["completion"],
            "wall_s": sum(timing.values()) if timing else None,
            "acceptance_rate": traces.get("acceptance_rate"),
        }
