"""superres, recover, train and predict: sections (or a slide) in, a model or a predicted AnnData out.

Both run the same pipeline: HVGs on the training spots -> log1p targets -> image features of
every spot (cached) -> fit the model -> predict. ``superres`` trains on all measured spots and
predicts 4x denser spots at the midpoints between them (or 9x / 16x, ``factor``); ``recover``
holds out a seeded fraction of the spots and scores the prediction against their measured values.
"""

from __future__ import annotations

import os
import time

import anndata as ad
import numpy as np
import pandas as pd

from . import geometry, keys
from . import options as _options
from ._json import jsonable
from .errors import InputError
from .evaluate import score
from .genes import log_normalize
from .model.reliability import gene_table
from .model.reliability import summary as reliability_summary
from .model.section import SectionModel, create_model
from .options import ModelOptions


def _model_options(options: ModelOptions | None, kwargs: dict) -> ModelOptions:
    """The one options object: given, or made (and checked) from keyword arguments."""
    if options is not None:
        if kwargs:
            raise InputError(f"options given twice: options= and {', '.join(sorted(kwargs))}", where=sorted(kwargs)[0],
                             fix="give the options as one ModelOptions, or as keyword arguments")
        return options
    return ModelOptions.from_kwargs(**kwargs)


def _start(adata: ad.AnnData, options: ModelOptions | None, kwargs: dict):
    """What superres and recover begin with: the options and the model of ``opts.method`` (any
    registered method that runs on one section: ``HisToSGE`` for HisToSGE's, a ``SectionModel``
    for the others; an unknown method or option and a named gene the section lacks fail here,
    before any work, as one ``InputError``), the start time, the grid."""
    opts = _model_options(options, kwargs)
    model = create_model(opts.method, **opts.model_params())
    check_named_genes(model, [adata])
    return opts, model, time.perf_counter(), _grid(adata)


def check_named_genes(model, sections: list[ad.AnnData]) -> None:
    """Named genes every training section must measure: refused (with close names) before any
    image is encoded."""
    from .genes import check_named

    named = getattr(model, "genes", ())
    for s in sections:
        check_named(named, s.var_names, what=str(keys.info(s).get("library_id") or "the section"))


def _grid(adata: ad.AnnData) -> tuple[np.ndarray, np.ndarray, str]:
    for key in ("array_row", "array_col"):
        if key not in adata.obs:
            raise InputError(f"obs['{key}'] is missing", where="AnnData",
                             fix="read the section with histosge.read_section, which sets the grid")
    return (adata.obs["array_row"].to_numpy(float), adata.obs["array_col"].to_numpy(float), keys.grid(adata))


def _spots_like(adata: ad.AnnData, rows, cols, xy, names) -> ad.AnnData:
    """An AnnData of spots (no expression) in ``adata``'s section: its images, scale and units."""
    out = ad.AnnData(obs=pd.DataFrame({"array_row": rows, "array_col": cols}, index=pd.Index(names)))
    out.obsm[keys.SPATIAL] = np.asarray(xy, np.float64)
    out.uns[keys.SPATIAL] = _uns_spatial(adata)
    out.uns[keys.HISTOSGE] = dict(keys.info(adata))
    return out


def _features(adata: ad.AnnData, model, xy: np.ndarray, opts: ModelOptions, image, progress: bool):
    """Image features of the spots at ``xy`` at the model's patch size (cached on disk), and the
    encoder's name; (None, None) for a method that reads no image (nothing is encoded). The
    encoder is the model's own (``build_encoder``), which its ``fit`` then uses too."""
    from .features import encode_spots

    if not model.reads_image:
        return None, None

    encoder = model.build_encoder()
    patch_um = model.patch_scale * keys.spot_diameter_um(adata)
    feats = encode_spots(adata, encoder, patch_um, xy=xy, image=image, batch_size=opts.batch_size,
                         cache_dir=opts.cache_dir, progress=progress)
    return feats, encoder.name


def _uns_spatial(adata: ad.AnnData) -> dict:
    lib = keys.library_id(adata)
    spatial = adata.uns.get(keys.SPATIAL, {}) or {}
    return {lib: spatial[lib]} if lib in spatial else {}


def _input_record(adata: ad.AnnData) -> dict:
    """What the reader recorded about the input that an output should keep (its source, the
    alignment check's score, the spot size and where it came from)."""
    info = keys.info(adata)
    return {k: info[k] for k in ("source", "dataset", "grid", "alignment", "spot_diameter_um",
                                 "spot_diameter_um_source") if k in info}


