"""``SectionModel``: one model class over every registered method (scvi-tools' shape: one model
class, the methods its modules).

A method works on arrays (``histosge.methods``: ``Spots`` and log1p expression); the section
model gives any of them the model object's interface, so ``superres``, ``recover``, ``histosge
train``, ``histosge predict`` and the benchmark run each method the same way: sections (AnnData)
-> their geometry in micrometres -> the genes (named + HVGs of the training spots) -> log1p
targets -> image features at ``patch_scale`` spot diameters (methods that read the image; the
encoder built once per model) -> the method's ``fit`` -> per-gene reliability -> ``predict`` ->
an AnnData (``model.output``) -> ``save`` / ``load`` (``model.persist``: JSON + safetensors, no
pickle; a file is rebuilt by its method's registered name).

The mode (``spec.mode``) says what a model predicts: ``"image"`` any H&E of the tissue (another
section, a slide); ``"neighbours"`` positions of a measured section, from its measured spots
(the training spots, or the predicted section's given as ``context``); ``"paper"`` the authors'
model, within its section. A neighbours-mode ``histosge`` model may read a *prior*
(``model.prior``): any fitted image-mode model of other sections of the same tissue, checked
never to have seen this section and to read the same features, and saved inside this model's file.

``histosge.model.HisToSGE`` is the section model of HisToSGE's three methods, with the
constructor (``mode``) and the model-file layout they had before the registry.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .. import keys
from .._json import jsonable
from ..errors import InputError
from ..methods._registry import MethodSpec, create_method, get_spec
from . import persist
from .contexts import Spots
from .parts import nest, sub
from .prior import Prior

#: Parameters of the section model; the rest of ``create_model``'s go to the method's constructor.
MODEL_PARAMS = ("encoder", "weights", "patch_scale", "genes", "n_top_genes", "all_genes", "reliability", "seed",
                "device", "prior")


class SectionModel:
    """Any registered method on sections: ``SectionModel("ridge").fit(sections).predict(adata)``.

    Parameters
    ----------
    method : str
        The method's registered name (``histosge methods``).
    encoder : str or Encoder, optional
        The image encoder (``histosge encoders``; default the registry's default), by name or
        already built (``histosge.encode.create``): it is built once per model and used for
        fitting and predicting alike. Unused by methods that read no image.
    weights : str, optional
        A local weights file for an encoder given by name.
    patch_scale : float
        Patch side in spot diameters; recorded in micrometres (``patch_um_``) at fit time.
    genes, n_top_genes, all_genes
        The genes predicted: ``genes`` always, plus the ``n_top_genes`` HVGs of the training
        spots (seurat_v3 on raw counts), or every gene detected in >= 1% of them (``all_genes``).
    reliability : bool
        Estimate each gene's held-out Pearson (``reliability_``, ``var['cv_pcc']``): from the
        out-of-sample predictions the fit makes anyway where the method makes them (HisToSGE's),
        else by refitting the method on folds (one per training section when several train, else
        ``model.reliability.REFIT_FOLDS`` random folds for methods that read grid positions or
        the measured spots, spatial blocks for methods that read the image alone).
    seed : int
        Seeds the method.
    device : str, optional
        Where a method with a ``device`` parameter runs (not saved).
    prior : SectionModel or str or path, optional
        A method that reads a prior (``spec.reads_prior``): a fitted image-mode model of other
        sections of the same tissue, or its file. Checked at ``fit`` never to have seen this
        section and to read the same features (encoder, weights, patch size in micrometres);
        saved inside this model's file.
    params : dict, optional
        The method's constructor arguments (``histosge.methods.create_method``).

    Attributes
    ----------
    method_ : Method
        The fitted method.
    genes_ : list of str
        The predicted genes (the columns of every prediction); ``var_`` their annotations.
    encoder_ : dict
        The features' record (encoder, weights, patch size in micrometres, ``dim``): features
        made otherwise are refused.
    patch_um_, spot_diameter_um_, pitch_um_ : float
        Patch side, spot diameter and spot pitch of the training sections in micrometres.
    grid_ : str
        The training sections' lattice ('hex', 'square', 'checkerboard').
    n_features_in_ : int
        Columns of the image features the model was fitted on (0: the method reads no image).
    training_ : dict
        The training sections (name, source, spots, fingerprint), spot count, HVG flavour, seconds.
    scores_ : dict
        Out-of-sample scores on the training spots and their ``scope`` (where the method makes them).
    reliability_ : Reliability or None
        Per-gene ``cv_pcc`` and the ``reliable`` flag (``model.reliability``); None when not
        estimated (``reliability_note_`` says why).
    prior_ : Prior or None
        The prior, read for this model's genes.
    info_ : dict
        What fitting chose (the method's ``info``).
    file_sha256_ : str
        SHA-256 of the model file, once saved or loaded.

    Raises
    ------
    InputError
        An unknown method or parameter, a method that reads other sections (the benchmark's
        cohort methods), a prior for a method that reads none.
    """

    def __init__(self, method: str, *, encoder=None, weights: str | None = None, patch_scale: float = 2.0,
                 genes=None, n_top_genes: int = 1000, all_genes: bool = False, reliability: bool = True,
                 seed: int = 0, device: str | None = None, prior=None, params: dict[str, Any] | None = None):
        from ..genes import parse_gene_names

        self.method = method
        self.spec: MethodSpec = get_spec(method)
        if self.spec.needs_other_sections:
            raise InputError(f"method {method!r} reads the other sections of a dataset, so it runs in histosge bench "
                             "(protocols R+ and G+) only", where="--method", fix=self.spec.instead or
                             f"use one of {', '.join(s.name for s in _section_specs())}")
        if prior is not None and not self.spec.reads_prior:
            raise InputError(f"method {method!r} ({self.spec.mode} mode) takes no prior", where="--prior",
                             fix="drop --prior, or use --method histosge (neighbours mode)")
        self._encoder_built = None
        if encoder is not None and not isinstance(encoder, str):  # an Encoder, built by the caller
            self._encoder_built, encoder = encoder, encoder.name
        self.encoder, self.weights = encoder, weights
        self.patch_scale, self.seed, self.device = float(patch_scale), int(seed), device
        self.genes = tuple(parse_gene_names(genes, where="genes")[0]) if genes not in (None, [], ()) else ()
        self.n_top_genes, self.all_genes, self.reliability = n_top_genes, bool(all_genes), bool(reliability)
        self.gene_choice()  # bad choices fail here, before any work
        self.prior, self.prior_ = prior, None
        self.params = dict(params or {})
        self._method_params = create_method(method, **self._method_args({})).get_params()  # bad ones fail here

    @classmethod
    def create(cls, spec: MethodSpec, **params: Any) -> SectionModel:
        """The unfitted model ``create_model`` returns for ``spec``: ``params`` are the model's
        (``MODEL_PARAMS``) and the method's."""
        if params.pop("mode", None) is not None:
            raise InputError(f"method {spec.name!r} has no modes", where="--mode",
                             fix="drop --mode (it chooses how the histosge method predicts)")
        model = {k: params.pop(k) for k in MODEL_PARAMS if k in params}
        return cls(spec.name, **model, params=params)

    # -- what it is -----------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """'neighbours' (it reads the measured spots of the section it predicts), 'image' (it
        predicts any H&E image: another section, a slide) or 'paper' (the authors' model)."""
        return self.spec.mode

    @property
    def reads_image(self) -> bool:
        return self.spec.reads_image

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "method_")

    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments, JSON-ready: what a model file records as hyperparameters.

        ``prior`` is left out: the file holds it whole.

        Returns
        -------
        dict
            ``method``, the model's parameters, and the method's own under ``params``.
        """
        return {"method": self.method, "encoder": self.encoder, "weights": self.weights,
                "patch_scale": self.patch_scale, "genes": list(self.genes), "n_top_genes": self.n_top_genes,
                "all_genes": self.all_genes, "reliability": self.reliability, "seed": self.seed,
                "params": jsonable(self.params, drop_none=False)}

    def gene_choice(self):
        """The genes to predict, as ``genes.GeneChoice`` (named + HVGs, or all detected)."""
        from ..genes import GeneChoice

        return GeneChoice(self.genes, self.n_top_genes, self.all_genes)

    def __repr__(self) -> str:
        fitted = f", {len(self.genes_)} genes, fitted on {len(self.training_['sections'])} section(s)" \
            if self.is_fitted and hasattr(self, "training_") else ""
        return f"{type(self).__name__}({self.method!r}{fitted})"

    def _method_args(self, section: dict[str, Any]) -> dict[str, Any]:
        args = {"seed": self.seed, **self.params}
        if "device" in self.spec.cls.param_names():
            args["device"] = self.device
        for key in self.spec.section_params:
            args.setdefault(key, section.get(key))
        return args

    def build_encoder(self):
        """The image encoder, built on first use and kept: one build per model, whoever asks.

        ``superres`` encodes the generated spots with the one ``fit`` then uses.

        Returns
        -------
        Encoder
            The encoder given to the constructor, or the one its name and ``weights`` build.
        """
        if self._encoder_built is None:
            from .. import encode

            self._encoder_built = encode.create(self.encoder or encode.DEFAULT_ENCODER, weights=self.weights,
                                                device=self.device)
        return self._encoder_built

    # -- fit ----------------------------------------------------------------------------------------
    def fit(self, sections: ad.AnnData | list[ad.AnnData], *, genes: list[str] | None = None,
            features: np.ndarray | list[np.ndarray] | None = None, cache_dir=None, batch_size: int = 64,
            progress: bool = True) -> SectionModel:
        """Fit on the measured spots of one or more sections.

        Parameters
        ----------
        sections : AnnData or list of AnnData
            Sections as ``histosge.read_section`` returns them (raw counts). A model that predicts
            within its section (neighbours and paper modes) takes exactly one.
        genes : list of str, optional
            Predict exactly these (overrides ``genes`` / ``n_top_genes``; the benchmark passes
            each protocol's genes this way).
        features : ndarray or list of ndarray, optional
            The spots' image features made by this model's encoder at its patch size, one array
            per section; default ``obsm['features']`` when its record matches, else the section's
            image is encoded (cached on disk). Ignored by methods that read no image.
        cache_dir : str or path, optional
            The feature cache (``histosge.encode.extract``).
        batch_size : int
            Patches encoded at once.
        progress : bool
            Progress bars on a terminal, a line every few seconds in a log.

        Returns
        -------
        SectionModel
            ``self``, fitted (``method_``, ``genes_``, ``var_``, ``encoder_``, ``training_``...).

        Raises
        ------
        InputError
            No section, several for a model of one section, feature arrays that do not match the
            sections, sections sharing no gene, fewer than 3 spots, or a prior that saw these
            spots or reads other features.
        """
        from ..features import record
        from ..provenance import spot_identity
        from . import training_data as T

        t0 = time.perf_counter()
        sections = T.as_sections(sections)
        if self.mode != "image" and len(sections) != 1:
            raise InputError(f"method {self.method!r} ({self.mode} mode) predicts within the section it is fitted "
                             f"on, so it fits one section, got {len(sections)}", where="sections",
                             fix="fit one section, or use mode='image' (histosge train --mode image) or another "
                                 "image-mode method (ridge ...) to learn from several")
        encoder = self.build_encoder() if self.reads_image else None
        T.set_geometry(self, sections)
        if encoder is not None:
            self.encoder_ = record(encoder, self.patch_um_) | {"dim": int(encoder.dim)}
        else:
            self.encoder_ = {"encoder": None, "note": f"method {self.method!r} reads no image"}
        flavour = T.set_genes(self, sections, genes)
        given = T.check_given_features(features, sections) if self.reads_image else None
        data = T.gather(sections, self.genes_, lambda i, s: self._features(
            s, encoder, None if given is None else given[i], cache_dir=cache_dir, batch_size=batch_size,
            progress=progress))
        t_feat = time.perf_counter()
        hashes = np.concatenate(data.hashes)
        ids = [spot_identity(s) for s in sections]
        identity = (np.concatenate([i[0] for i in ids]), np.concatenate([i[1] for i in ids]))
        self.fit_spots(data.spots, data.y, groups=data.groups, progress=progress, mpp=keys.mpp(sections[0]),
                       spot_hashes=hashes, spot_identity=identity,
                       where=str(keys.info(sections[0]).get("source") or keys.library_id(sections[0])))
        self.spot_hashes_ = hashes
        self.spot_positions_, self.spot_groups_ = identity
        self.training_ = T.training_record(sections, data, flavour,
                                           {"features": t_feat - t0, "fit": time.perf_counter() - t_feat})
        return self

    def fit_spots(self, train: Spots, y: np.ndarray, *, groups: np.ndarray | None = None,
                  progress: bool = True, mpp: float | None = None, spot_hashes: np.ndarray | None = None,
                  spot_identity: tuple[np.ndarray, np.ndarray] | None = None,
                  where: str = "training spots") -> SectionModel:
        """Fit on arrays (features already made): where ``fit`` ends, and what the benchmark calls.

        Parameters
        ----------
        train : Spots
            The training spots: features, grid rows and columns, pixel centres.
        y : ndarray
            Their log1p targets, spots x ``genes_`` (``genes_`` defaults to ``gene_0``...).
        groups : ndarray, optional
            Each spot's section (image mode: rings and cross-validation never cross sections).
        progress : bool
            A progress bar while a network trains.
        mpp : float, optional
            Micrometres per pixel of ``train.xy``; sizes a prior's rings.
        spot_hashes : ndarray, optional
            ``provenance.spot_hashes`` of every spot of the section known to the caller: proves a
            prior never saw them (required with a prior; ``encoder_`` and ``patch_um_`` must be
            set too).
        spot_identity : tuple of ndarray, optional
            ``provenance.spot_identity`` of the same spots: recognises them also when the section
            was re-saved with a gene column more or less (what ``fit`` passes).
        where : str
            How an error names these spots.

        Returns
        -------
        SectionModel
            ``self``, fitted.

        Raises
        ------
        InputError
            Targets whose columns do not match ``genes_``, fewer than 3 spots, or a prior without
            spot hashes, with other features, or that saw these spots.
        """
        y = np.asarray(y, np.float32)
        # Fitted on arrays alone, the model knows nothing of where they came from; ``fit`` (or the
        # caller) sets these before, and ``save`` needs the encoder's.
        defaults = {"genes_": [f"gene_{i}" for i in range(y.shape[1])], "encoder_": {"encoder": None},
                    "patch_um_": float("nan"), "spot_diameter_um_": float("nan"), "pitch_um_": float("nan"),
                    "grid_": None}
        for name, value in defaults.items():
            if not hasattr(self, name):
                setattr(self, name, value)
        if not hasattr(self, "var_"):
            self.var_ = pd.DataFrame(index=pd.Index(self.genes_))
        if y.shape[1] != len(self.genes_):
            raise InputError(f"targets have {y.shape[1]} genes, the model {len(self.genes_)}", where="y",
                             fix="give one column per gene in genes_")
        if len(y) < 3:
            raise InputError(f"only {len(y)} training spots", where="training spots", fix="use more spots")
        self.n_features_in_ = int(train.features.shape[1])
        if mpp is not None:
            train = train.with_mpp(mpp)
        prior = self._checked_prior(train, spot_hashes, where, spot_identity)
        method = create_method(self.method, **self._method_args({"grid": self.grid_}))
        takes = method.fit_keywords()
        extra = {k: v for k, v in (("progress", progress), ("reliability", self.reliability),
                                   ("pitch_um", self.pitch_um_), ("prior", prior)) if k in takes}
        method.fit(train, y, groups=groups, **extra)
        self.method_, self.prior_ = method, prior
        self.extent_ = np.concatenate([train.xy.min(0), train.xy.max(0)]).astype(np.float64)
        self.info_ = dict(method.info)
        self.scores_ = getattr(method, "scores_", None) or \
            {"scope": f"none: method {self.method!r} keeps no training spot out of its fit"}
        self.reliability_, self.reliability_note_ = None, "not estimated (reliability=False)"
        if self.reliability:
            estimated = "reliability" in takes  # the method's fit estimated it from its own held-out predictions
            self.reliability_ = method.reliability_ if estimated else self._refit_reliability(train, y, groups)
            self.reliability_note_ = None
        return self

    def _refit_reliability(self, train: Spots, y: np.ndarray, groups: np.ndarray | None):
        """Refit the method on folds of the training spots and score what each fit predicts for the
        spots it did not see (see the class docstring for the folds)."""
        from .contexts import spatial_blocks
        from .reliability import REFIT_FOLDS, SCORE_FOLDS, estimate, random_folds, sparse_genes

        groups = np.zeros(len(y), np.int64) if groups is None else np.asarray(groups)
        n_sections = len(np.unique(groups))
        if n_sections >= 2:  # fitted without a section, scored on it
            folds = scored = groups
            scope = f"each of {n_sections} training sections predicted by a fit without it, scored per section"
        elif self.spec.reads_positions or self.mode == "neighbours":  # spots held out among the others
            folds = scored = random_folds(len(y), REFIT_FOLDS, self.seed)
            scope = f"{REFIT_FOLDS} random folds of the training spots, each predicted by a fit without it"
        else:  # blocks stand in for sections; each fold's Pearson spans the whole section
            folds = spatial_blocks(train.xy, REFIT_FOLDS, self.seed)
            scored = random_folds(len(y), SCORE_FOLDS, self.seed)
            scope = (f"{REFIT_FOLDS} spatial blocks of the section, each predicted by a fit without it, scored in "
                     f"{SCORE_FOLDS} random folds of the section")
        oof = np.zeros_like(y)
        for f in np.unique(folds):
            out = folds == f
            method = create_method(self.method, **self._method_args({"grid": self.grid_}))
            method.fit(train.subset(~out), y[~out], groups=groups[~out])
            oof[out] = np.asarray(method.predict(train.subset(out)), np.float32)
        return estimate(y, oof, scored, sparse=sparse_genes(y), scope=scope)

    def _checked_prior(self, train: Spots, hashes: np.ndarray | None, where: str,
                       identity: tuple[np.ndarray, np.ndarray] | None) -> Prior | None:
        """The prior read for this model's genes, checked: the same features, never these spots."""
        if self.prior is None:
            return None
        src = str(self.prior) if isinstance(self.prior, (str, os.PathLike)) else "prior"
        prior = Prior(resolve_prior(self.prior), self.genes_, where=src)
        prior.check_encoder(self.encoder_, self.patch_um_, train.features.shape[1])
        if hashes is None:
            raise InputError("a prior needs the hashes of the section's spots to show it never saw them",
                             where="fit_spots", fix="pass spot_hashes=histosge.provenance.spot_hashes(section), "
                                                    "or use fit(sections)")
        prior.check_unseen(hashes, where=where, identity=identity)
        return prior

    # -- predict ------------------------------------------------------------------------------------
    def predict(self, adata: ad.AnnData, context: ad.AnnData | None = None, *, features: np.ndarray | None = None,
                cache_dir=None, batch_size: int = 64, progress: bool = True) -> ad.AnnData:
        """Predict log1p expression at the spots of ``adata``: measured, generated or virtual.

        Parameters
        ----------
        adata : AnnData
            The spots to predict (measured spots, generated ones, or the virtual spots of an H&E
            slide): ``obsm['spatial']`` and an image, ``obs['array_row']``/``obs['array_col']``
            where the method reads them.
        context : AnnData, optional
            Neighbours mode: a section with measured expression whose spots stand in for the
            training spots (same pixel frame as ``adata``); default the training spots, and then
            most query spots must lie within the training section.
        features : ndarray, optional
            The spots' features, made by this model's encoder at its patch size; default
            ``obsm['features']`` if its record matches, else encoded from the image.
        cache_dir, batch_size, progress
            As :meth:`fit`.

        Returns
        -------
        AnnData
            One row per spot of ``adata``:

            - ``X``: predicted log1p(normalize_total(1e4)), spots x ``genes_``, float32;
              ``var``: ``var_`` with ``cv_pcc`` and ``reliable`` (``model.reliability``).
            - ``obs['array_row']``, ``obs['array_col']``, ``obs['in_tissue']``,
              ``obs['spot_type']``: copied when the input has them.
            - ``obs['novelty']`` and ``obs['novel']`` (methods that measure it, HisToSGE's:
              ``novelty > 1``, the spot's image lies farther from the training images than 99%
              of training spots from each other).
            - ``obsm['spatial']``: the input's, in full-resolution (level-0) pixels;
              ``obsm['features']``: the encoder's output (methods that read the image;
              ``storage.write_output`` stores it only when asked).
            - ``uns['spatial'][library_id]``: the input's, when it has one.
            - ``uns['histosge']``: ``task`` ('predict'), ``library_id``, ``mode``, ``genes``
              ('var_names'), ``units``, ``encoder`` and ``features`` (the features' record),
              ``model`` (:meth:`provenance`), ``reliability``, ``gene_choice``, ``method`` (its
              name; not for HisToSGE, whose mode says it) and ``novelty_threshold`` (1.0, where
              novelty is measured).

        Raises
        ------
        InputError
            An unfitted model, features of another width or record, neighbours-mode spots
            outside the training section without ``context``, a context for a model that reads
            none or lacking the model's genes, or spots a prior was fitted on.
        """
        from threadpoolctl import threadpool_limits

        from .training_data import section_spots

        self._check_fitted()
        feats = self._features(adata, None, features, cache_dir=cache_dir, batch_size=batch_size, progress=progress)
        query = section_spots(adata, feats).with_mpp(keys.mpp(adata))
        if self.mode != "neighbours" and context is not None:
            raise InputError(f"method {self.method!r} ({self.mode} mode) takes no context: it reads no measured spots",
                             where="context", fix="drop context, or use a neighbours-mode method (histosge, knn)")
        if self.mode == "neighbours" and context is None:
            self._check_within_training(query.xy)
        if self.prior_ is not None:
            from ..provenance import spot_hashes, spot_identity

            for section, what in ((adata, "the spots predicted"), (context, "the context section")):
                if section is not None and section.n_vars and section.X is not None:
                    self.prior_.check_unseen(spot_hashes(section), where=what, identity=spot_identity(section))
        kw = {} if context is None else {"context": self._measured(context)}
        # BLAS sums in another order with another thread count (last bits differ): one thread makes
        # a prediction the same bit for bit on any machine, a Ray worker and the local run alike.
        with threadpool_limits(limits=1, user_api="blas"):
            pred, novelty = self.method_.predict_novelty(query, **kw)
        pred = np.asarray(pred, np.float32)
        if pred.shape != (adata.n_obs, len(self.genes_)):
            raise AssertionError(f"method {self.method!r} predicted shape {pred.shape}, expected "
                                 f"{(adata.n_obs, len(self.genes_))}")
        return self._output(adata, query, pred, novelty)

    def predict_spots(self, query: Spots, *, groups: np.ndarray | None = None, mpp: float | None = None,
                      context: tuple[Spots, np.ndarray] | None = None) -> np.ndarray:
        """Predict from arrays (features already made): what ``predict``, a prior and the benchmark call.

        Parameters
        ----------
        query : Spots
            The spots to predict: features, grid rows and columns, pixel centres.
        groups : ndarray, optional
            Each query spot's section (image mode: rings never cross sections).
        mpp : float, optional
            Micrometres per pixel of ``query.xy`` (image mode: rings of the same size in
            micrometres on a denser lattice); default ``query.mpp``.
        context : tuple of (Spots, ndarray), optional
            Neighbours mode: measured spots and their log1p expression of ``genes_``, in place of
            the training spots.

        Returns
        -------
        ndarray
            Predictions, spots x ``genes_``, float32.

        Raises
        ------
        InputError
            An unfitted model, or features of another width than the training features.
        """
        self._check_fitted()
        if self.reads_image and query.features.shape[1] != self.n_features_in_:
            raise InputError(f"features have {query.features.shape[1]} columns, the model was fitted on "
                             f"{self.n_features_in_}", where="features", fix="encode with the model's encoder")
        if mpp is not None:
            query = query.with_mpp(mpp)
        kw = {"context": context} if context is not None else {}
        return np.asarray(self.method_.predict(query, groups=groups, **kw), np.float32)

    def _check_within_training(self, xy: np.ndarray) -> None:
        """Without a context, the training spots are the measured ones: most query spots must lie
        on the training section (within its extent padded by a tenth of its size)."""
        lo, hi = self.extent_[:2], self.extent_[2:]
        pad = 0.1 * (hi - lo) + 1.0
        inside = np.all((xy >= lo - pad) & (xy <= hi + pad), axis=1)
        if len(xy) and inside.mean() < 0.5:
            raise InputError(f"{int((~inside).sum())} of {len(xy)} spots lie outside the section method "
                             f"{self.method!r} was fitted on, and it reads that section's measured spots",
                             where="predict", fix="pass the predicted section's measured spots as context, or use an "
                                                  "image-mode model (histosge train --mode image, or e.g. ridge)")

    def _measured(self, context: ad.AnnData) -> tuple[Spots, np.ndarray]:
        """A context section's measured spots and their log1p expression of the model's genes."""
        from ..genes import log_normalize
        from .training_data import section_spots

        missing = [g for g in self.genes_ if g not in set(context.var_names)]
        if missing:
            raise InputError(f"the context section lacks {len(missing)} of the model's {len(self.genes_)} genes: "
                             f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}", where="context",
                             fix="give a context section measured on the same gene panel")
        return section_spots(context, np.zeros((context.n_obs, 0), np.float32)), log_normalize(context, self.genes_)

    def _features(self, adata: ad.AnnData, encoder, given: np.ndarray | None, **kw) -> np.ndarray:
        if not self.reads_image:
            return np.zeros((adata.n_obs, 0), np.float32)
        from ..features import for_model

        feats = for_model(adata, self, encoder, given, **kw)
        if hasattr(self, "n_features_in_") and feats.shape[1] != self.n_features_in_:
            raise InputError(f"features have {feats.shape[1]} columns, the model was fitted on {self.n_features_in_}",
                             where="features", fix="encode with the model's encoder")
        return feats

    def _output(self, adata: ad.AnnData, query: Spots, pred: np.ndarray, novelty: np.ndarray | None) -> ad.AnnData:
        from .output import prediction_anndata

        obs = None if novelty is None else {"novelty": novelty, "novel": novelty > 1.0}
        uns = self._names() | ({} if novelty is None else {"novelty_threshold": 1.0})
        return prediction_anndata(self, adata, query, pred, features=self.reads_image, obs=obs, uns=uns)

    def _names(self) -> dict:
        """How an output and a model file name the method (HisToSGE: by its mode alone)."""
        return {"method": self.method}

    def provenance(self) -> dict:
        """What identifies this model in an output (``uns['histosge']['model']``).

        Returns
        -------
        dict
            ``method`` (not for HisToSGE), ``mode``, ``sha256`` (the model file's, once saved or
            loaded; else None) and ``training_sections`` (their names).
        """
        return self._names() | {"mode": self.mode, "sha256": getattr(self, "file_sha256_", None),
                                "training_sections": [s["name"] for s in self.training_["sections"]]
                                if hasattr(self, "training_") else []}

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise InputError("the model is not fitted", where=f"{type(self).__name__}({self.method!r})",
                             fix="call fit(...), or load a fitted model (histosge.methods.load_model(path))")

    # -- save / load --------------------------------------------------------------------------------
    def describe(self) -> dict:
        """The JSON description a model file holds with its arrays (``persist.read_description``).

        Returns
        -------
        dict
            Format and schema, the method and its parameters, genes (with ``var``), normalisation,
            the encoder's record, geometry in micrometres, training sections, scores, ``info``,
            the feature width, per-gene reliability, and a prior's own description and record.
        """
        from .. import __version__

        _, method_meta = self.method_.state()
        out = {"format": persist.FORMAT, "schema_version": persist.SCHEMA_VERSION, "histosge_version": __version__,
               "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               **self._describe_method(method_meta),
               "genes": list(self.genes_), "var": {c: list(map(str, self.var_[c])) for c in self.var_.columns},
               "normalisation": {"target_sum": 1e4, "library_size": "all genes of the spot", "transform": "log1p"},
               "encoder": dict(self.encoder_),
               "geometry": {"patch_um": self.patch_um_, "patch_scale": self.patch_scale,
                            "spot_diameter_um": self.spot_diameter_um_, "pitch_um": self.pitch_um_,
                            "grid": self.grid_},
               "training": getattr(self, "training_", {"sections": []}), "scores": getattr(self, "scores_", {}),
               "info": jsonable(getattr(self, "info_", {})), **self._describe_after(method_meta),
               "n_features_in": self.n_features_in_, "reliability": persist.reliability_description(self)}
        if self.prior_ is not None:
            out["prior"] = {"record": self.prior_.record(getattr(self.method_, "prior_use", ())),
                            "description": self.prior_.model.describe()}
        return out

    def _describe_method(self, method_meta: dict) -> dict:
        return {"method": self.method, "mode": self.mode, "hyperparameters": self.get_params(),
                "method_params": self.method_.get_params(), "method_state": jsonable(method_meta)}

    def _describe_after(self, method_meta: dict) -> dict:
        return {}

    def state(self) -> dict[str, np.ndarray]:
        """Every fitted array, by name: what ``save`` writes besides the JSON description.

        Returns
        -------
        dict of str to ndarray
            The method's arrays, the training spots' hashes, and a prior's under ``prior.``.
        """
        out = self._arrays(self.method_.state()[0])
        if self.prior_ is not None:
            out |= nest("prior", self.prior_.model.state())
        return out

    def _arrays(self, method_arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = nest("method", method_arrays)
        if hasattr(self, "spot_hashes_"):
            out["training.spot_hashes"] = self.spot_hashes_
        return out | {"extent": self.extent_}

    def save(self, path: str | os.PathLike) -> str:
        """Write the model to one file: JSON description + safetensors arrays, no pickle, atomically.

        Numbers only, so a model file from anyone can be loaded without running their code.

        Parameters
        ----------
        path : str or path
            The file to write (replaced atomically: a reader never sees half a file).

        Returns
        -------
        str
            The file's SHA-256 (also ``file_sha256_``), which outputs record as the model's identity.

        Raises
        ------
        InputError
            The model is not fitted.
        OutputError
            The file cannot be written there.
        """
        self._check_fitted()
        self._check_savable(path)
        self.file_sha256_ = persist.write(Path(path), self.describe(), self.state())
        return self.file_sha256_

    def _check_savable(self, path) -> None:
        pass

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | None = None) -> SectionModel:
        """Read a model file written by ``save``; every way it can be unusable is one clear error.

        Parameters
        ----------
        path : str or path
            The model file.
        device : str, optional
            Where a method with a device predicts (default CUDA if present).

        Returns
        -------
        SectionModel
            The fitted model (of the class its method's registration names: ``HisToSGE`` for
            HisToSGE's methods), with ``file_sha256_`` set.

        Raises
        ------
        InputError
            A missing, truncated or foreign file, a file changed after it was written, one that
            needs a method, an encoder or a format this version does not have, or (``cls`` a
            subclass) a model of another class.
        """
        model = persist.load_model(path, device=device)
        if not isinstance(model, cls):
            raise InputError(f"the file holds a {model.method!r} model, not a {cls.__name__} one", where=str(path),
                             fix="load it with histosge.methods.load_model (histosge predict does)")
        return model

    @classmethod
    def _from_description(cls, meta: dict, arrays: dict[str, np.ndarray], spec: MethodSpec, *, where: str,
                          device: str | None) -> SectionModel:
        """A fitted model of this class from its description and arrays (a prior inside it too)."""
        try:
            self = cls._unfitted(meta, spec, device)
            self.genes_ = list(meta["genes"])
            self.var_ = pd.DataFrame({c: v for c, v in meta.get("var", {}).items()}, index=pd.Index(self.genes_))
            self.encoder_ = dict(meta["encoder"])
            geo = meta["geometry"]
            self.patch_um_, self.spot_diameter_um_ = float(geo["patch_um"]), float(geo["spot_diameter_um"])
            self.pitch_um_, self.grid_ = float(geo["pitch_um"]), geo.get("grid")
            self.training_, self.scores_, self.info_ = meta["training"], meta.get("scores", {}), meta.get("info", {})
            self.n_features_in_ = int(meta["n_features_in"])
            persist.set_reliability(self, meta)
            for name, key in (("spot_hashes_", "training.spot_hashes"), ("spot_positions_", "training.spot_positions"),
                              ("spot_groups_", "training.spot_groups"), ("extent_", "extent")):
                if key in arrays:
                    setattr(self, name, arrays[key])
            self.prior_ = None
            prior = meta.get("prior")
            if prior is not None:
                inner = persist.rebuild(prior["description"], sub(arrays, "prior"), where=where, device=device)
                inner.file_sha256_ = prior["record"].get("file_sha256")
                self.prior = inner
                self.prior_ = Prior(inner, self.genes_, where=f"{where} (its prior)")
            self.method_ = self._method_from(meta, {k: v for k, v in arrays.items() if not k.startswith("prior.")})
        except InputError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise InputError(f"the model description is incomplete or inconsistent ({type(err).__name__}: {err})",
                             where=where, fix="use an intact model file written by histosge train / HisToSGE.save"
                             ) from None
        return self

    @classmethod
    def _unfitted(cls, meta: dict, spec: MethodSpec, device: str | None) -> SectionModel:
        params = persist.upgrade_params(meta["hyperparameters"])
        params.pop("method", None)
        return cls(spec.name, **params, device=device)

    def _method_from(self, meta: dict, arrays: dict[str, np.ndarray]):
        self.spot_hashes_, self.extent_ = arrays["training.spot_hashes"], arrays["extent"]
        return self.spec.cls.from_state(meta["method_params"], sub(arrays, "method"), meta["method_state"],
                                        meta.get("info", {}), device=self.device, prior=self.prior_,
                                        pitch_um=self.pitch_um_)

    def _check_loaded(self, where: str) -> None:
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


def _section_specs() -> list[MethodSpec]:
    from ..methods._registry import specs

    return [s for s in specs() if not s.needs_other_sections]


def create_model(name: str, *, epochs: int | None = None, patience: int | None = None,
                 group_size: int | None = None, **params: Any) -> SectionModel:
    """The section model of method ``name``: ``fit(sections)``, ``predict(adata)``, ``save``.

    What ``superres``, ``recover`` and ``histosge train`` run: ``HisToSGE`` for HisToSGE's
    methods (``histosge``, ``histosge-image``, ``histosge-paper``), a :class:`SectionModel` for
    every other method (its registration's ``model_class`` says which).

    Parameters
    ----------
    name : str
        A registered method that runs on sections (not the benchmark's cohort methods).
    epochs, patience, group_size : int, optional
        The training schedule (``--epochs`` ...), mapped onto the method's own parameters by its
        class; a method without one refuses it.
    **params
        ``encoder``, ``weights``, ``patch_scale``, ``genes``, ``n_top_genes``, ``all_genes``,
        ``reliability``, ``seed``, ``device``, ``prior`` (methods that read one), ``mode``
        (HisToSGE's), and any parameter of the method's constructor.

    Returns
    -------
    SectionModel
        Unfitted.

    Raises
    ------
    InputError
        An unknown method, one that reads other sections, or an option it does not take (the
        message names the option: ``--method``, ``--mode``, ``--prior``, ``--epochs`` ...).
    """
    spec = get_spec(name)
    schedule = spec.cls.schedule(epochs=epochs, patience=patience, group_size=group_size)
    return spec.model_cls.create(spec, **params, **schedule)


def resolve_prior(prior) -> SectionModel:
    """A fitted image-mode model from ``prior``: a model object, or a model file's path."""
    if isinstance(prior, SectionModel):
        model, where = prior, "prior (a model object)"
    else:
        model, where = persist.load_model(prior), str(prior)
    if not model.is_fitted:
        raise InputError("the prior is not fitted", where=where, fix="fit it on other sections first")
    if model.mode != "image":
        raise InputError(f"a {model.mode}-mode model is not a prior: it predicts only the section it was "
                         "fitted on", where=where,
                         fix="train the prior on other sections with: histosge train OTHER_SECTIONS --mode image")
    return model
