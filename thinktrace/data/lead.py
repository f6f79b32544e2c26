"""`data.lead`: each item shown as its head and the first words of its body (a summary with its article's lead),
and the body's group (the items that share one body)."""

from __future__ import annotations

import hashlib
from typing import Sequence

from thinktrace.data.config import LeadConfig
from thinktrace.errors import DataError


def lead_text(text: str, cfg: LeadConfig) -> tuple[str, str] | None:
    """(the text up to and including the marker + the body's first `words` words, the whole body), or None when
    the marker is not in the text."""
    at = text.find(cfg.marker)
    if at < 0:
        return None
    head, body = text[: at + len(cfg.marker)], text[at + len(cfg.marker):]
    words = body.split()
    lead = " ".join(words[: cfg.words]) + (" …" if len(words) > cfg.words else "")
    return head.rstrip() + "\n" + lead, " ".join(words)


def lead_texts(texts: Sequence[str], rows: Sequence[int], cfg: LeadConfig, file: str) -> tuple[list[str], list[str]]:
    """Every text as its lead, and each one's body group (the first 16 hex digits of the SHA-1 of the whole body).
    A text without the marker is a one-line DataError naming `data.lead.marker`."""
    out, groups, missing = [], [], []
    for text, row in zip(texts, rows):
        cut = lead_text(text, cfg)
        if cut is None:
            missing.append(row)
            continue
        out.append(cut[0])
        groups.append(hashlib.sha1(cut[1].encode("utf-8")).hexdigest()[:16])
    if missing:
        raise DataError("data.lead.marker", f"{len(missing)} row(s) have no {cfg.marker!r} in their text (first: row "
                        f"{missing[0]}); every item needs the marker, or set data.lead to null", file)
    return out, groups