def superres(adata: ad.AnnData, image: str | None = None, *, factor: int = 4, progress: bool = True,
             options: ModelOptions | None = None, **kwargs) -> ad.AnnData:
    """Predict expression at ``factor`` (4, 9 or 16) times denser spots between measured neighbours.

    4x places them at the midpoints; 9x and 16x cut every edge into 3 or 4 parts and fill the
    cells between (``geometry.dense_points``). The model of ``method`` (default ``HisToSGE``,
    neighbours mode) is fitted on every measured spot. :func:`histosge.superres` is the public door to this function
    and documents it in full.

    Parameters
    ----------
    adata : AnnData
        A section as ``histosge.read_section`` returns it.
    image : str, optional
        The full-resolution H&E to cut patches from; default the image the section references.
    factor : int
        4, 9 or 16 spots per measured spot.
    progress : bool
        Progress bars on a terminal, a line every few seconds in a log.
    options : ModelOptions, optional
        The model options as one object (what the CLI passes), or else:
    **kwargs
        The fields of ``histosge.options.ModelOptions`` (method, encoder, weights, patch_scale,
        genes, n_top_genes, all_genes, reliability, epochs, group_size, patience, seed, device,
        cache_dir, batch_size, prior).

    Returns
    -------
    AnnData
        Measured + generated spots; every key written is listed under :func:`histosge.superres`.
    """
    factor = _options.check("factor", factor)  # bad options fail before any work (options.RULES)
    opts, model, t0, (rows, cols, grid) = _start(adata, options, kwargs)
    xy = np.asarray(adata.obsm[keys.SPATIAL], np.float64)
    points = geometry.dense_points(rows, cols, grid, factor)
    if len(points) == 0:
        raise InputError("no two measured spots are grid neighbours, so no spot can be generated",
                         where="spot positions", fix="check array_row/array_col or x/y of the section")
    gen_xy, fit_rms = geometry.place_generated(rows, cols, xy, points)
    gen_rows, gen_cols = points["array_row"].to_numpy(), points["array_col"].to_numpy()
    n = adata.n_obs
    feats, enc_name = _features(adata, model, np.vstack([xy, gen_xy]), opts, image, progress)
    t_feat = time.perf_counter()
    model.fit(adata, features=None if feats is None else feats[:n], progress=progress)
    names = [str(b) for b in adata.obs_names] + [f"gen_{r:g}_{c:g}" for r, c in zip(gen_rows, gen_cols, strict=True)]
    both = _spots_like(adata, np.concatenate([rows, gen_rows]), np.concatenate([cols, gen_cols]),
                       np.vstack([xy, gen_xy]), names)
    predicted = model.predict(both, features=feats, progress=progress)
    t_fit = time.perf_counter()
    y = log_normalize(adata, model.genes_)

    obs = predicted.obs[["array_row", "array_col"]].copy()
    obs.insert(0, "spot_type", pd.Categorical(["measured"] * n + ["generated"] * len(points),
                                              categories=["measured", "generated"]))
    if "annotation" in adata.obs:
        obs["annotation"] = pd.Categorical(list(adata.obs["annotation"].astype(object)) + [np.nan] * len(points))
    _novelty(obs, predicted)
    pred = np.asarray(predicted.X, np.float32)
    out = ad.AnnData(X=np.vstack([y, pred[n:]]).astype(np.float32), obs=obs, var=gene_table(model))
    out.layers["predicted"] = pred
    out.obsm[keys.SPATIAL] = both.obsm[keys.SPATIAL]
    if feats is not None:
        out.obsm[keys.FEATURES] = feats
    out.uns[keys.SPATIAL] = _uns_spatial(adata)
    out.uns[keys.HISTOSGE] = {
        "task": "superres", "library_id": keys.library_id(adata), "grid": grid, "factor": int(factor),
        "n_measured": int(n), "n_generated": int(len(points)), "hvg_flavour": model.training_["hvg_flavour"],
        "array_to_pixel_rms_px": fit_rms, "settings": opts.settings(enc_name), "input": _input_record(adata),
        "features": model.encoder_, "model": jsonable(model.info_), "training_scores": model.scores_,
        "gene_choice": _genes_record(model), "reliability": jsonable(reliability_summary(model)),
        "seconds": {"features": t_feat - t0, "fit_predict": t_fit - t_feat, "total": time.perf_counter() - t0},
        "note": "X: measured log1p for measured spots, predicted for generated spots; "
                "layers['predicted']: model output everywhere (in-sample on measured spots).",
    }
    return out


