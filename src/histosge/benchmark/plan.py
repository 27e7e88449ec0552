"""The benchmark's plan: its tasks, one (section, protocol, seed) each, with its split and where it trains from.

The one place that turns protocols into work: each ``protocols.Protocol`` makes its split (a
split of the section: R, G, G9, G16; with the other sections of the dataset as cohorts: R+,
G+) or trains on the other sections of the tissue (X); the runner fits every method on every task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import protocols as P
from .protocols import Split
from .sections import Section


@dataclass
class BenchTask:
    """One section, protocol and seed. ``split`` indexes the section's spots; for X, ``sources`` are
    the sections that train (``split.train`` is empty); for R+ and G+, ``cohorts`` are the
    (scope, sections) whose spots are known too."""

    name: str  # 'dlpfc:151673'
    protocol: str
    seed: int
    split: Split
    sources: list[str] = field(default_factory=list)
    cohorts: list[tuple[str, list[str]]] = field(default_factory=list)


def plan(secs: dict[str, Section], protocols: list[str], seeds: list[int]) -> tuple[list[BenchTask], list[str]]:
    """The tasks of a run, in the order they run (each section's within-section protocols, then the
    cross-section ones), and a line for each (section, protocol) that cannot run and why."""
    names = list(secs)
    tasks: list[BenchTask] = []
    skipped: list[str] = []
    cohorts = P.prior_sources(names)
    chosen = [P.get_protocol(p) for p in protocols]
    for name in names:
        sec = secs[name]
        for protocol in (p for p in chosen if not p.cross):
            if protocol.cohort and name not in cohorts:
                skipped.append(f"{name} {protocol.name}: skipped, no other section of its dataset is named")
                continue
            first = protocol.split(sec.n, sec.rows, sec.cols, sec.grid, seeds[0])
            if protocol.min_train and (len(first.train) < protocol.min_train or not len(first.test)):
                skipped.append(f"{name} {protocol.name}: skipped, its coarse lattice has {len(first.train)} spots "
                               f"(< {protocol.min_train})")
                continue
            for seed in seeds:
                split = protocol.split(sec.n, sec.rows, sec.cols, sec.grid, seed) if protocol.seeded else first
                tasks.append(BenchTask(name, protocol.name, seed, Split(protocol.name, split.train, split.test),
                                       cohorts=cohorts.get(name, []) if protocol.cohort else []))
    for protocol in (p for p in chosen if p.cross):
        for target, sources in P.cross_groups(names).items():
            for seed in seeds:
                tasks.append(BenchTask(target, protocol.name, seed,
                                       protocol.split(secs[target].n, None, None, None, seed), sources=sources))
    return tasks, skipped
