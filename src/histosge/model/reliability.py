"""How far to trust each predicted gene: ``cv_pcc``, the Pearson correlation a gene's prediction
is expected to have with its measurement at spots the model never saw.

Every fitted model estimates it from predictions it made *without* the spots they are scored
on (never the training spots' own fit):

- several training sections: each section predicted by a model fitted without it
  (leave-one-section-out), and scored per section, as a new section will be;
- one section, image models: spatial blocks of the section stand in for sections;
- one section, neighbour models (``superres`` / ``recover``): each training spot predicted from
  the others (leave-one-out neighbours, out-of-fold image term).

Within one section the out-of-fold predictions are scored in ``SCORE_FOLDS`` random folds that
each span the whole section: a Pearson inside one spatial block misses the section's large-scale
variation and read 0.06-0.19 too low against held-out spots (bench/gene_reliability.py). Each
fold gives a per-gene Pearson ``r_gk``. Their mean is unbiased but noisy (a few hundred
spots per fold, and sections differ), and genes the model barely varies are the ones it cannot
tell apart. So the estimate is shrunk (empirical Bayes) toward what genes with the same
predicted spread score on average: ``cv_pcc = w * mean_k r_gk + (1 - w) * m(spread)``, where
``m`` is a monotone (isotonic) fit of the fold means on the log of the out-of-fold prediction's
spread, and ``w = tau^2 / (tau^2 + s_g^2)`` weighs a gene's own folds by how noisy they are
(``s_g^2``: Fisher sampling variance of each fold's ``r`` plus the pooled fold-to-fold spread,
over the number of folds) against how much genes differ beyond the curve (``tau^2``).

A gene is ``reliable`` when ``cv_pcc >= RELIABLE_PCC`` and it was detected in enough training
spots to learn (``genes.MIN_DETECTED_FRACTION``). README "Which genes can I trust?" says how
well this held on sections the model never saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: The documented rule: a gene is reliable when its estimated held-out Pearson is at least this.
RELIABLE_PCC = 0.25
RULE = f"cv_pcc >= {RELIABLE_PCC:g} and detected in >= 1% of the training spots"
#: Random folds the out-of-fold predictions of one section are scored in.
SCORE_FOLDS = 5
#: Digits kept in the model file (and in outputs): estimates are good to ~0.05, not to 1e-8.
DIGITS = 4


@dataclass
class Reliability:
    """Per-gene reliability of a fitted model (aligned with its ``genes_``).

    Attributes
    ----------
    cv_pcc : ndarray
        The calibrated estimate of each gene's held-out Pearson (what outputs show).
    raw_pcc : ndarray
        The plain mean over folds that ``cv_pcc`` shrinks.
    scope : str
        How the folds were made, in words.
    n_folds : int
        Folds (sections, or random folds of one section) the estimate averages.
    sparse : ndarray of bool
        Genes detected in too few training spots to learn (never reliable).
    shrinkage : float
        Mean weight of a gene's own folds (1: no shrinkage).
    """

    cv_pcc: np.ndarray  # the calibrated estimate (what outputs show)
    raw_pcc: np.ndarray  # the plain mean over folds
    scope: str  # how the folds were made, in words
    n_folds: int
    sparse: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # too few training spots to learn
    shrinkage: float = float("nan")  # mean weight of a gene's own folds (1: no shrinkage)

    def __post_init__(self):
        self.cv_pcc = np.asarray(self.cv_pcc, np.float64)
        self.raw_pcc = np.asarray(self.raw_pcc, np.float64)
        if len(self.sparse) != len(self.cv_pcc):
            self.sparse = np.zeros(len(self.cv_pcc), bool)
        self.sparse = np.asarray(self.sparse, bool)

    @property
    def reliable(self) -> np.ndarray:
        """The rule (``RULE``), gene by gene."""
        return (np.nan_to_num(self.cv_pcc, nan=-1.0) >= RELIABLE_PCC) & ~self.sparse

    def to_json(self) -> dict:
        """What the model file's description holds (lists rounded to ``DIGITS``)."""
        return {"cv_pcc": [round(float(v), DIGITS) for v in self.cv_pcc],
                "raw_pcc": [round(float(v), DIGITS) for v in self.raw_pcc],
                "sparse": [int(i) for i in np.flatnonzero(self.sparse)],
                "scope": self.scope, "n_folds": int(self.n_folds), "shrinkage": round(float(self.shrinkage), 4),
                "rule": RULE}

    @classmethod
    def from_json(cls, d: dict, n_genes: int) -> Reliability:
        """Back from ``to_json``; a length that does not match the genes is a ``ValueError``."""
        cv, raw = np.asarray(d["cv_pcc"], np.float64), np.asarray(d["raw_pcc"], np.float64)
        if len(cv) != n_genes or len(raw) != n_genes:
            raise ValueError(f"reliability lists {len(cv)} genes, the model {n_genes}")
        sparse = np.zeros(n_genes, bool)
        sparse[np.asarray(d.get("sparse", []), np.int64)] = True
        return cls(cv, raw, str(d.get("scope", "")), int(d.get("n_folds", 0)), sparse,
                   float(d.get("shrinkage", float("nan"))))


