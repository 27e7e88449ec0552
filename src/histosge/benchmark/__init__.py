"""The benchmark behind ``histosge bench``, as files: tasks -> run -> results -> report.

``tasks`` turns protocols (R, G, G9, G16, X, R+, G+) into (section, protocol, seed) tasks;
``run`` fits every method on every task and appends one record per fit to ``results.jsonl``
(predictions to ``predictions/``, settings to ``run.json``); ``results`` loads, merges and
aggregates records with pandas; ``report.render`` writes report.md from those files alone.

>>> from histosge import benchmark
>>> result = benchmark.run("/data", "out/", sections="dlpfc:151673", protocols="R,G", quick=True)
>>> result.records[0]["pcc"], result.splits[("dlpfc:151673", "R", 0)].test
>>> benchmark.results.load("out/").groupby("method")["pcc"].mean()

The public names the bench/ scripts build on: ``load_sections`` (sections read and encoded once:
``Section``, whose ``spots(idx)`` are a method's input), ``protocols`` (splits and genes),
``deterministic`` (torch's deterministic kernels and a fixed thread count), ``Task`` and
``predict`` (one method on one task, fed as ``run`` feeds it), ``run_method`` (the same, timed, with
the record's info), ``ari``, ``fit_prior`` (the prior of R+ and G+) and ``cores``.

See docs/BENCHMARK.md for what each protocol and method is; the methods themselves live in
``histosge.methods`` (``ALL_METHODS`` and ``DEFAULT_METHODS`` are read from its registry when
asked for, so a method registered later is there too).
"""

from ..methods._torch import cores
from . import results
from .methods import Task, predict
from .protocols import PROTOCOLS
from .runner import DEFAULT_PROTOCOLS, DEFAULT_SEEDS, BenchResult, ari, deterministic, fit_prior, run, run_method
from .sections import Section, discover
from .sections import load as load_sections

__all__ = [
    "ALL_METHODS",
    "DEFAULT_METHODS",
    "DEFAULT_PROTOCOLS",
    "DEFAULT_SEEDS",
    "PROTOCOLS",
    "BenchResult",
    "Section",
    "Task",
    "ari",
    "cores",
    "deterministic",
    "discover",
    "fit_prior",
    "load_sections",
    "predict",
    "results",
    "run",
    "run_method",
]


def __getattr__(name: str):
    if name in ("ALL_METHODS", "DEFAULT_METHODS"):
        from . import methods

        return getattr(methods, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
