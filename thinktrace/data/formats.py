"""Every source format turned into one human label per row (`_Rows`), and the checks of texts and labels."""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from thinktrace.errors import DataError
from thinktrace.labels import LabelSet, canonical_str
from thinktrace.data.config import DataConfig


@dataclass
class _Rows:
    """Any format turned into one human label per row (label None = missing annotation)."""

    item_ids: list  # str, or None when derived from the text
    texts: list
    annotators: list[str]
    labels: list
    rows: list[int]  # 1-based data row (line for vader) each entry comes from
    rows_read: int
    item_id_from: str
    one_row_per_item: bool
    extra: dict = field(default_factory=dict)
    groups: list | None = None  # the `columns.group` value of each entry (None: no group column)


# -- formats ---------------------------------------------------------------------------------------------------
_VADER_RATINGS = re.compile(r"\s*\[(.*)\]\s*")


def _vader_rows(text: str, file: str) -> _Rows:
    """Parse the VADER lexicon: `token<TAB>mean<TAB>std<TAB>[r1, ..., r10]`.

    Each token is an item (id and text = the token) with its individual human ratings; annotator ids are the list
    positions "1".."10". Positions are NOT persistent raters: the lexicon lists ten independent crowd ratings per
    token without rater ids, so position k of one token and position k of another need not be the same person (use
    them for agreement measures that ignore rater identity, not for per-rater modelling). A token listed twice keeps its
    last entry, as VADER's own lexicon dictionary does; the replaced tokens are listed in stats.
    """
    entries: dict[str, tuple[int, list[str]]] = {}
    replaced: list[str] = []
    n_lines = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        n_lines += 1
        parts = line.rstrip("\r\n").split("\t")
        match = _VADER_RATINGS.fullmatch(parts[3]) if len(parts) >= 4 else None
        if match is None or not parts[0].strip():
            raise DataError(
                "data.format",
                f"line {lineno} is not a VADER lexicon entry (token<TAB>mean<TAB>std<TAB>[r1, ..., r10])",
                file,
            )
        ratings = [r.strip() for r in match.group(1).split(",") if r.strip()]
        token = parts[0].strip()
        if token in entries:
            replaced.append(token)
        entries[token] = (lineno, ratings)
    ids, texts, anns, labels, rows = [], [], [], [], []
    for token, (lineno, ratings) in entries.items():
        for k, rating in enumerate(ratings, 1):
            ids.append(token)
            texts.append(token)
            anns.append(str(k))
            labels.append(rating)
            rows.append(lineno)
    return _Rows(
        ids, texts, anns, labels, rows, rows_read=n_lines, item_id_from="vader token", one_row_per_item=True,
        extra={"duplicate_tokens_replaced": sorted(set(replaced))},
    )


def _missing_columns(frame: pd.DataFrame, wanted: dict[str, str], file: str) -> None:
    missing = {key: col for key, col in wanted.items() if col not in frame.columns}
    if missing:
        key, col = next(iter(missing.items()))
        names = ", ".join(f"{c!r}" for c in missing.values())
        found = ", ".join(str(c) for c in frame.columns)
        raise DataError(
            f"data.columns.{key}",
            f"column{'s' if len(missing) > 1 else ''} {names} not found; columns found: {found}",
            file,
        )