def fold_pccs(y: np.ndarray, pred: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(per-fold per-gene Pearson, spots per fold, per-gene spread of the predictions): the inputs
    of :func:`estimate`, from out-of-fold predictions ``pred`` of targets ``y`` (spots x genes)."""
    from ..evaluate import pearson_per_gene

    labels = np.unique(folds)
    r = np.stack([pearson_per_gene(y[folds == f], pred[folds == f]) for f in labels])
    n = np.array([(folds == f).sum() for f in labels], np.int64)
    spread = np.stack([np.asarray(pred[folds == f], np.float64).std(0) for f in labels]).mean(0)
    return np.nan_to_num(r, nan=0.0), n, spread


def estimate(y: np.ndarray, pred: np.ndarray, folds: np.ndarray, *, scope: str,
             sparse: np.ndarray | None = None) -> Reliability:
    """Per-gene ``cv_pcc`` from out-of-fold predictions (see the module docstring).

    Parameters
    ----------
    y, pred : ndarray
        Measured log1p targets and their out-of-fold predictions, spots x genes.
    folds : ndarray
        Each spot's fold (a section, a spatial block): ``pred`` at a spot was made without its fold.
    scope : str
        How the folds were made, in words (kept with the estimate).
    sparse : ndarray of bool, optional
        Genes detected in too few training spots to learn (never reliable).

    Returns
    -------
    Reliability
    """
    r, n, spread = fold_pccs(np.asarray(y), np.asarray(pred), np.asarray(folds))
    cv, w = shrink(r, n, spread)
    return Reliability(cv, r.mean(0), scope, len(n), sparse if sparse is not None else np.zeros(len(cv), bool), w)


def shrink(r: np.ndarray, n: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, float]:
    """(shrunk per-gene estimate, mean weight of the genes' own folds) from fold Pearsons ``r``
    (folds x genes), spots per fold ``n`` and the predictions' per-gene ``spread``."""
    from sklearn.isotonic import IsotonicRegression

    k, g = r.shape
    raw = r.mean(0)
    if g < 3:
        return raw, 1.0
    x = np.log(np.maximum(np.asarray(spread, np.float64), 1e-8))
    curve = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(x, raw).predict(x)
    # Sampling variance of one fold's r (Fisher: (1 - r^2)^2 / (n - 1)), plus what the folds
    # differ by beyond sampling (pooled over genes: one section is not another).
    sampling = ((1 - np.clip(raw, -1, 1) ** 2) ** 2)[None, :] / np.maximum(n[:, None] - 1, 1)
    if k >= 2:
        between = max(float(np.mean(r.var(0, ddof=1) - sampling.mean(0))), 0.0)
    else:
        between = 0.0
    s2 = (sampling.mean(0) + between) / k
    tau2 = max(float(np.var(raw - curve) - s2.mean()), 1e-6)
    w = tau2 / (tau2 + s2)
    return w * raw + (1 - w) * curve, float(w.mean())


def gene_table(model):
    """The model's ``var_`` with ``cv_pcc`` and ``reliable``: the ``var`` of every output.

    Parameters
    ----------
    model : SectionModel
        A fitted or loaded model.

    Returns
    -------
    DataFrame
        ``var_`` plus ``cv_pcc`` (float32; NaN when the model has no estimate) and ``reliable``
        (bool; ``RULE``).
    """
    var = model.var_.copy()
    rel = getattr(model, "reliability_", None)
    if rel is None:
        var["cv_pcc"] = np.full(len(var), np.nan, np.float32)
        var["reliable"] = np.zeros(len(var), bool)
    else:
        var["cv_pcc"] = np.round(rel.cv_pcc, DIGITS).astype(np.float32)
        var["reliable"] = rel.reliable
    return var


def summary(model) -> dict:
    """What an output's ``uns['histosge']['reliability']`` says: the rule, the scope, how many
    genes are reliable and the top five (or why the model has no estimate)."""
    rel = getattr(model, "reliability_", None)
    if rel is None:
        return {"estimated": False, "why": getattr(model, "reliability_note_", None)
                or "this model has no per-gene reliability estimate", "rule": RULE}
    order = np.argsort(-np.nan_to_num(rel.cv_pcc, nan=-1.0), kind="stable")
    genes = list(model.genes_)
    return {"estimated": True, "rule": RULE, "scope": rel.scope, "n_folds": rel.n_folds,
            "n_reliable": int(rel.reliable.sum()), "n_genes": len(genes),
            "top": {genes[i]: round(float(rel.cv_pcc[i]), 3) for i in order[:5]},
            "mean_cv_pcc": round(float(np.nanmean(rel.cv_pcc)), 4)}


#: Folds of the estimates that refit the model (methods that keep no spot out of their own fit):
#: each refit costs a whole fit, so three.
REFIT_FOLDS = 3


def random_folds(n: int, k: int, seed: int) -> np.ndarray:
    """Each of ``n`` spots in one of ``k`` seeded random folds (spots held out among measured
    ones, as ``recover`` holds them out)."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(n) % max(2, min(k, n)))


def sparse_genes(y: np.ndarray) -> np.ndarray:
    """Genes of log1p targets ``y`` (spots x genes) detected in too few training spots to learn."""
    from ..genes import too_sparse

    return too_sparse((np.asarray(y) > 0).sum(0), len(y))
