"""Which prompt each llama.cpp slot holds, so that a prefix shared by many requests (a variant's system text,
guideline and demos) is computed once and copied to the other slots, instead of once per slot.

llama.cpp keeps each slot's last prompt in its KV cache (``cache_prompt``) and reuses the common prefix with the
next prompt sent to that slot; it does not share a prefix between slots. With ``llama.share_prefix`` the server
pins every request to a slot (``id_slot``) chosen here:

- the idle slot that already holds the longest common prefix of the request (same LoRA selection), else
- when another slot holds at least ``min_gain`` more tokens of it: that slot's state, saved once with llama.cpp's
  own slot save (``POST /slots/{id}?action=save``) and restored into the idle slot (``?action=restore``, a copy of
  its KV cells: milliseconds), so the request computes only what differs; when that slot is still busy with the
  first request of the prefix, the request waits for it rather than compute the same prefix in parallel.

This module is the bookkeeping only (no llama.cpp, no I/O): ``LlamaServer`` calls it under its lock and performs
the saves and restores it asks for.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

#: a request's LoRA selection: ((adapter id, scale), ...); a KV cache computed with other scales is not reusable
LoraKey = tuple


def common_prefix(a: list[int] | tuple, b: list[int] | tuple) -> int:
    """Length of the longest common prefix of two token id sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class Slot:
    key: LoraKey | None = None
    tokens: tuple = ()
    busy: bool = False
    used: int = 0  #: when it was last taken (a counter): ties go to the least recently used slot


@dataclass
class Snapshot:
    """A slot's state saved to a file by llama.cpp (the prompt it held then)."""
    key: LoraKey
    tokens: tuple
    filename: str


@dataclass
class Plan:
    """Where a request goes: its slot, and the snapshot to restore into that slot first (None: none)."""
    slot: int
    restore: Snapshot | None = None


@dataclass
class SlotTable:
    """The slots of one running server. Every method is called with ``cond``'s lock held."""
    n_slots: int
    cond: threading.Condition
    min_gain: int = 128
    slots: list[Slot] = field(default_factory=list)
    snapshots: dict[int, Snapshot] = field(default_factory=dict)
    wanted: set[int] = field(default_factory=set)  #: busy slots a waiting request wants a snapshot of
    clock: int = 0
    stats: dict = field(default_factory=lambda: {"pinned": 0, "restored": 0, "saved": 0, "waited": 0})

    def __post_init__(self) -> None:
        self.slots = [Slot() for _ in range(self.n_slots)]

    def acquire(self, key: LoraKey, ids: list[int]) -> Plan:
        """The slot for a request (marked busy), waiting while every slot is busy or while the only slot holding a
        long prefix of it is busy computing that prefix."""
        ids = tuple(ids)
        waited = False
        while True:
            idle = [i for i, s in enumerate(self.slots) if not s.busy]
            if not idle:
                waited = True
                self.cond.wait()
                continue
            best = max(idle, key=lambda i: (self._held(i, key, ids), -self.slots[i].used))
            have = self._held(best, key, ids)
            snap_i, snap_l = self._best_snapshot(key, ids)
            busy_i, busy_l = self._best_busy(key, ids)
            if snap_l - have >= self.min_gain and snap_l >= busy_l - self.min_gain:
                plan = Plan(best, self.snapshots[snap_i])
            elif busy_l - have >= self.min_gain:  # the prefix is being computed: wait for it, then copy it
                self.wanted.add(busy_i)
                waited = True
                self.cond.wait()
                continue
            else:
                plan = Plan(best)
            slot = self.slots[best]
            slot.busy, self.clock = True, self.clock + 1
            slot.used = self.clock
            slot.key, slot.tokens = key, ids  # what it holds once this prompt is computed (a waiter's source)
            self.stats["pinned"] += 1
            self.stats["waited"] += waited
            self.stats["restored"] += plan.restore is not None
            return plan

    def release(self, slot: int, ok: bool = True) -> bool:
        """A request on `slot` ended; returns whether a waiting request wants its state saved (the caller then saves
        it and calls ``saved``, with the slot still busy). A failed request leaves the slot's content unknown."""
        s = self.slots[slot]
        if not ok:
            s.key, s.tokens = None, ()
        if ok and slot in self.wanted:
            return True
        self._free(slot)
        return False

    def saved(self, slot: int, filename: str | None) -> None:
        """The state of `slot` was saved to `filename` (None: the save failed; waiting requests compute it)."""
        s = self.slots[slot]
        if filename is not None:
            self.snapshots[slot] = Snapshot(s.key, s.tokens, filename)
            self.stats["saved"] += 1
        self._free(slot)

    def restore_failed(self, snapshot: Snapshot) -> None:
        """A restore failed (the request then computes its whole prompt): that snapshot is not offered again."""
        for i, snap in list(self.snapshots.items()):
            if snap is snapshot:
                del self.snapshots[i]

    def _free(self, slot: int) -> None:
        self.slots[slot].busy = False
        self.wanted.discard(slot)
        self.cond.notify_all()

    def _held(self, i: int, key: LoraKey, ids: tuple) -> int:
        s = self.slots[i]
        return common_prefix(s.tokens, ids) if s.key == key else 0

    def _best_snapshot(self, key: LoraKey, ids: tuple) -> tuple[int | None, int]:
        best: tuple[int | None, int] = (None, 0)
        for i, snap in self.snapshots.items():
            n = common_prefix(snap.tokens, ids) if snap.key == key else 0
            if n > best[1]:
                best = (i, n)
        return best

    def _best_busy(self, key: LoraKey, ids: tuple) -> tuple[int | None, int]:
        best: tuple[int | None, int] = (None, 0)
        for i, s in enumerate(self.slots):
            if s.busy and s.key == key:
                n = common_prefix(s.tokens, ids)
                if n > best[1]:
                    best = (i, n)
        return best
