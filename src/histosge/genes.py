"""Gene selection and normalisation, fitted on training spots only.

HVGs are picked with seurat_v3 on raw counts of the *training* spots (the paper's top 1000),
so no information from held-out spots leaks into the gene set. seurat_v3's loess fit fails on
very small sections (e.g. ~90 training spots of her2st); we then fall back to scanpy's
'seurat' flavour on log-normalised counts and record which flavour was used.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp

from .errors import InputError

TARGET_SUM = 1e4


def select_hvgs(adata: ad.AnnData, n_top: int = 1000, *, train_mask: np.ndarray | None = None) -> tuple[list[str], str]:
    """Return (genes, flavour): the top ``n_top`` highly variable genes of the training spots."""
    train = adata if train_mask is None else adata[np.asarray(train_mask, bool)]
    counts = train.X
    if train.n_obs < 3:
        raise InputError(
            f"only {train.n_obs} training spots", where="training spots", fix="use a section with more spots"
        )
    # Genes never detected in the training spots carry no information and break loess.
    detected = np.asarray((counts > 0).sum(axis=0)).ravel() > 0
    sub = ad.AnnData(X=sp.csr_matrix(counts[:, detected]), var=train.var.iloc[np.flatnonzero(detected)].copy())
    sub.obs_names = train.obs_names
    n_avail = sub.n_vars
    if n_avail == 0:
        raise InputError("no gene is detected in the training spots", where="counts", fix="check the counts file")
    n_top = min(n_top, n_avail)
    if n_top == n_avail:
        return list(sub.var_names), "all"
    raw = bool(adata.uns.get("histosge", {}).get("raw_counts", True))
    if raw:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hv = sc.pp.highly_variable_genes(sub, flavor="seurat_v3", n_top_genes=n_top, inplace=False)
            # the chosen genes, best rank first (scanpy returns them in the input's gene order)
            ranked = hv[hv["highly_variable"].to_numpy()].sort_values("highly_variable_rank").index
            return [str(g) for g in ranked], "seurat_v3"
        except (ValueError, ZeroDivisionError, RuntimeError, np.linalg.LinAlgError):
            pass  # loess could not fit: fall back below
    logged = sub.copy()
    if raw:
        sc.pp.normalize_total(logged, target_sum=TARGET_SUM)
        sc.pp.log1p(logged)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hv = sc.pp.highly_variable_genes(logged, flavor="seurat", n_top_genes=n_top, inplace=False)
    order = np.argsort(-hv["dispersions_norm"].fillna(-np.inf).to_numpy(), kind="stable")[:n_top]
    return [str(logged.var_names[i]) for i in order], "seurat"


def log_normalize(adata: ad.AnnData, genes: list[str] | None = None) -> np.ndarray:
    """normalize_total(1e4) over *all* genes of each spot, then log1p, restricted to ``genes``.

    Library size is computed on all genes, as in the paper (normalise, then subset to HVGs).
    Returns a dense float32 array (spots x genes).
    """
    if not adata.uns.get("histosge", {}).get("raw_counts", True):
        X = adata[:, genes].X if genes is not None else adata.X
        return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)
    X = adata.X
    X = X.tocsr() if sp.issparse(X) else sp.csr_matrix(X)
    lib = np.asarray(X.sum(axis=1)).ravel()
    lib[lib == 0] = 1.0
    if genes is not None:
        idx = adata.var_names.get_indexer(genes)
        if (idx < 0).any():
            missing = [g for g, i in zip(genes, idx, strict=True) if i < 0][:5]
            raise InputError(f"genes missing from the section: {missing}", where="genes", fix="use genes it has")
        X = X[:, idx]
    dense = X.toarray().astype(np.float64)
    dense *= (TARGET_SUM / lib)[:, None]
    return np.log1p(dense).astype(np.float32)
