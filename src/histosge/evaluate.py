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
    """Pearson r of each gene across spots; NaN where either side is constant."""
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
    """pcc (mean per-gene Pearson, constant genes count as 0), pcc_top50 (the ``top_k`` most
    variable genes of the held-out truth), mse, mae."""
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
    """k-means (k = number of labelled domains) on PCA of expression, ARI against labels.

    Spots without a label are clustered but not scored.
    """
    labels = np.asarray(labels, dtype=object)
    known = np.array([lab is not None and lab == lab and str(lab) != "nan" for lab in labels])
    k = n_clusters or len(set(labels[known]))
    X = np.asarray(expression, np.float64)
    n_pcs = max(1, min(n_pcs, X.shape[0] - 1, X.shape[1]))
    pcs = PCA(n_components=n_pcs, random_state=seed).fit_transform(X - X.mean(0))
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(pcs)
    return float(adjusted_rand_score(labels[known].astype(str), clusters[known]))
