"""From measured sections to what a model fits on: the path ``SectionModel.fit`` takes for every
method.

Sections -> their physical geometry (spot diameter, patch size and spot pitch in micrometres,
the lattice) -> genes (HVGs of the training spots, pooled over sections on the genes all of them
measure) -> per section: image features, log1p targets, grid positions -> one ``Spots`` with
each spot's section as its group -> the record of what was fitted on (names, sources, spot
hashes: what proves a prior never saw a section).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd

from .. import keys
from ..errors import InputError
from .contexts import Spots


def as_sections(sections: ad.AnnData | list[ad.AnnData]) -> list[ad.AnnData]:
    """One AnnData or several, as a list; none is an error."""
    sections = [sections] if isinstance(sections, ad.AnnData) else list(sections)
    if not sections:
        raise InputError("no section to fit on", where="sections", fix="give at least one AnnData")
    return sections


def set_geometry(model, sections: list[ad.AnnData]) -> None:
    """The model's physical sizes, from the first section: ``spot_diameter_um_``, ``patch_um_``
    (``patch_scale`` spot diameters), ``pitch_um_`` (median over sections) and ``grid_``."""
    spot_um = keys.spot_diameter_um(sections[0])
    model.patch_um_ = model.patch_scale * spot_um
    model.spot_diameter_um_ = spot_um
    model.pitch_um_ = measured_pitch_um(sections)
    model.grid_ = keys.grid(sections[0])


def set_genes(model, sections: list[ad.AnnData], genes: list[str] | None) -> str:
    """``genes_`` (the given ones, else the model's ``gene_choice()`` on the training spots: named
    genes plus HVGs, pooled over sections) and ``var_`` (their annotations); returns how they were
    chosen (the HVG flavour, or 'given'). Named genes detected in too few training spots to learn
    are predicted, with a warning that names them."""
    if genes is None:
        choice = model.gene_choice()
        genes, flavour = pooled_genes(sections, choice)
        warn_sparse(sections, choice.named)
    else:
        genes, flavour = [str(g) for g in genes], "given"
    model.genes_ = list(genes)
    model.var_ = var_columns(sections[0], model.genes_)
    return flavour


def warn_sparse(sections: list[ad.AnnData], named) -> list[str]:
    """Warn (one line) about named genes detected in too few training spots to learn; returns them."""
    if not named:
        return []
    from ..genes import detected_counts, too_sparse
    from ..read.checks import warn

    det = sum(detected_counts(s[:, list(named)]) for s in sections)
    sparse = [g for g, bad in zip(named, too_sparse(det, sum(s.n_obs for s in sections)), strict=True) if bad]
    if sparse:
        shown = ", ".join(f"{g} ({int(det[list(named).index(g)])} spots)" for g in sparse[:10])
        warn(f"--genes: {len(sparse)} named gene{'s are' if len(sparse) != 1 else ' is'} detected in too few "
             f"training spots to learn ({shown}); predicted, but never marked reliable")
    return sparse


@dataclass
class TrainingSpots:
    """Every training spot of every section, stacked: features and positions, log1p targets of
    ``genes``, each spot's section (``groups``) and the sections' spot hashes."""

    spots: Spots
    y: np.ndarray
    groups: np.ndarray
    hashes: list[np.ndarray]


def gather(sections: list[ad.AnnData], genes: list[str], features_of: Callable[[int, ad.AnnData], np.ndarray]
           ) -> TrainingSpots:
    """Stack the sections' spots; ``features_of(i, section)`` makes section ``i``'s features."""
    from ..genes import log_normalize
    from ..provenance import spot_hashes

    ys, parts, groups = [], [], []
    for i, s in enumerate(sections):
        parts.append(section_spots(s, features_of(i, s)))
        ys.append(log_normalize(s, genes))
        groups.append(np.full(s.n_obs, i, np.int64))
    spots = Spots(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("features", "rows", "cols", "xy")))
    return TrainingSpots(spots, np.vstack(ys), np.concatenate(groups), [spot_hashes(s) for s in sections])


def check_given_features(given, sections: list[ad.AnnData]) -> list[np.ndarray] | None:
    """Feature arrays given to ``fit``: one per section (a single array for a single section)."""
    given = [given] if isinstance(given, np.ndarray) else given
    if given is not None and len(given) != len(sections):
        raise InputError(f"{len(given)} feature arrays for {len(sections)} sections", where="features",
                         fix="give one array per section")
    return given


def training_record(sections: list[ad.AnnData], data: TrainingSpots, flavour: str, seconds: dict) -> dict:
    """What a model file says it was fitted on (``training_``)."""
    return {"sections": [section_record(s, h) for s, h in zip(sections, data.hashes, strict=True)],
            "n_spots": int(len(data.spots)), "hvg_flavour": flavour, "seconds": seconds}


def section_spots(adata: ad.AnnData, feats: np.ndarray) -> Spots:
    """The spots of ``adata`` (grid positions 0 where it has none) with ``feats``."""
    n = adata.n_obs
    rows = adata.obs["array_row"].to_numpy(np.float64) if "array_row" in adata.obs else np.zeros(n)
    cols = adata.obs["array_col"].to_numpy(np.float64) if "array_col" in adata.obs else np.zeros(n)
    return Spots(feats, rows, cols, np.asarray(adata.obsm[keys.SPATIAL], np.float64))


def pooled_genes(sections: list[ad.AnnData], choice, among: list[str] | None = None) -> tuple[list[str], str]:
    """(genes, how the HVGs were chosen) of ``choice`` (a ``genes.GeneChoice``, or a number of HVGs)
    on the training spots; several sections are pooled on the genes all of them have (``among``:
    only these, in this order; default the first section's order)."""
    from ..genes import check_named, choose_genes

    if len(sections) == 1 and among is None:
        return choose_genes(sections[0], choice)
    import scipy.sparse as sp

    common = set(sections[0].var_names)
    for s in sections[1:]:
        common &= set(s.var_names)
    genes = [g for g in (sections[0].var_names if among is None else among) if g in common]
    if not genes:
        raise InputError("the training sections share no gene", where="sections", fix="fit sections of one panel")
    named = getattr(choice, "named", ())
    if named:
        check_named(named, genes, what="every training section" + (" and the target" if among is not None else ""))
    pooled = ad.AnnData(X=sp.vstack([sp.csr_matrix(s[:, genes].X) for s in sections]).tocsr().astype(np.float32))
    pooled.var_names = genes
    pooled.obs_names = [str(i) for i in range(pooled.n_obs)]
    pooled.uns["histosge"] = {"raw_counts": all(keys.info(s).get("raw_counts", True) for s in sections)}
    return choose_genes(pooled, choice)


def pooled_hvgs(sections: list[ad.AnnData], n_genes: int, among: list[str] | None = None) -> tuple[list[str], str]:
    """The ``n_genes`` HVGs of the training spots, pooled (:func:`pooled_genes` with no named gene)."""
    return pooled_genes(sections, n_genes, among)


def var_columns(adata: ad.AnnData, genes: list[str]) -> pd.DataFrame:
    """The input's gene annotations (gene_ids, feature_types, ...) for the predicted genes."""
    var = pd.DataFrame(index=pd.Index(genes))
    present = [g for g in genes if g in adata.var_names]
    for col in adata.var.columns:
        if pd.api.types.is_string_dtype(adata.var[col]) or isinstance(adata.var[col].dtype, pd.CategoricalDtype):
            values = adata.var[col].astype(str).reindex(present)
            var[col] = values.reindex(genes).fillna("").to_numpy(dtype=object).astype(str)
    return var


def section_record(adata: ad.AnnData, hashes: np.ndarray) -> dict:
    """Name, source, size and fingerprint of a training section (a prior must never be fitted on
    the section it is used for: the fingerprint and the spot hashes tell)."""
    info = keys.info(adata)
    return {"name": str(info.get("library_id", keys.library_id(adata))), "source": str(info.get("source", "")),
            "n_spots": int(adata.n_obs), "fingerprint": hashlib.sha256(np.sort(hashes).tobytes()).hexdigest(),
            "mpp": round(float(keys.mpp(adata)), 6), "grid": info.get("grid"),
            **({"dataset": str(info["dataset"])} if info.get("dataset") else {})}


def measured_pitch_um(sections: list[ad.AnnData]) -> float:
    """Median nearest-neighbour distance of the training spots, in micrometres."""
    from ..geometry import spot_pitch

    pitches = [spot_pitch(np.asarray(s.obsm[keys.SPATIAL], np.float64)) * keys.mpp(s) for s in sections]
    pitches = [p for p in pitches if np.isfinite(p)]
    return float(np.median(pitches)) if pitches else float("nan")
