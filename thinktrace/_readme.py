"""Keep the README's spec reference in sync with the validating models: `python -m thinktrace._readme` rewrites
the block between the schema markers; tests/test_readme.py fails when it is stale."""

from __future__ import annotations

import re
import sys
from pathlib import Path

START, END = "<!-- schema:start -->", "<!-- schema:end -->"


def schema_block() -> str:
    from thinktrace.schema_doc import markdown
    from thinktrace.spec import Spec

    return f"{START}\n{markdown(Spec)}\n{END}"


def render(readme: str) -> str:
    return re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: schema_block(), readme, flags=re.S)


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
