"""What a stage cost: its peak memory (this process, and the child processes it waited for) and the local models'
tokens (prompt, of which served from llama.cpp's prompt cache, generated). Linux gives a per-stage peak: writing
5 to /proc/self/clear_refs resets the process's high-water mark (VmHWM) at the start of the stage; elsewhere the
peak is the process's peak so far (ru_maxrss)."""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _maxrss_mib(who: int) -> float:
    kib = resource.getrusage(who).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 1024 / 1024


def peak_rss_mib() -> float:
    """This process's peak resident memory since the last `reset_peak_rss()` (or since it started), in MiB."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return _maxrss_mib(resource.RUSAGE_SELF)


def reset_peak_rss() -> bool:
    """Start a new peak: the high-water mark becomes the current resident size (Linux); False where unsupported."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc keeps them after a stage freed its memory; the
    fine-tuning child that runs next would otherwise add its memory on top). A no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


TOKEN_KEYS = ("calls", "input_tokens", "cached_tokens", "output_tokens")


def _engine_totals() -> dict[str, int]:
    from thinktrace.lm.llamacpp import engine_stats

    totals = dict.fromkeys(TOKEN_KEYS, 0)
    totals["load_s"] = 0.0
    for stats in engine_stats().values():
        for key in TOKEN_KEYS:
            totals[key] += int(stats.get(key) or 0)
        totals["load_s"] += float(stats.get("load_s") or 0.0)
    return totals


@dataclass
class StageFootprint:
    """One stage's cost in one session (a resumed stage counts what the resume did; `merged` adds the earlier
    sessions')."""

    seconds: float = 0.0
    peak_rss_mib: float = 0.0  #: this process, over the stage
    children_peak_rss_mib: float | None = None  #: the largest child process the stage ran (fine-tuning), if any
    calls: int = 0  #: requests served by local models (llama.cpp); calls to remote APIs are in `calls`
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  #: of the prompt tokens, served from llama.cpp's prompt cache
    generated_tokens: int = 0
    load_seconds: float = 0.0  #: of `seconds`, spent loading local models into llama.cpp
    _before: dict = field(default_factory=dict, repr=False)

    @classmethod
    def start(cls) -> "StageFootprint":
        reset_peak_rss()
        return cls(_before={"tokens": _engine_totals(), "children": _maxrss_mib(resource.RUSAGE_CHILDREN)})

    def stop(self, seconds: float) -> "StageFootprint":
        after = _engine_totals()
        d = {k: after[k] - self._before["tokens"].get(k, 0) for k in TOKEN_KEYS}
        self.seconds = round(seconds, 3)
        self.peak_rss_mib = round(peak_rss_mib(), 1)
        children = _maxrss_mib(resource.RUSAGE_CHILDREN)
        # ru_maxrss of the children is the largest child reaped so far: a rise is this stage's child
        self.children_peak_rss_mib = round(children, 1) if children > self._before["children"] else None
        self.calls, self.prompt_tokens = d["calls"], d["input_tokens"]
        self.cached_prompt_tokens, self.generated_tokens = d["cached_tokens"], d["output_tokens"]
        self.load_seconds = round(after["load_s"] - self._before["tokens"].get("load_s", 0.0), 3)
        return self

    def record(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def merged(self, earlier: dict | None) -> "StageFootprint":
        """This session's footprint on top of what earlier sessions of the run folder recorded for the stage
        (`record()` of theirs): times and tokens add up, peaks are the largest of any session, so a resume that
        finds a stage done (seconds, no memory) never hides what the stage cost when it ran."""
        if not isinstance(earlier, dict):
            return self
        out = StageFootprint(**self.record())

        def num(key: str) -> float:
            value = earlier.get(key)
            return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0

        out.seconds = round(self.seconds + num("seconds"), 3)
        out.load_seconds = round(self.load_seconds + num("load_seconds"), 3)
        for key in ("calls", "prompt_tokens", "cached_prompt_tokens", "generated_tokens"):
            setattr(out, key, int(getattr(self, key) + num(key)))
        out.peak_rss_mib = max(self.peak_rss_mib, num("peak_rss_mib"))
        peaks = [v for v in (self.children_peak_rss_mib, earlier.get("children_peak_rss_mib"))
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        out.children_peak_rss_mib = max(peaks) if peaks else None
        return out
