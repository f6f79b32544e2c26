"""Short flags on a variant whose numbers do not measure a rater, read off its metrics entry (`thinktrace.metrics`
computes the checks): "parsed 0/300 answers" (parse rate below `evaluate.min_parse_rate`: a failed variant) and
"answers 1 for 149/150 items" (collapsed: its answers far less spread than the gold labels). For the report's
tables, the findings rows, the status banner and the console summary. An older metrics document has neither check:
no flags."""

from __future__ import annotations

from thinktrace.runview import RunView


def parse_flag(m: dict) -> str | None:
    """"parsed 3/300 answers" when the rater's parse rate fell below evaluate.min_parse_rate, else None."""
    if not m.get("parse_failed"):
        return None
    return f"parsed {m.get('n_items', 0) - m.get('n_unparsed', 0)}/{m.get('n_answers', 0)} answers"


def collapse_flag(m: dict) -> str | None:
    """"answers 1 for 149/150 items" when the rater collapsed, else None ("parsed answers" when some did not)."""
    c = m.get("collapse") or {}
    if not c.get("collapsed"):
        return None
    what = "items" if c.get("n") == m.get("n_items") else "parsed answers"
    return f"answers {c.get('top_label')} for {c.get('top_count')}/{c.get('n')} {what}"


def rater_flags(m: dict | None) -> list[str]:
    """The flags of one rater's metrics entry (a split's `raters[name]`), failure first."""
    return [f for f in (parse_flag(m or {}), collapse_flag(m or {})) if f]


def flag_text(m: dict | None) -> str:
    """The flags of one rater's metrics entry, each named: "failed: parsed 0/300 answers; collapsed: answers 1
    for 149/150 items" (empty when neither)."""
    parse, collapsed = parse_flag(m or {}), collapse_flag(m or {})
    return "; ".join([*([f"failed: {parse}"] if parse else []), *([f"collapsed: {collapsed}"] if collapsed else [])])


def variant_flags(run: RunView, split: str, name: str) -> list[str]:
    """The flags of variant `name` on `split` of a run (empty: nothing to flag, or no such variant)."""
    return rater_flags((run.split(split).get("raters") or {}).get(name))


def flagged(run: RunView) -> list[tuple[str, str, dict]]:
    """(split, variant, metrics entry) of every variant with a flag, in split and variant order."""
    out = []
    for split in run.splits():
        raters = run.split(split).get("raters") or {}
        for name, m in raters.items():
            if rater_flags(m):
                out.append((split, name, m))
    return out
