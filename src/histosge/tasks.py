"""superres() and recover(): a section AnnData in, a predicted AnnData out.

Both run the same pipeline: HVGs on the training spots -> log1p targets -> image features of
every spot (cached) -> fit the model -> predict. ``superres`` trains on all measured spots and
predicts 4x denser spots at the midpoints between them (or 9x / 16x, ``factor``); ``recover``
holds out a seeded fraction of the spots and scores the prediction against their measured values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd

from . import geometry
from . import options as _options
from .errors import InputError
from .evaluate import score
from .genes import log_normalize, select_hvgs
from .model.methods import METHODS, Spots, fit_predict
from .model.train import TrainConfig


@dataclass
class Options:
    """Settings shared by superres and recover (recorded in ``uns['histosge']['settings']``)."""

    encoder: str | None = None  # None: histosge.encode.DEFAULT_ENCODER
    weights: str | None = None
    patch_scale: float = 2.0  # patch side as a multiple of the spot diameter
    n_genes: int = 1000
    method: str = "histosge"
    epochs: int | None = None
    group_size: int | None = None
    patience: int | None = None
    seed: int = 0
    device: str | None = None
    cache_dir: str | None = None
    batch_size: int = 64


def _library(adata: ad.AnnData) -> str:
    info = adata.uns.get("histosge", {})
    lib = info.get("library_id")
    if lib is None and "spatial" in adata.uns and len(adata.uns["spatial"]):
        lib = next(iter(adata.uns["spatial"]))
    return str(lib or "section")


def _grid(adata: ad.AnnData) -> tuple[np.ndarray, np.ndarray, str]:
    for key in ("array_row", "array_col"):
        if key not in adata.obs:
            raise InputError(f"obs['{key}'] is missing", where="AnnData",
                             fix="read the section with histosge.read_section, which sets the grid")
    return (adata.obs["array_row"].to_numpy(float), adata.obs["array_col"].to_numpy(float),
            geometry.grid_of(adata))


def _spot_diameter(adata: ad.AnnData) -> float:
    sf = adata.uns["spatial"][_library(adata)]["scalefactors"]
    return float(sf["spot_diameter_fullres"])


def _features(adata: ad.AnnData, xy: np.ndarray, opts: Options, image=None, progress: bool = True):
    """Image features at full-resolution pixel centres ``xy`` (cached on disk)."""
    from . import encode
    from .read.image import image_for

    source, scale = image_for(adata, image)
    enc = encode.create(opts.encoder or encode.DEFAULT_ENCODER, weights=opts.weights, device=opts.device)
    feats = encode.extract(source, xy, scale, _spot_diameter(adata), encoder=enc, patch_scale=opts.patch_scale,
                           batch_size=opts.batch_size, cache_dir=opts.cache_dir, progress=progress)
    return np.asarray(feats, np.float32), enc.name


def _config(opts: Options) -> TrainConfig | None:
    from .model.methods import DEFAULT_CONFIG
    from .model.train import PAPER_CONFIG

    base = PAPER_CONFIG if opts.method == "histosge-paper" else DEFAULT_CONFIG
    return base.replace(epochs=opts.epochs, group_size=opts.group_size, patience=opts.patience,
                        device=opts.device, seed=opts.seed)


def _check_method(opts: Options) -> None:
    if opts.method not in METHODS:
        raise InputError(f"unknown method {opts.method!r}", where="--method", fix=f"use one of {', '.join(METHODS)}")


def _uns_spatial(adata: ad.AnnData) -> dict:
    lib = _library(adata)
    return {lib: adata.uns["spatial"][lib]} if "spatial" in adata.uns and lib in adata.uns["spatial"] else {}


def superres(adata: ad.AnnData, image: str | None = None, *, factor: int = 4, progress: bool = True,
             **options) -> ad.AnnData:
    """Predict expression at ``factor`` (4, 9 or 16) times denser spots between measured neighbours.

    4x places them at the midpoints; 9x and 16x cut every edge into 3 or 4 parts and fill the
    cells between (``geometry.dense_points``). Protocols G, G9 and G16 of ``histosge bench``
    score each density against measured spots.

    Returns an AnnData of measured + generated spots: ``X`` holds log1p expression of the
    HVGs (measured values for measured spots, predictions for generated ones),
    ``layers['predicted']`` the model's output for every spot, ``obs['spot_type']``
    'measured' or 'generated', ``obsm['spatial']`` full-resolution pixels, and the image and
    scale factors of the input in ``uns['spatial']`` so ``scanpy.pl.spatial`` draws it.
    """
    factor = _options.check("factor", factor)  # bad options fail before any work (options.RULES)
    opts = Options(**_options.validate(**options))
    _check_method(opts)
    t0 = time.perf_counter()
    rows, cols, grid = _grid(adata)
    xy = np.asarray(adata.obsm["spatial"], np.float64)
    genes, flavour = select_hvgs(adata, opts.n_genes)
    y = log_normalize(adata, genes)

    points = geometry.dense_points(rows, cols, grid, factor)
    if len(points) == 0:
        raise InputError("no two measured spots are grid neighbours, so no spot can be generated",
                         where="spot positions", fix="check array_row/array_col or x/y of the section")
    gen_xy, fit_rms = geometry.place_generated(rows, cols, xy, points)
    gen_rows, gen_cols = points["array_row"].to_numpy(), points["array_col"].to_numpy()

    feats, enc_name = _features(adata, np.vstack([xy, gen_xy]), opts, image, progress)
    t_feat = time.perf_counter()
    n = adata.n_obs
    measured = Spots(feats[:n], rows, cols, xy)
    both = Spots(feats, np.concatenate([rows, gen_rows]), np.concatenate([cols, gen_cols]), np.vstack([xy, gen_xy]))
    pred, info = fit_predict(opts.method, measured, y, both, config=_config(opts), seed=opts.seed, progress=progress)
    t_fit = time.perf_counter()

    names = [f"gen_{r:g}_{c:g}" for r, c in zip(gen_rows, gen_cols, strict=True)]
    obs = pd.DataFrame(
        {
            "spot_type": pd.Categorical(["measured"] * n + ["generated"] * len(points),
                                        categories=["measured", "generated"]),
            "array_row": np.concatenate([rows, gen_rows]),
            "array_col": np.concatenate([cols, gen_cols]),
        },
        index=pd.Index([str(b) for b in adata.obs_names] + names),
    )
    if "annotation" in adata.obs:
        obs["annotation"] = pd.Categorical(list(adata.obs["annotation"].astype(object)) + [np.nan] * len(points))
    X = np.vstack([y, pred[n:]]).astype(np.float32)
    out = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
    out.layers["predicted"] = pred.astype(np.float32)
    out.obsm["spatial"] = both.xy
    out.obsm["features"] = feats
    out.uns["spatial"] = _uns_spatial(adata)
    out.uns["histosge"] = {
        "task": "superres", "library_id": _library(adata), "grid": grid, "factor": int(factor),
        "n_measured": int(n), "n_generated": int(len(points)), "hvg_flavour": flavour,
        "array_to_pixel_rms_px": fit_rms,
        "settings": {**{k: v for k, v in vars(opts).items() if v is not None}, "encoder": enc_name},
        "model": _jsonable(info),
        "seconds": {"features": t_feat - t0, "fit_predict": t_fit - t_feat, "total": time.perf_counter() - t0},
        "note": "X: measured log1p for measured spots, predicted for generated spots; "
                "layers['predicted']: model output everywhere (in-sample on measured spots).",
    }
    return out


def recover(adata: ad.AnnData, image: str | None = None, *, holdout: float = 0.5, progress: bool = True,
            **options) -> ad.AnnData:
    """Hold out a seeded fraction of the spots, predict them, and score against their measurement.

    The score (``uns['histosge']['metrics']``) is on held-out spots only: mean per-gene
    Pearson (pcc), the 50 most variable genes (pcc_top50), MSE and MAE of log1p values.
    """
    holdout = _options.check("holdout", holdout)  # bad options fail before any work (options.RULES)
    opts = Options(**_options.validate(**options))
    _check_method(opts)
    t0 = time.perf_counter()
    rows, cols, grid = _grid(adata)
    xy = np.asarray(adata.obsm["spatial"], np.float64)
    train, test = geometry.random_split(adata.n_obs, holdout, opts.seed)
    is_train = np.zeros(adata.n_obs, bool)
    is_train[train] = True
    genes, flavour = select_hvgs(adata, opts.n_genes, train_mask=is_train)
    y = log_normalize(adata, genes)
    feats, enc_name = _features(adata, xy, opts, image, progress)
    t_feat = time.perf_counter()
    spots = Spots(feats, rows, cols, xy)
    sub = lambda idx: Spots(feats[idx], rows[idx], cols[idx], xy[idx])  # noqa: E731
    pred, info = fit_predict(opts.method, sub(train), y[train], spots, config=_config(opts), seed=opts.seed,
                             progress=progress)
    t_fit = time.perf_counter()
    metrics = score(y[test], pred[test])

    obs = pd.DataFrame({"split": pd.Categorical(np.where(is_train, "train", "test"), categories=["train", "test"]),
                        "array_row": rows, "array_col": cols}, index=adata.obs_names.astype(str))
    if "annotation" in adata.obs:
        obs["annotation"] = adata.obs["annotation"].to_numpy()
    out = ad.AnnData(X=y, obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
    out.layers["predicted"] = pred.astype(np.float32)
    out.obsm["spatial"] = spots.xy
    out.obsm["features"] = feats
    out.uns["spatial"] = _uns_spatial(adata)
    out.uns["histosge"] = {
        "task": "recover", "library_id": _library(adata), "grid": grid, "hvg_flavour": flavour,
        "n_train": int(len(train)), "n_test": int(len(test)), "holdout": holdout,
        "metrics": metrics, "metrics_scope": "held-out spots only",
        "settings": {**{k: v for k, v in vars(opts).items() if v is not None}, "encoder": enc_name},
        "model": _jsonable(info),
        "seconds": {"features": t_feat - t0, "fit_predict": t_fit - t_feat, "total": time.perf_counter() - t0},
    }
    return out


def _jsonable(obj):
    """Nested dicts of plain numbers/strings, as h5ad's uns can store them (None dropped)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    return obj
