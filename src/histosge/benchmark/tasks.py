"""The benchmark's tasks: one (section, protocol, seed) each, with its split and where it trains from.

The one place that turns protocol names into work: R, G, G9, G16 (a split of the section), X
(the other sections of its tissue train, every spot is scored) and R+, G+ (the split of R or G,
and the other sections of the dataset as cohorts). ``protocols`` says how each split is made;
the runner fits every method on every task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import protocols as P
from .sections import Section


@dataclass
class BenchTask:
    """One section, protocol and seed. ``split`` indexes the section's spots; for X, ``sources`` are
    the sections that train (``split.train`` is empty); for R+ and G+, ``cohorts`` are the
    (scope, sections) whose spots are known too."""

    name: str  # 'dlpfc/151673'
    protocol: str
    seed: int
    split: P.Split
    sources: list[str] = field(default_factory=list)
    cohorts: list[tuple[str, list[str]]] = field(default_factory=list)


def plan(secs: dict[str, Section], protocols: list[str], seeds: list[int]) -> tuple[list[BenchTask], list[str]]:
    """The tasks of a run, in the order they run (each section's within-section protocols, then X),
    and a line for each (section, protocol) that cannot run and why."""
    names = list(secs)
    tasks: list[BenchTask] = []
    skipped: list[str] = []
    cohorts = P.prior_sources(names)
    for name in names:
        sec = secs[name]
        for protocol in (p for p in protocols if p != "X"):
            if protocol in P.WITH_PRIOR and name not in cohorts:
                skipped.append(f"{name} {protocol}: skipped, no other section of its dataset is named")
                continue
            if protocol in P.WITH_PRIOR:
                base = P.split_r(sec.n, 0) if P.WITH_PRIOR[protocol] == "R" else P.split_g(sec.rows, sec.cols, sec.grid)
            elif protocol != "R":
                base = P.split_g(sec.rows, sec.cols, sec.grid, P.GENERATION[protocol])
                if len(base.train) < P.MIN_TRAIN_SPOTS or not len(base.test):
                    skipped.append(f"{name} {protocol}: skipped, its coarse lattice has {len(base.train)} spots "
                                   f"(< {P.MIN_TRAIN_SPOTS})")
                    continue
            for seed in seeds:
                if protocol in ("R", "R+"):  # the only seeded split
                    base = P.split_r(sec.n, seed)
                split = P.Split(protocol, base.train, base.test)
                tasks.append(BenchTask(name, protocol, seed, split, cohorts=cohorts.get(name, [])
                                       if protocol in P.WITH_PRIOR else []))
    if "X" in protocols:
        for target, sources in P.cross_groups(names).items():
            for seed in seeds:
                split = P.Split("X", np.zeros(0, np.int64), np.arange(secs[target].n))
                tasks.append(BenchTask(target, "X", seed, split, sources=sources))
    return tasks, skipped
