"""The generation plan: every conditional query of an evaluation laid out as few sampler passes.

A query of a group (one given subset, its targets) is answered for each of the group's tuples; a *sample*
is one (query, tuple) pair. The plan lines the samples up group after group, query after query (each
query's tuples in order) and cuts the line into passes of ``batch`` samples, so ``S`` samples take
``ceil(S / batch)`` passes and a pass may hold pieces of several queries of several groups (a model with
per-sample conditioning runs them as one sampler pass). A *mirror* replays the passes that hold a
group's samples with the same layout, so another version of that group (the leave-one-out queries from
FGSM-attacked inputs) sees, sample for sample, the noise its clean version saw.

Pure bookkeeping (no torch): what :class:`~mmbench.metrics.samples.SampleCache` executes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Slot:
    """Consecutive samples of one query in a pass: tuples ``start:stop`` of the group's rows."""

    group: str
    query: int  # index into the group's queries
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Pass:
    """One sampler call: its slots, and its index (the pass's seed is derived from it)."""

    index: int
    slots: tuple[Slot, ...]

    @property
    def size(self) -> int:
        return sum(s.size for s in self.slots)


@dataclass(frozen=True)
class GroupShape:
    """How many queries a group asks and for how many tuples."""

    name: str
    queries: int
    rows: int


def pack(groups: Sequence[GroupShape], batch: int) -> list[Pass]:
    """Lay the samples of ``groups`` out query-major and cut them into passes of ``batch`` samples."""
    if batch < 1:
        raise ValueError(f"a pass holds at least one sample, got batch={batch}")
    passes: list[Pass] = []
    current: list[Slot] = []
    free = batch
    for group in groups:
        for query in range(group.queries):
            start = 0
            while start < group.rows:
                stop = min(group.rows, start + free)
                current.append(Slot(group.name, query, start, stop))
                free -= stop - start
                start = stop
                if free == 0:
                    passes.append(Pass(len(passes), tuple(current)))
                    current, free = [], batch
    if current:
        passes.append(Pass(len(passes), tuple(current)))
    return passes


def mirror(passes: Sequence[Pass], source: str, replica: str) -> list[Pass]:
    """The passes holding ``source`` samples, with those slots renamed ``replica``; the other slots stay
    (their samples are generated again and dropped), so every pass keeps its layout and its index."""
    return [
        Pass(p.index, tuple(replace(s, group=replica) if s.group == source else s for s in p.slots))
        for p in passes
        if any(s.group == source for s in p.slots)
    ]


def samples_of(groups: Sequence[GroupShape]) -> int:
    return sum(g.queries * g.rows for g in groups)
