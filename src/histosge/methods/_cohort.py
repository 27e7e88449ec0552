"""What the cohort methods share: the other sections of a dataset (``Cohort``) and a baseline
fitted on their spots pooled with the section's own (``Pooled``).

A cohort method reads sections other than the one it predicts, so only the benchmark's
protocols R+ and G+ can give it one (``protocols.prior_sources``: same patient, other
patients); its spec names ``"cohort"`` among its ``section_params``. knn and HisToGene have no
pooled form: positions on another section's array say nothing about this section's tissue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import anndata as ad
import numpy as np

from ..errors import InputError
from ..model.contexts import Spots
from ._registry import create_method, get_spec
from .base import Method, check_fit_inputs


@dataclass
class Cohort:
    """The other sections of the dataset, as protocols R+ and G+ hand them to a method.

    ``features`` / ``y``: their spots pooled (``y`` on the task's genes marked ``covered``: those
    every other section measures); ``prior``: an image-mode model fitted on them on the covered
    genes (loaded from its file); ``section``, ``section_features``, ``train_index``: the target
    section as read, the features of all its spots, and the spots that train (for the model's
    public, AnnData path); ``genes``: the task's genes; ``prior_seconds``: how long the prior
    took to fit (reported by the method that reads it).
    """

    features: np.ndarray
    y: np.ndarray
    covered: np.ndarray
    prior: Any  # a fitted image-mode section model (histosge.model.SectionModel)
    section: ad.AnnData
    section_features: np.ndarray
    train_index: np.ndarray
    genes: list[str]
    prior_seconds: float = 0.0


def check_cohort(cohort: Cohort | None, name: str) -> Cohort:
    """``cohort``, or one error saying where a cohort method can run."""
    if cohort is None:
        raise InputError(f"method {name!r} reads the other sections of the dataset, and none were given",
                         where="--method", fix="run it in histosge bench --protocols R+,G+, or use a method of "
                                               "one section (histosge methods lists them)")
    return cohort


class Pooled(Method):
    """Baseline ``BASE`` fitted on the cohort's spots pooled with the section's training spots.

    Genes that not every other section measures (``~cohort.covered``) are fitted on the section
    alone. ``params``: the baseline's constructor arguments.
    """

    BASE: ClassVar[str]

    def __init__(self, *, cohort: Cohort | None = None, seed: int = 0, **params: Any):
        super().__init__(seed=seed)
        self.cohort, self.params = cohort, dict(params)
        self._base()  # unknown parameters fail here

    @classmethod
    def schedule(cls, **schedule: Any) -> dict[str, Any]:
        """The baseline's own schedule (``--epochs`` ...)."""
        return get_spec(cls.BASE).cls.schedule(**schedule)

    @classmethod
    def stop_rule_params(cls) -> dict[str, Any]:
        """The baseline's early-stop rule parameters."""
        return get_spec(cls.BASE).cls.stop_rule_params()

    def _base(self) -> Method:
        return create_method(self.BASE, seed=self.seed, **self.params)

    def fit(self, train: Spots, y: np.ndarray, *, groups: np.ndarray | None = None) -> Pooled:
        c = check_cohort(self.cohort, self.spec.name)
        y = check_fit_inputs(train, y, groups)
        covered = np.asarray(c.covered, bool)
        self.covered_ = covered
        self.alone_ = self._base().fit(train, y[:, ~covered]) if not covered.all() else None
        n = len(c.features)
        pooled = Spots(np.vstack([c.features, train.features]), np.zeros(n + len(train)), np.zeros(n + len(train)),
                       np.zeros((n + len(train), 2)))
        self.pooled_ = self._base().fit(pooled, np.vstack([c.y, y[:, covered]]))
        self.info = {**self.pooled_.info, "n_pooled": int(n)}
        return self

    def predict(self, query: Spots, *, groups: np.ndarray | None = None) -> np.ndarray:
        self.check_fitted()
        out = np.empty((len(query), len(self.covered_)), np.float32)
        if self.alone_ is not None:  # one gene: a ridge returns a vector
            out[:, ~self.covered_] = np.asarray(self.alone_.predict(query)).reshape(len(query), -1)
        out[:, self.covered_] = np.asarray(self.pooled_.predict(query)).reshape(len(query), -1)
        return out
