"""The benchmark behind ``histosge bench``, as files: tasks -> run -> results -> report.

``tasks`` turns protocols (R, G, G9, G16, X, R+, G+) into (section, protocol, seed) tasks;
``run`` fits every method on every task and appends one record per fit to ``results.jsonl``
(predictions to ``predictions/``, settings to ``run.json``); ``results`` loads, merges and
aggregates records with pandas; ``report.render`` writes report.md from those files alone.

>>> from histosge import benchmark
>>> result = benchmark.run("/data", "out/", sections="dlpfc/151673", protocols="R,G", quick=True)
>>> result.records[0]["pcc"], result.splits[("dlpfc/151673", "R", 0)].test
>>> benchmark.results.load("out/").groupby("method")["pcc"].mean()

See docs/BENCHMARK.md for what each protocol and method is; the methods themselves live in
``histosge.methods`` (``ALL_METHODS`` and ``DEFAULT_METHODS`` are read from its registry when
asked for, so a method registered later is there too).
"""

from . import results
from .protocols import PROTOCOLS
from .runner import DEFAULT_PROTOCOLS, DEFAULT_SEEDS, BenchResult, run
from .sections import discover

__all__ = [
    "ALL_METHODS",
    "DEFAULT_METHODS",
    "DEFAULT_PROTOCOLS",
    "DEFAULT_SEEDS",
    "PROTOCOLS",
    "BenchResult",
    "discover",
    "results",
    "run",
]


def __getattr__(name: str):
    if name in ("ALL_METHODS", "DEFAULT_METHODS"):
        from . import methods

        return getattr(methods, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