def recover(adata: ad.AnnData, image: str | None = None, *, holdout: float = 0.5, progress: bool = True,
            options: ModelOptions | None = None, **kwargs) -> ad.AnnData:
    """Hold out a seeded fraction of the spots, predict them, and score against their measurement.

    The score (``uns['histosge']['metrics']``) is on held-out spots only: mean per-gene
    Pearson (pcc), the 50 most variable genes (pcc_top50), MSE and MAE of log1p values.
    ``obs['split']`` says which spots trained ('train') and which were held out ('held-out').
    :func:`histosge.recover` is the public door to this function and documents it in full.

    Parameters
    ----------
    holdout : float
        Fraction of the spots held out (seeded by ``seed``).
    adata, image, progress, options, **kwargs
        As :func:`superres`.

    Returns
    -------
    AnnData
        Every spot, measured and predicted; every key written is listed under
        :func:`histosge.recover`.
    """
    holdout = _options.check("holdout", holdout)  # bad options fail before any work (options.RULES)
    opts, model, t0, (rows, cols, grid) = _start(adata, options, kwargs)
    train, test = geometry.random_split(adata.n_obs, holdout, opts.seed)
    is_train = np.zeros(adata.n_obs, bool)
    is_train[train] = True
    feats, enc_name = _features(adata, model, np.asarray(adata.obsm[keys.SPATIAL], np.float64), opts, image,
                                progress)
    t_feat = time.perf_counter()
    model.fit(adata[train], features=None if feats is None else feats[train], progress=progress)
    predicted = model.predict(adata, features=feats, progress=progress)
    t_fit = time.perf_counter()
    y = log_normalize(adata, model.genes_)
    pred = np.asarray(predicted.X, np.float32)
    metrics = score(y[test], pred[test])

    obs = pd.DataFrame({"split": pd.Categorical(np.where(is_train, "train", "held-out"),
                                                categories=["train", "held-out"]),
                        "array_row": rows, "array_col": cols}, index=adata.obs_names.astype(str))
    if "annotation" in adata.obs:
        obs["annotation"] = adata.obs["annotation"].to_numpy()
    _novelty(obs, predicted)
    out = ad.AnnData(X=y, obs=obs, var=gene_table(model))
    out.layers["predicted"] = pred
    out.obsm[keys.SPATIAL] = np.asarray(adata.obsm[keys.SPATIAL], np.float64)
    if feats is not None:
        out.obsm[keys.FEATURES] = feats
    out.uns[keys.SPATIAL] = _uns_spatial(adata)
    out.uns[keys.HISTOSGE] = {
        "task": "recover", "library_id": keys.library_id(adata), "grid": grid,
        "hvg_flavour": model.training_["hvg_flavour"],
        "n_train": int(len(train)), "n_test": int(len(test)), "holdout": holdout,
        "metrics": metrics, "metrics_scope": "held-out spots only", "input": _input_record(adata),
        "settings": opts.settings(enc_name), "features": model.encoder_, "model": jsonable(model.info_),
        "gene_choice": _genes_record(model), "reliability": jsonable(reliability_summary(model)),
        "seconds": {"features": t_feat - t0, "fit_predict": t_fit - t_feat, "total": time.perf_counter() - t0},
    }
    return out


def _genes_record(model) -> dict:
    """How the predicted genes were chosen, for ``uns['histosge']['genes']``."""
    from .model.output import genes_record

    return jsonable(genes_record(model))


def _novelty(obs: pd.DataFrame, predicted: ad.AnnData) -> None:
    """Copy ``obs['novelty']`` / ``obs['novel']`` from a prediction that has them (``HisToSGE``
    scores how far each spot's image lies from the training images; other methods do not)."""
    for col in ("novelty", "novel"):
        if col in predicted.obs:
            obs[col] = predicted.obs[col].to_numpy()


