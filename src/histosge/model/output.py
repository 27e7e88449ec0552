"""The AnnData a prediction is returned as: one layout for ``HisToSGE`` and every other method.

``X`` the predicted log1p expression (spots x the model's genes), ``var`` the genes with their
``cv_pcc`` and ``reliable`` flag (``model.reliability``), ``obs`` the input's grid
positions (and in_tissue / spot_type when present), ``obsm['spatial']`` in full-resolution
pixels, ``obsm['features']`` the image features (written to disk only when asked,
``histosge.storage``), ``uns['spatial']`` the input's image entry, and ``uns['histosge']`` the
provenance (model, encoder, genes, units).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from .. import keys
from .contexts import Spots

#: Columns of the input's ``obs`` carried to the prediction.
OBS_COLUMNS = ("array_row", "array_col", "in_tissue", "spot_type")


def prediction_anndata(model, adata: ad.AnnData, query: Spots, pred: np.ndarray, *, features: bool = True,
                       obs: dict | None = None, uns: dict | None = None) -> ad.AnnData:
    """``pred`` at the spots of ``adata`` as an AnnData; ``obs`` / ``uns``: the model kind's own
    columns and provenance entries (added after the shared ones)."""
    frame = pd.DataFrame(index=adata.obs_names.astype(str))
    for col in OBS_COLUMNS:
        if col in adata.obs:
            frame[col] = adata.obs[col].to_numpy()
    for col, values in (obs or {}).items():
        frame[col] = values
    from .reliability import gene_table, summary

    out = ad.AnnData(X=pred, obs=frame, var=gene_table(model))
    out.obsm[keys.SPATIAL] = query.xy
    if features:
        out.obsm[keys.FEATURES] = query.features
    lib = keys.library_id(adata)
    spatial = adata.uns.get(keys.SPATIAL, {}) or {}
    if lib in spatial:
        out.uns[keys.SPATIAL] = {lib: spatial[lib]}
    out.uns[keys.HISTOSGE] = {
        "task": "predict", "library_id": lib, "mode": model.mode, "genes": "var_names",
        "units": {"X": "log1p(normalize_total(1e4)) of the model's genes", "obsm['spatial']":
                  "full-resolution (level-0) pixels", "mpp": float(keys.mpp(adata)),
                  "patch_um": float(model.patch_um_)},
        "encoder": dict(model.encoder_), "features": dict(model.encoder_), "model": model.provenance(),
        "reliability": summary(model), "gene_choice": genes_record(model), **(uns or {}),
    }
    return out


def genes_record(model) -> dict:
    """How the model's genes were chosen (named, HVGs or all detected, the HVG flavour) and the
    datasets it was trained on (whose markers a plot draws first)."""
    training = getattr(model, "training_", {}) or {}
    datasets = sorted({s["dataset"] for s in training.get("sections", []) if s.get("dataset")})
    return {**model.gene_choice().record(), "n_genes": len(model.genes_),
            "hvg_flavour": training.get("hvg_flavour"), "datasets": datasets}
