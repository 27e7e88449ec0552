"""Any registered method on sections: ``MethodModel`` (fit / predict / save / load), ``create_model``
and ``load_model``.

A method works on arrays; ``MethodModel`` gives it the model object's interface, so that
``superres``, ``recover``, ``histosge train`` and ``histosge predict`` run any method the way they
run ``HisToSGE``: HVGs of the training spots (seurat_v3 on raw counts) -> log1p targets -> image
features at ``patch_scale`` spot diameters (only for methods that read the image) -> ``fit`` ->
``predict`` -> an AnnData. ``create_model(name)`` is the one door: it returns the section-level
model the method's class names (``HisToSGE`` for ``histosge`` and ``histosge-paper``, a
``MethodModel`` for every other method).

A model file holds numbers and JSON only, in the container of ``histosge.model.persist``
(safetensors; the description under the header key ``histosge`` names the method under
``method``; schema 2). ``load_model(path)`` reads either kind.

A method that needs the target section's measured expression (``knn``, ``stage``) predicts
positions of a section with measured spots: by default the training spots are the context, and
``predict(adata, context=section)`` uses that section's measured spots instead (what
``histosge predict MODEL SECTION`` does). It never predicts an H&E image alone.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import os
import time
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import InputError
from ..model import Spots
from ..model.parts import nest, sub
from ..model.training_data import section_spots
from ._registry import MethodSpec, get_spec

#: Parameters of the section-level model (the rest go to the method's constructor).
MODEL_PARAMS = ("encoder", "weights", "patch_scale", "genes", "n_top_genes", "all_genes", "reliability", "seed",
                "device")


def create_method(name: str, **params: Any):
    """A new, unfitted method ``name``: the one door to a method that works on arrays.

    Parameters
    ----------
    name : str
        A registered method (``list_methods()``).
    **params
        Its constructor's keyword arguments (``seed``, and the method's own: ``n_pcs`` of
        ridge, ``epochs`` of stnet ...).

    Returns
    -------
    Method
        Unfitted: ``fit(train, y)`` then ``predict(query)`` on ``Spots``.

    Raises
    ------
    InputError
        An unknown name or parameter (the message lists what is known).
    """
    spec = get_spec(name, where="method")
    cls = spec.cls
    takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())
    unknown = [] if takes_any else sorted(set(params) - set(cls.param_names()))
    if unknown:
        raise InputError(f"method {name!r} has no parameter {', '.join(map(repr, unknown))}", where="method",
                         fix=f"its parameters: {', '.join(cls.param_names())}")
    return cls(**params)


def create_model(name: str, *, epochs: int | None = None, patience: int | None = None,
                 group_size: int | None = None, **params: Any):
    """The section-level model of method ``name``: ``fit(sections)``, ``predict(adata)``, ``save``.

    What ``superres``, ``recover`` and ``histosge train`` run: ``HisToSGE`` for ``histosge`` and
    ``histosge-paper``, a :class:`MethodModel` for every other method.

    Parameters
    ----------
    name : str
        A registered method that runs on sections (not the benchmark's cohort methods).
    epochs, patience, group_size : int, optional
        The training schedule (``--epochs`` ...), mapped onto the method's own parameters by its
        class; a method without one refuses it.
    **params
        ``encoder``, ``weights``, ``patch_scale``, ``genes``, ``n_top_genes``, ``all_genes``,
        ``reliability``, ``seed``, ``device``, ``mode``
        and ``prior`` (HisToSGE only), and any parameter of the method's constructor.

    Returns
    -------
    HisToSGE or MethodModel
        Unfitted.

    Raises
    ------
    InputError
        An unknown method, one that reads other sections, or an option it does not take (the
        message names the option: ``--method``, ``--mode``, ``--prior``, ``--epochs`` ...).
    """
    spec = get_spec(name)
    return spec.cls.section_model(**params, **spec.cls.schedule(epochs=epochs, patience=patience,
                                                                group_size=group_size))


def load_model(path: str | os.PathLike, *, device: str | None = None):
    """A fitted model of any method from the file its ``save`` wrote (``histosge train``).

    Parameters
    ----------
    path : str or path
        A ``.histosge`` model file.
    device : str, optional
        Where a method with a device runs (``"cpu"``, ``"cuda"``); default the best available.

    Returns
    -------
    HisToSGE or MethodModel
        Fitted, with ``file_sha256_`` set.

    Raises
    ------
    InputError
        A file that is not an intact model, a newer schema, or a method or encoder this
        histosge does not have.
    """
    from ..model import HisToSGE
    from ..model.persist import read_description

    meta = read_description(path)
    if "method" in meta:
        return MethodModel.load(path, device=device)
    return HisToSGE.load(path, device=device)


class MethodModel:
    """A registered method with the model object's interface (see the module docstring).

    Parameters
    ----------
    method : str
        The method's registered name (``histosge methods``).
    encoder, weights : str, optional
        Image encoder name and local weights (default the encoder registry's default); unused by
        methods that read no image.
    patch_scale : float
        Patch side in spot diameters; recorded in micrometres at fit time.
    genes, n_top_genes, all_genes
        The genes predicted: ``genes`` always, plus the ``n_top_genes`` HVGs of the training
        spots, or every gene detected in >= 1% of them (``all_genes``); as ``HisToSGE``.
    reliability : bool
        Estimate each gene's held-out Pearson (``reliability_``, ``var['cv_pcc']``) by refitting
        the method on folds: one per training section when several train, else
        ``model.reliability.REFIT_FOLDS`` random folds (methods that read grid positions or the
        measured spots predict within a section) or spatial blocks (methods that read the image
        alone). Each fold is a whole fit.
    seed : int
        Seeds the method.
    device : str, optional
        Where a method with a ``device`` parameter runs (not saved).
    params : dict, optional
        The method's constructor arguments (``histosge.methods.create_method``).
    """

    def __init__(self, method: str, *, encoder: str | None = None, weights: str | None = None,
                 patch_scale: float = 2.0, genes=None, n_top_genes: int = 1000, all_genes: bool = False,
                 reliability: bool = True, seed: int = 0, device: str | None = None,
                 params: dict[str, Any] | None = None):
        self.method = method
        self.spec: MethodSpec = get_spec(method)
        self.encoder, self.weights = encoder, weights
        from ..genes import parse_gene_names

        self.patch_scale, self.seed, self.device = float(patch_scale), int(seed), device
        self.genes = tuple(parse_gene_names(genes, where="genes")[0]) if genes not in (None, [], ()) else ()
        self.n_top_genes, self.all_genes, self.reliability = n_top_genes, bool(all_genes), bool(reliability)
        self.gene_choice()  # bad choices fail here, before any work
        self.params = dict(params or {})
        create_method(method, **self._method_args({}))  # unknown parameters fail here, before any work

    @property
    def mode(self) -> str:
        """'neighbours' when the method reads the measured spots of the section it predicts (it
        needs a section), else 'image' (it predicts any H&E image: another section, a slide)."""
        return "neighbours" if self.spec.needs_target_expression else "image"

    @property
    def reads_image(self) -> bool:
        return self.spec.reads_image

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "method_")

    def get_params(self) -> dict[str, Any]:
        from .base import _plain

        return {"method": self.method, "encoder": self.encoder, "weights": self.weights,
                "patch_scale": self.patch_scale, "genes": list(self.genes), "n_top_genes": self.n_top_genes,
                "all_genes": self.all_genes, "reliability": self.reliability, "seed": self.seed,
                "params": _plain(self.params)}

    def gene_choice(self):
        """The genes to predict, as ``genes.GeneChoice`` (named + HVGs, or all detected)."""
        from ..genes import GeneChoice

        return GeneChoice(self.genes, self.n_top_genes, self.all_genes)

    def __repr__(self) -> str:
        fitted = f", {len(self.genes_)} genes, fitted on {len(self.training_['sections'])} section(s)" \
            if self.is_fitted else ""
        return f"MethodModel({self.method!r}{fitted})"

    def _method_args(self, section: dict[str, Any]) -> dict[str, Any]:
        args = {"seed": self.seed, **self.params}
        names = self.spec.cls.param_names()
        if "device" in names:
            args["device"] = self.device
        for key in self.spec.section_params:
            args.setdefault(key, section.get(key))
        return args

    def _encoder(self):
        from .. import encode

        return encode.create(self.encoder or encode.DEFAULT_ENCODER, weights=self.weights, device=self.device)

    # -- fit ----------------------------------------------------------------------------------------
    def fit(self, sections: ad.AnnData | list[ad.AnnData], *, genes: list[str] | None = None,
            features: np.ndarray | list[np.ndarray] | None = None, cache_dir=None, batch_size: int = 64,
            progress: bool = True) -> MethodModel:
        """Fit on the measured spots of ``sections`` (one AnnData or a list; a method that reads
        the target's expression takes exactly one). ``genes``: predict these instead of the HVGs.
        ``features``: the spots' image features at this model's patch size by its encoder (one
        array per section; ignored by methods that read no image). Returns ``self``."""
        from ..features import record
        from ..model import training_data as T

        t0 = time.perf_counter()
        sections = T.as_sections(sections)
        if self.spec.needs_target_expression and len(sections) != 1:
            raise InputError(f"method {self.method!r} reads the measured spots of the section it predicts, so it fits "
                             f"one section, got {len(sections)}", where="sections",
                             fix="fit one section, or use a method that reads the image (e.g. ridge)")
        T.set_geometry(self, sections)
        encoder = None
        if self.reads_image:
            encoder = self._encoder()
            self.encoder_ = record(encoder, self.patch_um_) | {"dim": int(encoder.dim)}
        else:
            self.encoder_ = {"encoder": None, "note": f"method {self.method!r} reads no image"}
        flavour = T.set_genes(self, sections, genes)
        given = T.check_given_features(features, sections) if self.reads_image else None
        data = T.gather(sections, self.genes_, lambda i, s: self._features(
            s, encoder, None if given is None else given[i], cache_dir=cache_dir, batch_size=batch_size,
            progress=progress))
        if len(data.y) < 3:
            raise InputError(f"only {len(data.y)} training spots", where="training spots", fix="use more spots")
        t_feat = time.perf_counter()
        method = create_method(self.method, **self._method_args({"grid": self.grid_}))
        method.fit(data.spots, data.y, groups=data.groups)
        self.method_ = method
        self.n_features_in_ = int(data.spots.features.shape[1])
        self.extent_ = np.concatenate([data.spots.xy.min(0), data.spots.xy.max(0)]).astype(np.float64)
        self.info_ = dict(method.info)
        self.scores_ = {"scope": f"none: method {self.method!r} keeps no training spot out of its fit"}
        self.reliability_, self.reliability_note_ = None, "not estimated (reliability=False)"
        if self.reliability:
            self.reliability_, self.reliability_note_ = self._estimate_reliability(data), None
        self.spot_hashes_ = np.concatenate(data.hashes)
        self.training_ = T.training_record(sections, data, flavour,
                                           {"features": t_feat - t0, "fit": time.perf_counter() - t_feat})
        return self

    def _estimate_reliability(self, data):
        """Refit the method on folds of the training spots and score what each fit predicts for the
        spots it did not see (see the class docstring for the folds)."""
        from ..model.contexts import spatial_blocks
        from ..model.reliability import REFIT_FOLDS, SCORE_FOLDS, estimate, random_folds, sparse_genes

        n_sections = len(np.unique(data.groups))
        if n_sections >= 2:  # fitted without a section, scored on it
            folds = scored = data.groups
            scope = f"each of {n_sections} training sections predicted by a fit without it, scored per section"
        elif self.spec.reads_positions or self.spec.needs_target_expression:  # spots held out among the others
            folds = scored = random_folds(len(data.y), REFIT_FOLDS, self.seed)
            scope = f"{REFIT_FOLDS} random folds of the training spots, each predicted by a fit without it"
        else:  # blocks stand in for sections; each fold's Pearson spans the whole section
            folds = spatial_blocks(data.spots.xy, REFIT_FOLDS, self.seed)
            scored = random_folds(len(data.y), SCORE_FOLDS, self.seed)
            scope = (f"{REFIT_FOLDS} spatial blocks of the section, each predicted by a fit without it, scored in "
                     f"{SCORE_FOLDS} random folds of the section")
        oof = np.zeros_like(data.y)
        for f in np.unique(folds):
            out = folds == f
            method = create_method(self.method, **self._method_args({"grid": self.grid_}))
            method.fit(data.spots.subset(~out), data.y[~out], groups=data.groups[~out])
            oof[out] = np.asarray(method.predict(data.spots.subset(out)), np.float32)
        return estimate(data.y, oof, scored, sparse=sparse_genes(data.y), scope=scope)

    # -- predict ------------------------------------------------------------------------------------
    def predict(self, adata: ad.AnnData, context: ad.AnnData | None = None, *, features: np.ndarray | None = None,
                cache_dir=None, batch_size: int = 64, progress: bool = True) -> ad.AnnData:
        """Predicted log1p expression at the spots of ``adata``: an AnnData with ``X`` (spots x
        ``genes_``, the method's output as it is), ``obs`` array_row/array_col (and in_tissue,
        spot_type when the input has them), ``obsm['spatial']`` and ``uns['spatial']`` as the
        input's, ``obsm['features']`` (methods that read the image), and ``uns['histosge']``
        (method, model, encoder, genes, units).

        ``context``: for a method that reads the target's measured expression, a section with
        measured spots (same pixel frame as ``adata``) that stand in for the training spots;
        by default the training spots, and then ``adata`` must lie on the training section.
        ``features``: the spots' features, made by this model's encoder at its patch size.
        """
        self._check_fitted()
        feats = self._features(adata, None, features, cache_dir=cache_dir, batch_size=batch_size, progress=progress)
        query = section_spots(adata, feats)
        from threadpoolctl import threadpool_limits

        kw: dict[str, Any] = {}
        if self.spec.needs_target_expression:
            if context is None:
                self._check_within_training(query.xy)
            else:
                kw["context"] = self._measured(context)
        elif context is not None:
            raise InputError(f"method {self.method!r} takes no context (it does not read measured spots)",
                             where="context", fix="drop context")
        # One BLAS thread: a prediction the same bit for bit on any machine (as HisToSGE.predict).
        with threadpool_limits(limits=1, user_api="blas"):
            pred = np.asarray(self.method_.predict(query, **kw), np.float32)
        if pred.shape != (adata.n_obs, len(self.genes_)):
            raise AssertionError(f"method {self.method!r} predicted shape {pred.shape}, expected "
                                 f"{(adata.n_obs, len(self.genes_))}")
        return self._output(adata, query, pred)

    def _features(self, adata: ad.AnnData, encoder, given: np.ndarray | None, **kw) -> np.ndarray:
        if not self.reads_image:
            return np.zeros((adata.n_obs, 0), np.float32)
        from ..features import for_model

        feats = for_model(adata, self, encoder, given, **kw)
        if hasattr(self, "n_features_in_") and feats.shape[1] != self.n_features_in_:
            raise InputError(f"features have {feats.shape[1]} columns, the model was fitted on {self.n_features_in_}",
                             where="features", fix="encode with the model's encoder")
        return feats

    def _measured(self, context: ad.AnnData) -> tuple[Spots, np.ndarray]:
        from ..genes import log_normalize

        missing = [g for g in self.genes_ if g not in set(context.var_names)]
        if missing:
            raise InputError(f"the context section lacks {len(missing)} of the model's {len(self.genes_)} genes: "
                             f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}", where="context",
                             fix="give a context section measured on the same gene panel")
        return section_spots(context, np.zeros((context.n_obs, 0), np.float32)), log_normalize(context, self.genes_)

    def _check_within_training(self, xy: np.ndarray) -> None:
        """Without a context, the training spots are the measured ones: most query spots must lie
        on the training section (within its extent padded by a tenth of its size)."""
        lo, hi = self.extent_[:2], self.extent_[2:]
        pad = 0.1 * (hi - lo) + 1.0
        inside = np.all((xy >= lo - pad) & (xy <= hi + pad), axis=1)
        if len(xy) and inside.mean() < 0.5:
            raise InputError(f"{int((~inside).sum())} of {len(xy)} spots lie outside the section method "
                             f"{self.method!r} was fitted on, and it reads that section's measured spots",
                             where="predict", fix="pass the predicted section's measured spots as context, or use "
                                                  "a method that reads the image (e.g. ridge)")

    def _output(self, adata: ad.AnnData, query: Spots, pred: np.ndarray) -> ad.AnnData:
        from ..model.output import prediction_anndata

        return prediction_anndata(self, adata, query, pred, features=self.reads_image, uns={"method": self.method})

    def provenance(self) -> dict:
        """What identifies this model in an output: method, training sections and (once saved or
        loaded) the model file's SHA-256."""
        return {"method": self.method, "mode": self.mode, "sha256": getattr(self, "file_sha256_", None),
                "training_sections": [s["name"] for s in self.training_["sections"]]
                if hasattr(self, "training_") else []}

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise InputError("the model is not fitted", where=f"MethodModel({self.method!r})",
                             fix="call fit(...) or histosge.methods.load_model(path)")

    # -- save / load --------------------------------------------------------------------------------
    def describe(self) -> dict:
        """The JSON description written with the arrays (what ``read_description`` shows)."""
        from .. import __version__
        from ..model.persist import FORMAT, SCHEMA_VERSION, _jsonable, reliability_description

        _, method_meta = self.method_.state()
        return {
            "format": FORMAT, "schema_version": SCHEMA_VERSION, "histosge_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "method": self.method, "mode": self.mode, "hyperparameters": self.get_params(),
            "method_params": self.method_.get_params(), "method_state": _jsonable(method_meta),
            "genes": list(self.genes_), "var": {c: list(map(str, self.var_[c])) for c in self.var_.columns},
            "normalisation": {"target_sum": 1e4, "library_size": "all genes of the spot", "transform": "log1p"},
            "encoder": dict(self.encoder_),
            "geometry": {"patch_um": self.patch_um_, "patch_scale": self.patch_scale,
                         "spot_diameter_um": self.spot_diameter_um_, "pitch_um": self.pitch_um_, "grid": self.grid_},
            "training": self.training_, "scores": self.scores_, "info": _jsonable(self.info_),
            "n_features_in": self.n_features_in_, "reliability": reliability_description(self),
        }

    def save(self, path: str | os.PathLike) -> str:
        """Write the model to one file (JSON description + safetensors arrays; no pickle), atomically.
        Returns the file's SHA-256."""
        from ..model.persist import write

        self._check_fitted()
        arrays, _ = self.method_.state()
        arrays = nest("method", arrays) | {"training.spot_hashes": self.spot_hashes_, "extent": self.extent_}
        self.file_sha256_ = write(Path(path), self.describe(), arrays)
        return self.file_sha256_

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | None = None) -> MethodModel:
        """Read a file written by ``save``; every way it can be unusable is one clear error."""
        from ..model.persist import _check_encoder, integrity, open_file, set_reliability, upgrade_params
        from ..provenance import file_sha256

        meta, arrays = open_file(path, arrays=True)
        where = str(path)
        if "method" not in meta:
            raise InputError("the file holds a HisToSGE model", where=where,
                             fix="load it with histosge.methods.load_model or HisToSGE.load")
        try:
            spec = get_spec(meta["method"], where=where)
        except InputError as err:
            raise InputError(f"the model needs method {meta['method']!r}, which this histosge does not have",
                             where=where, fix=f"install the histosge version or plugin that provides it ({err.fix})"
                             ) from None
        try:
            params = upgrade_params(meta["hyperparameters"])
            params.pop("method", None)
            self = cls(spec.name, **params, device=device)
            self.method_ = spec.cls.from_state(meta["method_params"], sub(arrays, "method"), meta["method_state"],
                                               meta.get("info", {}), device=device)
            self.genes_ = list(meta["genes"])
            self.var_ = pd.DataFrame({c: v for c, v in meta.get("var", {}).items()}, index=pd.Index(self.genes_))
            self.encoder_ = dict(meta["encoder"])
            geo = meta["geometry"]
            self.patch_um_, self.spot_diameter_um_ = float(geo["patch_um"]), float(geo["spot_diameter_um"])
            self.pitch_um_, self.grid_ = float(geo["pitch_um"]), geo.get("grid")
            self.training_, self.scores_, self.info_ = meta["training"], meta.get("scores", {}), meta.get("info", {})
            self.n_features_in_ = int(meta["n_features_in"])
            self.spot_hashes_, self.extent_ = arrays["training.spot_hashes"], arrays["extent"]
            set_reliability(self, meta)
        except InputError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise InputError(f"the model description is incomplete or inconsistent ({type(err).__name__}: {err})",
                             where=where, fix="use an intact model file written by histosge train") from None
        if self.encoder_.get("encoder"):
            _check_encoder(self.encoder_["encoder"], where)
        self._check_predicts(where)
        self.file_sha256_ = file_sha256(path)
        self.integrity_ = integrity(meta)
        return self

    def _check_predicts(self, where: str) -> None:
        """The method's arrays must predict the description's genes from its feature width: three
        spots at the training extent's centre are predicted before any work (a gene list one
        longer than the arrays, or an edited ``n_features_in``, is refused here, not after
        encoding a slide)."""
        from threadpoolctl import threadpool_limits

        centre = (np.asarray(self.extent_[:2], np.float64) + np.asarray(self.extent_[2:], np.float64)) / 2
        query = Spots(np.zeros((3, self.n_features_in_), np.float32), np.array([0.0, 0.0, 1.0]),
                      np.array([0.0, 2.0, 1.0]), centre + np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.8]]))
        try:
            with threadpool_limits(limits=1, user_api="blas"):
                shape = np.shape(self.method_.predict(query))
        except (ValueError, RuntimeError, IndexError, KeyError, TypeError) as err:
            shape = f"an error ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
        if shape != (3, len(self.genes_)):
            raise InputError(f"the model description is inconsistent: {len(self.genes_)} genes and "
                             f"n_features_in {self.n_features_in_}, but method {self.method!r} predicts {shape} from "
                             "3 spots", where=where,
                             fix="use an intact model file written by histosge train (re-copy or re-train it)")