def train(sources, *, method: str = "histosge", mode: str | None = None, data_dir=None, cache_dir=None,
          batch_size: int = 64, progress: bool = True, **params):
    """Fit a model of any method on sections given by name or as AnnData: what ``histosge train`` saves.

    Reading and fitting in one call, so the CLI and a script train the same model from the same
    names (``read_section``'s paths and dataset names).

    Parameters
    ----------
    sources : str or AnnData or list of them
        Sections as ``histosge.read_section`` takes them, or already read.
    method : str
        A method of ``histosge.methods.list_methods()`` that runs on sections (default
        ``"histosge"``); its section-level model is ``histosge.methods.create_model(method)``.
    mode : str, optional
        HisToSGE's: ``"neighbours"`` (default), ``"image"`` (several sections; predicts slides
        alone) or ``"paper"``; other methods have none.
    data_dir : str or path, optional
        The folder dataset names are looked up in; default ``$HISTOSGE_DATA``.
    cache_dir : str or path, optional
        The feature cache (``histosge.encode.extract``); default ``$HISTOSGE_CACHE/features``.
    batch_size : int
        Patches encoded at once.
    progress : bool
        Progress bars on a terminal, a line every few seconds in a log.
    **params
        The model's constructor arguments (``encoder``, ``weights``, ``genes``, ``n_top_genes``,
        ``all_genes``, ``seed``,
        ``network``, ``prior`` ...; see ``HisToSGE``), the method's own, and ``epochs`` /
        ``patience`` / ``group_size``.

    Returns
    -------
    SectionModel
        The fitted model (a ``HisToSGE`` for HisToSGE's methods; ``save`` it to a file for
        ``histosge predict``).

    Raises
    ------
    InputError
        An unknown method or one that needs other sections, a section that cannot be read, a
        bad model parameter, or several sections for a model that fits one.
    """
    from .model.section import create_model
    from .read import read_section

    if "n_genes" in params:
        ModelOptions.from_kwargs(**params)  # the one message for the old name
    model = create_model(method, mode=mode, **params)  # a bad method or option fails before reading
    sources = [sources] if isinstance(sources, (str, ad.AnnData)) else list(sources)
    sections = [s if isinstance(s, ad.AnnData) else read_section(s, data_dir=data_dir) for s in sources]
    check_named_genes(model, sections)
    return model.fit(sections, cache_dir=cache_dir, batch_size=batch_size, progress=progress)


def is_slide(source) -> bool:
    """A file that is an image (a slide), not a section (.h5ad, Space Ranger folder, dataset name)."""
    from .read.resolve import is_slide as _is_slide

    return _is_slide(source)


def predict(model: SectionModel | str, source, *, mpp: float | None = None, factor: int | None = None,
            pitch_um: float | None = None, image: str | None = None, data_dir=None, cache_dir=None,
            batch_size: int = 64, progress: bool = True) -> ad.AnnData:
    """Predict with a fitted or saved model on a section or an H&E slide.

    :func:`histosge.predict` is the public door to this function and documents it in full.

    - A slide (an image file with no spatial data): an image-mode model predicts a hexagonal
      lattice of virtual spots on its tissue, at the training platform's pitch
      (``model.pitch_um_``), ``factor`` (4, 9, 16) times denser, or ``pitch_um``.
    - A section with expression: its measured spots, plus ``factor`` times denser generated ones
      (default 4 for a neighbours-mode model, which then uses the measured spots as context).

    Parameters
    ----------
    model : SectionModel or str
        A fitted model of any method, or the path of its file.
    source : str or path or AnnData
        A slide (image file) or a section (path, dataset name, AnnData).
    mpp : float, optional
        Micrometres per pixel of a slide that does not record it.
    factor : int, optional
        4, 9 or 16: denser virtual spots (slide) or generated spots (section).
    pitch_um : float, optional
        The virtual spots' pitch on a slide instead of ``factor``.
    image : str, optional
        A section's full-resolution H&E.
    data_dir : str or path, optional
        The folder dataset names are looked up in.
    cache_dir, batch_size, progress
        The feature cache, patches encoded at once, progress bars (as :func:`train`).

    Returns
    -------
    AnnData
        The AnnData of ``SectionModel.predict`` plus, for sections, ``obs['spot_type']``; every key
        written is listed under :func:`histosge.predict`.
    """
    from .read import read_section
    from .read.slide import read_slide

    if isinstance(model, (str, os.PathLike)):
        from .model.persist import load_model

        model = load_model(model)
    t0 = time.perf_counter()
    if is_slide(source):
        pitch = slide_pitch(model, source, factor=factor, pitch_um=pitch_um)
        slide = read_slide(source, pitch_um=pitch, spot_diameter_um=model.spot_diameter_um_, mpp=mpp,
                           bytes_per_spot=bytes_per_spot(model))
        out = predict_slide(model, slide, source, pitch, cache_dir=cache_dir, batch_size=batch_size,
                            progress=progress)
    else:
        adata = source if isinstance(source, ad.AnnData) else read_section(source, image=image, data_dir=data_dir)
        factor = factor or (4 if model.mode == "neighbours" else 1)
        query, n_gen = _with_generated(adata, factor)
        context = adata if model.mode == "neighbours" else None
        out = model.predict(query, context=context, cache_dir=cache_dir, batch_size=batch_size, progress=progress)
        out.obs["spot_type"] = query.obs["spot_type"].to_numpy()
        out.uns[keys.HISTOSGE].update({"input": "section", "section": _input_record(adata),
                                       "source": str(keys.info(adata).get("source", source)),
                                       "factor": int(factor), "n_measured": int(adata.n_obs),
                                       "n_generated": int(n_gen)})
    out.uns[keys.HISTOSGE]["seconds"] = time.perf_counter() - t0
    return out


