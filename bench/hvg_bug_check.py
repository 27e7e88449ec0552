"""How many of the true top-1000 HVGs the old gene selection kept, per benchmark split.

Why: the README and docs/MODEL_NOTES.md section 16 say how wrong the gene selection was before
2026-11-30 (the ``highly_variable`` mask of scanpy's table, in the genes' column order, was applied
to the gene list sorted by rank). This repeats that one line next to today's ``select_hvgs`` on
the training spots of protocols R (seed 0) and G of each her2st section and prints the overlap.

    python bench/hvg_bug_check.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import os
import warnings

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp

from histosge import geometry
from histosge.benchmark import protocols as P
from histosge.benchmark import sections as S
from histosge.genes import select_hvgs


def old_selection(adata, train_mask: np.ndarray, n_top: int = 1000) -> list[str] | None:
    """The pre-fix seurat_v3 branch of ``select_hvgs``: a mask in column order on a rank-sorted index
    (None where seurat_v3's loess cannot fit: both versions then take the same 'seurat' fallback)."""
    train = adata[train_mask]
    detected = np.asarray((train.X > 0).sum(axis=0)).ravel() > 0
    sub = ad.AnnData(X=sp.csr_matrix(train.X[:, detected]), var=train.var.iloc[np.flatnonzero(detected)].copy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            hv = sc.pp.highly_variable_genes(sub, flavor="seurat_v3", n_top_genes=n_top, inplace=False)
        except ValueError:
            return None
    return [str(g) for g in hv.sort_values("highly_variable_rank").index[hv["highly_variable"].to_numpy()]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("HISTOSGE_DATA", "../shared/data"))
    ap.add_argument("--sections", default="her2st:B4,her2st:C2,her2st:C3,her2st:C4")
    args = ap.parse_args(argv)
    for name in args.sections.split(","):
        adata = S.read(name, args.data)
        rows = adata.obs["array_row"].to_numpy(float)
        cols = adata.obs["array_col"].to_numpy(float)
        for protocol in ("R", "G"):
            split = P.split_r(adata.n_obs, 0) if protocol == "R" else P.split_g(rows, cols, geometry.grid_of(adata))
            mask = np.isin(np.arange(adata.n_obs), split.train)
            fixed, flavour = select_hvgs(adata, 1000, train_mask=mask)
            old = old_selection(adata, mask)
            if old is None:
                print(f"{name} {protocol}: {len(split.train)} training spots, seurat_v3 cannot fit; both versions "
                      f"use the same fallback ({flavour}): identical genes")
                continue
            print(f"{name} {protocol}: {len(split.train)} training spots, old selection kept "
                  f"{len(set(fixed) & set(old))} of the {len(fixed)} true HVGs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
