"""Local paths made portable for published files: a results folder names no folder of the machine its run ran on
(`python -m thinktrace.results`), and a spec compared against a published one (`sampling.attempts_from`) is
compared in the same portable form."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

#: a virtual environment's (or a system Python's) package folder, whatever its prefix
SITE_PACKAGES = re.compile(r"/[^\s\"'|]*?/site-packages/")


def portable(text: str, run_dir: Path | None = None) -> str:
    """`text` with this machine's paths made portable: the run folder becomes `<run>`, a site-packages folder
    `<site-packages>`, the working directory a relative path (`./`), the home folder `~`. A folder's name is
    replaced only where the name ends (`/runs/x` does not touch `/runs/xy`)."""
    text = SITE_PACKAGES.sub("<site-packages>/", text)
    prefixes = ((run_dir.resolve(), "<run>"),) if run_dir is not None else ()
    for prefix, to in (*prefixes, (Path.cwd().resolve(), "."), (Path.home().resolve(), "~")):
        if str(prefix) not in ("/", "."):
            text = re.sub(re.escape(str(prefix)) + r"(?=[/\s\"'|]|$)", to, text)
    return text


def portable_value(value: Any) -> Any:
    """A spec value (a string, or a list / mapping of them) in its portable form, as a published spec holds it."""
    if isinstance(value, str):
        return portable(value)
    if isinstance(value, list):
        return [portable_value(v) for v in value]
    if isinstance(value, dict):
        return {k: portable_value(v) for k, v in value.items()}
    return value
