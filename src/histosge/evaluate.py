"""Held-out scores: per-gene Pearson, MSE, MAE on log1p expression, and spatial-domain ARI.

Only spots the model never trained on may be passed here; the paper's habit of scoring all
spots (training spots included) inflates Pearson from ~0.1 to ~0.7 on DLPFC.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score


def pearson_per_gene(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson r of each gene across spots; NaN where either side is constant.

    Parameters
    ----------
    y_true, y_pred : ndarray
        Measured and predicted expression, spots x genes.

    Returns
    -------
    ndarray
        One r per gene (float64); NaN where the truth or the prediction is constant.
    """
    t = np.asarray(y_true, np.float64)
    p = np.asarray(y_pred, np.float64)
    t = t - t.mean(0)
    p = p - p.mean(0)
    num = (t * p).sum(0)
    den = np.sqrt((t * t).sum(0) * (p * p).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    r[den <= 1e-12] = np.nan
    return r


def score(y_true: np.ndarray, y_pred: np.ndarray, *, top_k: int = 50) -> dict:
    """Held-out scores of a prediction: the numbers every report of this project quotes.

    Pass held-out spots only: the paper's habit of scoring training spots too inflates Pearson
    several-fold.

    Parameters
    ----------
    y_true, y_pred : ndarray
        Measured and predicted log1p expression of the held-out spots, spots x genes.
    top_k : int
        The most variable genes of the held-out truth that ``pcc_top50`` averages over.

    Returns
    -------
    dict
        ``pcc`` (mean per-gene Pearson; constant genes count as 0), ``pcc_top50`` (the same
        over the ``top_k`` most variable genes), ``mse``, ``mae``, ``n_genes``, ``n_spots``.
    """
    r = pearson_per_gene(y_true, y_pred)
    r0 = np.nan_to_num(r, nan=0.0)
    var = np.asarray(y_true).var(0)
    top = np.argsort(-var, kind="stable")[: min(top_k, len(var))]
    err = np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)
    return {
        "pcc": float(r0.mean()),
        "pcc_top50": float(r0[top].mean()),
        "mse": float((err**2).mean()),
        "mae": float(np.abs(err).mean()),
        "n_genes": int(y_true.shape[1]),
        "n_spots": int(y_true.shape[0]),
    }


def domains_ari(expression: np.ndarray, labels, *, n_clusters: int | None = None, seed: int = 0,
                n_pcs: int = 30) -> float:
    """How well expression recovers labelled tissue domains: k-means on PCA, ARI against labels.

    Spots without a label are clustered but not scored.

    Parameters
    ----------
    expression : ndarray
        Spots x genes (measured or predicted log1p).
    labels : array-like
        One label per spot; None/NaN where unlabelled.
    n_clusters : int, optional
        k; default the number of distinct labels.
    seed : int
        Seeds PCA and k-means.
    n_pcs : int
        Principal components clustered (fewer when the data has fewer).

    Returns
    -------
    float
        Adjusted Rand index of the clusters against the labels, over labelled spots.
    """
    labels = np.asarray(labels, dtype=object)
    known = np.array([lab is not None and lab == lab and str(lab) != "nan" for lab in labels])
    k = n_clusters or len(set(labels[known]))
    X = np.asarray(expression, np.float64)
    n_pcs = max(1, min(n_pcs, X.shape[0] - 1, X.shape[1]))
    pcs = PCA(n_components=n_pcs, random_state=seed).fit_transform(X - X.mean(0))
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(pcs)
    return float(adjusted_rand_score(labels[known].astype(str), clusters[known]))
