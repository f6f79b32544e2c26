"""Selection that selects: the dev winner among every candidate (the original, the written guidelines of every
competing optimizer, demos only, the compiled program) is kept only when a paired comparison on dev separates it
from the original; else the original is kept, and the selection says so. It also states the dev size needed to
detect a given Δα at a given power, from the dev split's own paired variance (a pilot)."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Callable, Mapping, Sequence

from thinktrace.agreement import paired_mean_difference
from thinktrace.labels import LabelSet

#: the effect the power statement is about, and the power and level it asks for
POWER_DELTA, POWER, LEVEL = 0.10, 0.80, 0.05


def dev_size_needed(se: float | None, n: int, delta: float = POWER_DELTA, power: float = POWER,
                    level: float = LEVEL) -> int | None:
    """Items needed for a two-sided paired test at `level` to detect Δα = delta with `power`, when the paired
    bootstrap standard error on n items is `se` (it shrinks as 1/√n): n · (se · (z_{1-level/2} + z_power) / delta)².
    None when se is unknown or 0 (no variance to plan from)."""
    if se is None or not se > 0 or n <= 0:
        return None
    z = NormalDist().inv_cdf(1 - level / 2) + NormalDist().inv_cdf(power)
    return int(math.ceil(n * (se * z / delta) ** 2))


def select(rows: Sequence[dict], original_id: str, labels_of: Callable[[str], Mapping[str, Sequence]],
           human: Sequence[str], label_set: LabelSet, n_boot: int, seed: int) -> dict:
    """rows: scored candidates ({"id", "kind", "mean"}, the original among them, ties to the earlier row);
    labels_of(cid) -> {rater: dev labels in `human` order}.

    Returns {"pool": [ids], "winner", "winner_kind", "chosen", "chosen_kind", "kept_original", "separated",
    "reason", "vs_original": paired comparison of the winner (or, when the original wins, of the best other
    candidate) against the original, "power": {"delta", "power", "n_dev", "se", "n_needed", "enough"}}."""
    best = rows[0]
    for row in rows[1:]:
        if row["mean"] > best["mean"]:
            best = row
    original = next(r for r in rows if r["id"] == original_id)
    others = [r for r in rows if r["id"] != original_id]
    rival = best if best["id"] != original_id else (max(others, key=lambda r: r["mean"]) if others else None)
    comparison = None
    if rival is not None:
        comparison = paired_mean_difference(human, dict(labels_of(original_id)), dict(labels_of(rival["id"])),
                                            label_set, n_boot=n_boot, seed=seed)
        comparison["b_id"] = rival["id"]
    lo = (comparison or {}).get("ci", [None, None])[0]
    separated = best["id"] != original_id and lo is not None and lo > 0
    if best["id"] == original_id:
        reason = "the original guideline has the highest mean dev α of all candidates: it is kept"
    elif separated:
        reason = (f"candidate {best['id']} ({best.get('kind')}) beats the original on dev with a paired 95 % CI "
                  f"above 0: it is chosen")
    else:
        reason = (f"candidate {best['id']} ({best.get('kind')}) has the highest mean dev α, but dev cannot separate "
                  f"it from the original (paired 95 % CI of Δα includes 0 or is undefined): the original is kept")
    chosen = best if separated else original
    se = (comparison or {}).get("se")
    needed = dev_size_needed(se, len(human))
    return {"pool": [r["id"] for r in rows], "winner": best["id"], "winner_kind": best.get("kind"),
            "chosen": chosen["id"], "chosen_kind": chosen.get("kind"), "kept_original": chosen["id"] == original_id,
            "separated": separated, "reason": reason, "vs_original": comparison,
            "power": {"delta": POWER_DELTA, "power": POWER, "n_dev": len(human), "se": se, "n_needed": needed,
                      "enough": None if needed is None else len(human) >= needed}}