def _frame_rows(frame: pd.DataFrame, cfg: DataConfig, file: str) -> _Rows:
    cols = cfg.columns
    n = len(frame)
    row_numbers = list(range(1, n + 1))
    id_col = cols.item_id if cols.item_id is not None and (cfg.format == "long" or cols.item_id in frame.columns) else None
    wanted = {"text": cols.text}
    if cfg.format == "long":
        if cols.item_id is not None:
            wanted = {"item_id": cols.item_id, **wanted}
        if cols.annotator_id is not None:
            wanted["annotator_id"] = cols.annotator_id
        wanted["label"] = cols.label
    elif cfg.format == "aggregated":
        wanted["label"] = cols.label
    if cols.group is not None:
        wanted["group"] = cols.group
    _missing_columns(frame, wanted, file)
    item_id_from = f"column {id_col!r}" if id_col else "sha1(text)"
    raw_ids = [_id_str(v) for v in frame[id_col].tolist()] if id_col else [None] * n
    if id_col:
        empty = [r for r, v in zip(row_numbers, raw_ids) if not v]
        if empty:
            raise DataError(
                f"data.columns.item_id",
                f"{len(empty)} row(s) have no item id in column {id_col!r} (first: row {empty[0]}); fill them in, or "
                "set columns.item_id to null (wide/aggregated) to derive ids from the text",
                file,
            )
    texts = frame[cols.text].tolist()
    groups = _group_values(frame, cols.group, row_numbers, file) if cols.group is not None else None

    if cfg.format == "long":
        anns = [_id_str(v) for v in frame[cols.annotator_id].tolist()] if cols.annotator_id is not None else [""] * n
        return _Rows(raw_ids, texts, anns, frame[cols.label].tolist(), row_numbers, n, item_id_from, False,
                     groups=groups)
    if cfg.format == "aggregated":
        return _Rows(raw_ids, texts, [""] * n, frame[cols.label].tolist(), row_numbers, n, item_id_from, True,
                     groups=groups)

    # wide
    if cfg.annotator_columns is not None:
        absent = [c for c in cfg.annotator_columns if c not in frame.columns]
        if absent:
            raise DataError(
                "data.annotator_columns",
                f"column(s) {', '.join(map(repr, absent))} not found; columns found: {', '.join(map(str, frame.columns))}",
                file,
            )
        ann_cols = list(cfg.annotator_columns)
    else:
        skip = {cols.text, id_col, cols.group}
        ann_cols = [c for c in frame.columns if c not in skip]
    if not ann_cols:
        raise DataError(
            "data.annotator_columns",
            f"wide format needs at least one annotator column besides the item id and text; columns found: "
            f"{', '.join(map(str, frame.columns))}",
            file,
        )
    ids, out_texts, anns, labels, rows, out_groups = [], [], [], [], [], []
    values = {c: frame[c].tolist() for c in ann_cols}
    for i in range(n):
        for c in ann_cols:
            ids.append(raw_ids[i])
            out_texts.append(texts[i])
            anns.append(str(c))
            labels.append(values[c][i])
            rows.append(i + 1)
            out_groups.append(groups[i] if groups is not None else None)
    out = _Rows(ids, out_texts, anns, labels, rows, n, item_id_from, True,
                groups=out_groups if groups is not None else None)
    out.extra["annotator_columns"] = [str(c) for c in ann_cols]
    return out


# -- checks and grouping ---------------------------------------------------------------------------------------
def _group_values(frame: pd.DataFrame, column: str, row_numbers: list[int], file: str) -> list[str]:
    """The `columns.group` value of each row (as a string); an empty cell is an error (a group must be named)."""
    values = [_id_str(v) for v in frame[column].tolist()]
    empty = [r for r, v in zip(row_numbers, values) if not v]
    if empty:
        raise DataError("data.columns.group", f"{len(empty)} row(s) have no group in column {column!r} (first: row "
                        f"{empty[0]}); every item needs its group, or set columns.group to null", file)
    return values


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple, dict, set)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _id_str(value: object) -> str:
    """An id cell as a string: integral floats lose their '.0' (ids read from numeric columns); missing -> ""."""
    if _is_missing(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _check_texts(rows: _Rows, cfg: DataConfig, file: str) -> list[str]:
    texts: list[str] = []
    empty: list[int] = []
    last_row = None
    for value, row in zip(rows.texts, rows.rows):
        if _is_missing(value):
            if row != last_row:
                empty.append(row)
            texts.append("")
        else:
            texts.append(value if isinstance(value, str) else str(value))
        last_row = row
    if empty:
        raise DataError(
            "data.columns.text",
            f"{len(empty)} row(s) have an empty text in column {cfg.columns.text!r} (first: row {empty[0]}); every "
            "item needs the text the humans rated",
            file,
        )
    for i, item_id in enumerate(rows.item_ids):
        if item_id is None:
            rows.item_ids[i] = hashlib.sha1(texts[i].encode("utf-8")).hexdigest()[:16]
    return texts


def _check_labels(rows: _Rows, label_set: LabelSet, cfg: DataConfig, file: str) -> tuple[list, int]:
    cache: dict = {}
    out: list = []
    missing = 0
    bad: Counter = Counter()
    first_bad_row = None
    synonyms = label_set.synonyms
    for value, row in zip(rows.labels, rows.rows):
        if _is_missing(value):
            out.append(None)
            missing += 1
            continue
        try:
            label = cache[value]
        except (KeyError, TypeError):
            label = label_set.canonical(value)
            if label is None and synonyms:
                label = synonyms.get(re.sub(r"[\s\"'`*_.,;:!?()\[\]{}<>]+", " ", str(value).lower()).strip())
            try:
                cache[value] = label
            except TypeError:
                pass
        if label is None:
            bad[canonical_str(value) if not isinstance(value, (list, dict)) else repr(value)] += 1
            if first_bad_row is None:
                first_bad_row = row
        out.append(label)
    if bad:
        total = sum(bad.values())
        shown = ", ".join(f"{v!r} ({n}x)" for v, n in bad.most_common(5))
        more = f" and {len(bad) - 5} more value(s)" if len(bad) > 5 else ""
        where = "line" if cfg.format == "vader" else "row"
        raise DataError(
            "data.label_set",
            f"{total} human label(s) are not in label_set {list(label_set.labels)}: {shown}{more} (first at {where} "
            f"{first_bad_row}); add them to label_set, map them with label_synonyms, or fix the data",
            file,
        )
    return out, missing