def bytes_per_spot(model) -> float:
    """What predicting one spot of a slide costs in memory, roughly: its features (twice: each spot
    and its ring), their standardised copy, and three copies of its predicted genes."""
    return 4.0 * (3 * int(getattr(model, "n_features_in_", 0)) + 3 * len(getattr(model, "genes_", [])))


def slide_pitch(model: SectionModel, source, *, factor: int | None = None, pitch_um: float | None = None) -> float:
    """The distance between virtual spots on a slide, in micrometres: ``pitch_um``, else the
    model's training pitch ``factor`` (4, 9, 16) times denser. Refuses a model that cannot
    predict an image alone (neighbours and paper modes need measured spots)."""
    if model.mode != "image":
        raise InputError(f"a {model.mode}-mode model needs measured spots; {source} is an image alone",
                         where=str(source), fix="train an image-mode model: histosge train ... --mode image")
    if factor is not None and pitch_um is not None:
        raise InputError("--factor and --pitch-um both set the spot pitch", where="--pitch-um",
                         fix="give one of them")
    if pitch_um is not None:
        return float(pitch_um)
    own = float(model.pitch_um_)
    if not np.isfinite(own):
        raise InputError("the model does not record its training pitch", where="model",
                         fix="give --pitch-um")
    if not own > 0:  # never blamed on a --pitch-um nobody gave
        raise InputError(f"the model records a spot pitch of {own:g} um", where="model",
                         fix="use an intact model file written by histosge train, or give --pitch-um")
    return own / (geometry.steps_of(factor) if factor else 1)


def predict_slide(model: SectionModel, slide: ad.AnnData, source, pitch_um: float, *, cache_dir=None,
                  batch_size: int = 64, progress: bool = True) -> ad.AnnData:
    """``model.predict`` on the virtual spots of a slide read by ``read.slide.read_slide``, with
    the slide's provenance in ``uns['histosge']`` (what ``predict`` returns for a slide)."""
    out = model.predict(slide, cache_dir=cache_dir, batch_size=batch_size, progress=progress)
    out.uns[keys.HISTOSGE]["slide"] = slide.uns[keys.HISTOSGE]["slide"]
    out.uns[keys.HISTOSGE].update({"input": "slide", "source": str(source), "pitch_um": float(pitch_um)})
    return out


def _with_generated(adata: ad.AnnData, factor: int) -> tuple[ad.AnnData, int]:
    """``adata``'s measured spots (no expression) plus ``factor`` times denser generated ones."""
    rows, cols, grid = _grid(adata)
    xy = np.asarray(adata.obsm[keys.SPATIAL], np.float64)
    names = [str(b) for b in adata.obs_names]
    kinds = ["measured"] * adata.n_obs
    if factor != 1:
        points = geometry.dense_points(rows, cols, grid, factor)
        gen_xy, _ = geometry.place_generated(rows, cols, xy, points)
        r, c = points["array_row"].to_numpy(), points["array_col"].to_numpy()
        names += [f"gen_{a:g}_{b:g}" for a, b in zip(r, c, strict=True)]
        kinds += ["generated"] * len(points)
        rows, cols, xy = np.concatenate([rows, r]), np.concatenate([cols, c]), np.vstack([xy, gen_xy])
    query = _spots_like(adata, rows, cols, xy, names)
    query.obs["spot_type"] = pd.Categorical(kinds, categories=["measured", "generated"])
    return query, len(kinds) - adata.n_obs
