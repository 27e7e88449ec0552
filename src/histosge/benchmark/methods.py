"""Every benchmarked method behind one call, fed identical inputs: a thin adapter over the
methods registry (``histosge.methods``).

``predict(method, task)`` creates the registered method (seeded by the task; ``--quick`` takes
the spec's ``quick_epochs``), fits it on ``task.train`` / ``task.y_train`` and predicts
``task.query``. What differs per method comes from its spec, never from its name:

- protocol X (another section) admits only methods that do not read the target section's
  measured expression (``knn`` and ``stage`` do, so they are not run there);
- grid positions of another section's array say nothing about the target's tissue, so in X the
  methods that read positions (HisToGene, THItoGene, the paper's model) get one constant position;
  within a section, the methods whose fit reads the query's positions (``fit_takes_query``) get
  them, so their position tables cover every spot of the section;
- a method whose spec names a ``cross_section`` method (``histosge``: ``histosge-image``) runs X
  the way a user does: fitted on the training sections, saved to a model file, loaded back, and used to
  predict the target from its image, exactly as ``histosge train`` / ``histosge predict`` do;
- protocols R+ and G+ (a section with a cohort: ``protocols.prior_sources``) add the methods that
  read the other sections of the dataset (``WITH_OTHER_SECTIONS``: their spec's
  ``section_params`` name ``cohort``): ``ridge+pooled`` and ``stnet+pooled`` are the baselines
  fitted on the other sections' spots pooled with the section's training spots;
  ``histosge+prior`` is the default model with a prior, an image-mode model fitted on the other
  sections, saved to a file and loaded back, as ``histosge train --mode image`` and ``histosge
  superres --prior`` do. knn and HisToGene cannot use spots of another section's array (their
  positions say nothing about this section's tissue), so they have no pooled form. Genes that
  not every other section measures are predicted from the section alone.

``ALL_METHODS``, ``DEFAULT_METHODS``, ``NEEDS_TARGET_EXPRESSION``, ``WITH_OTHER_SECTIONS`` and
``QUICK_EPOCHS`` are read from the registry when asked for, so a method registered by a plugin is
benchmarkable too.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np

from .. import methods as registry
from ..methods import Cohort
from ..model import Spots
from .protocols import get_protocol


@dataclass
class Task:
    """One fit: training spots and their log1p targets, query spots to predict.

    ``train_groups`` / ``query_groups`` name the section of each spot (protocol X pools several
    training sections; HisToGene runs one section per sequence). For protocol X the sections
    themselves come too (``train_sections``, ``query_section``, with the ``genes`` scored), so
    that the default model is fitted and used through its public, file-based path.
    """

    train: Spots
    y_train: np.ndarray
    query: Spots
    seed: int = 0
    quick: bool = False
    train_groups: np.ndarray | None = None
    query_groups: np.ndarray | None = None
    train_sections: list[ad.AnnData] | None = None
    query_section: ad.AnnData | None = None
    genes: list[str] | None = None
    grid: str | None = None  # 'hex' (Visium) or 'square' (legacy ST): STAGE scales coordinates by it
    cohort: Cohort | None = None

    @property
    def other_section(self) -> bool:
        """The query lies on a section where nothing is measured (protocol X)."""
        return self.query_section is not None


def __getattr__(name: str):
    """The method lists, derived from the registry's specs each time they are asked for."""
    specs = registry.specs()
    if name == "ALL_METHODS":  # everything --methods accepts, in the report's order
        return tuple(s.name for s in specs)
    if name == "DEFAULT_METHODS":  # the default suite (see docs/BENCHMARK.md for what is left out and why)
        return tuple(s.name for s in specs if s.default)
    if name == "NEEDS_TARGET_EXPRESSION":  # methods that read the predicted section's own measured spots
        return frozenset(s.name for s in specs if s.needs_target_expression)
    if name == "WITH_OTHER_SECTIONS":  # methods that read the other sections: protocols R+ and G+ only
        return tuple(s.name for s in specs if s.needs_other_sections)
    if name == "QUICK_EPOCHS":  # training length under --quick (a smoke test, not a measurement)
        return {s.name: s.quick_epochs for s in specs if s.quick_epochs}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def valid_for(method: str, protocol: str) -> bool:
    """Whether ``method`` runs under ``protocol`` (``protocols.Protocol.admits``: X has no measured
    spot of the target; the methods that read the other sections run under R+ and G+ only)."""
    return get_protocol(protocol).admits(registry.get_spec(method, where="--methods"))


def _no_positions(spots: Spots) -> Spots:
    return Spots(spots.features, np.zeros(len(spots)), np.zeros(len(spots)), spots.xy)


def params_for(spec: registry.MethodSpec, task: Task) -> dict:
    """The constructor arguments the benchmark gives ``spec``'s method for ``task``: the seed, the
    ``--quick`` schedule or else the one early-stop rule (``histosge.model.early_stop``: every
    method that trains a network stops by it, inside its published epochs), and what the spec asks
    of the data (``grid``; ``cohort`` in R+ and G+)."""
    params: dict = {"seed": task.seed}
    if task.quick and spec.quick_epochs:
        params |= spec.cls.schedule(epochs=spec.quick_epochs)
    elif not task.quick:
        params |= spec.cls.stop_rule_params()
    for key in spec.section_params:
        params[key] = getattr(task, key)
    return params


def predict(method: str, task: Task) -> tuple[np.ndarray, dict]:
    """(predictions for ``task.query`` (query spots x genes), info about the fit)."""
    spec = registry.get_spec(method, where="--methods")
    params = params_for(spec, task)
    if task.other_section and spec.cross_section is not None:
        return _through_a_model_file(spec, task, params)
    tr, q, y = task.train, task.query, task.y_train
    if task.other_section and spec.reads_positions:
        tr, q = _no_positions(tr), _no_positions(q)
    seen = {"query": q} if spec.fit_takes_query else {}
    m = registry.create_method(method, **params).fit(tr, y, groups=task.train_groups, **seen)
    return np.asarray(m.predict(q, groups=task.query_groups), np.float32), m.fit_record()


def _through_a_model_file(spec: registry.MethodSpec, task: Task, params: dict) -> tuple[np.ndarray, dict]:
    """Protocol X the way a user runs it: fit the section model of ``spec.cross_section`` (for
    ``histosge``: ``histosge-image``) on the training sections, save it, load it, predict the
    target section."""
    sections = task.train_sections
    groups = np.asarray(task.train_groups)
    features = [task.train.features[groups == i] for i in range(len(sections))]
    model = registry.create_model(spec.cross_section, **params)
    model.fit(sections, genes=task.genes, features=features, progress=False)
    info = model.method_.fit_record()
    with tempfile.TemporaryDirectory(prefix="histosge-x-") as tmp:
        path = Path(tmp) / "model.histosge"
        model.save(path)
        loaded = registry.load_model(path)
    pred = loaded.predict(task.query_section, features=task.query.features, progress=False)
    return np.asarray(pred.X, np.float32), info
