"""The benchmark behind ``histosge bench``: protocols R/G/X, every registered method, results.json + report.md.

>>> from histosge import benchmark
>>> result = benchmark.run("/data", "out/", sections="dlpfc/151673", protocols="R,G", quick=True)
>>> result.records[0]["pcc"], result.splits[("dlpfc/151673", "R", 0)].test

See docs/BENCHMARK.md for what each protocol and method is; the methods themselves live in
``histosge.methods`` (``ALL_METHODS`` and ``DEFAULT_METHODS`` are read from its registry).
"""

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
    "run",
]


def __getattr__(name: str):
    if name in ("ALL_METHODS", "DEFAULT_METHODS"):
        from . import methods

        return getattr(methods, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
