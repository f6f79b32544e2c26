"""Sampling strategies (`sampling.strategy`): which attempts rejection sampling (thinktrace.teleprompt) makes for an
example, registered by name in `thinktrace.registry.sampling_strategies`; the built-ins blind, hinted and
blind_then_hinted are registered here. No DSPy import: the spec checks a strategy's name with this module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from thinktrace.errors import SpecError
from thinktrace.registry import sampling_strategies

#: the kinds of attempt `RejectionSampling.attempt` makes, and the LM calls each costs at most (hinted: a rationale
#: given the human label, then a blind check of it)
ATTEMPT_KINDS = {"blind": 1, "hinted": 2}


@dataclass(frozen=True)
class SamplingStrategy:
    """How a trace is sampled for an example (`sampling.strategy`): each attempt kind in `kinds`, in order, up to k
    attempts of it; RejectionSampling stops an example once `keep` attempts are accepted. Subclass and override
    `slots` for another plan (e.g. fewer hinted attempts); `calls_per_example` follows from it."""

    kinds: tuple[str, ...] = ()

    def slots(self, k: int) -> Iterator[tuple[str, int]]:
        """The (attempt kind, attempt index) slots an example may use, in order. An attempt's seed and journal key
        are its kind and index (`attempt_seed`), so a slot is the same attempt under every strategy that has it."""
        for kind in self.kinds:
            for index in range(k):
                yield kind, index

    def calls_per_example(self, k: int) -> int:
        """LM calls one example can cost at most."""
        return sum(ATTEMPT_KINDS[kind] for kind, _ in self.slots(k))


BUILTIN_SAMPLING_STRATEGIES = {"blind": SamplingStrategy(("blind",)), "hinted": SamplingStrategy(("hinted",)),
                               "blind_then_hinted": SamplingStrategy(("blind", "hinted"))}
for _name, _strategy in BUILTIN_SAMPLING_STRATEGIES.items():
    try:
        sampling_strategies.register(_name, _strategy)
    except ValueError:  # the user's own, registered under a built-in name before this import: theirs is kept
        pass


def sampling_strategy(name: str, k: int = 1) -> SamplingStrategy:
    """The strategy registered as `name`; an unknown name, or a strategy whose slots name an attempt kind other
    than ATTEMPT_KINDS, is a SpecError on `sampling.strategy`."""
    strategy = sampling_strategies.get(name, "sampling.strategy")
    bad = sorted({kind for kind, _ in strategy.slots(k)} - set(ATTEMPT_KINDS))
    if bad:
        raise SpecError("sampling.strategy", f"sampling strategy {name!r} makes attempts of unknown kind "
                        f"{', '.join(map(repr, bad))}; an attempt kind is one of: {', '.join(ATTEMPT_KINDS)}")
    return strategy


def check_sampling_strategy(name: str) -> str:
    """For a pydantic validator of `sampling.strategy`: `name` if registered, else a ValueError (one line, every
    registered name)."""
    try:
        sampling_strategy(name)
    except SpecError as err:
        raise ValueError(err.message) from None
    return name


