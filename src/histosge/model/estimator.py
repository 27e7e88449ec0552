"""``HisToSGE``: the model object. Hyperparameters in the constructor, ``fit`` on sections,
``predict`` on new spots or slides, ``save``/``load`` to one file that holds numbers only.

Three modes:

- ``"neighbours"`` (default; ``superres``, ``recover``): fitted on the measured spots of one
  section, it predicts other positions of the same section from what the measured neighbours
  say (``contexts.NeighbourContext``), the image, and a correction network.
- ``"image"``: fitted on one or more sections, it predicts any H&E image of the same tissue
  from the image alone (``contexts.ImageContext``): a section that was not measured, or a whole
  slide (``histosge predict``).
- ``"paper"`` (``HisToSGE.paper()``): the authors' model and schedule, the network on image
  features and grid position only (1000 fixed epochs).

A neighbours-mode model can take a *prior* (``prior=``): an image-mode model fitted on other
sections of the same tissue (``model.prior``). Its prediction at every spot is stacked with the
neighbours' and the image probe's component scores, and anchors the gene-wise image term.

Expression targets are log1p(normalize_total(1e4)) of the genes a user names plus the top
``n_top_genes`` HVGs (seurat_v3 on the training spots' raw counts). Every fit estimates each
gene's held-out Pearson (``reliability_``: ``model.reliability``), carried into the model file and
every output as ``var['cv_pcc']`` and ``var['reliable']``. Patches are cut at ``patch_scale``
spot diameters, recorded in micrometres at fit time, so a model cuts the same tissue area on any
slide.
"""

from __future__ import annotations

import os
import time
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .. import keys
from ..errors import InputError
from ..evaluate import pearson_per_gene, score
from ..options import MODES  # defined where the CLI checks --mode without importing torch
from .contexts import ImageContext, Measured, NeighbourContext, Spots, spatial_blocks, with_ring
from .neighbours import K_CHOICES
from .parts import LinearPCA, Projector, RidgeHead, nest, sub
from .prior import DEFAULT_USES as PRIOR_DEFAULT_USES
from .prior import USES as PRIOR_USES
from .train import PAPER_CONFIG, TrainConfig, Trained, fit

#: Our default network schedule and size (docs/MODEL_NOTES.md says what each choice bought).
DEFAULT_NETWORK = TrainConfig(epochs=300, patience=20, val_fraction=0.2, group_size=50, groups_per_step=8,
                              dim=256, mlp_dim=512, dropout=0.1, lr=1e-3, residual=True,
                              min_val_spots=100, min_delta=0.005, give_up=5)

#: Nearest training spots a novelty score is measured against, and the quantile of the training
#: spots' own (leave-one-out) score that counts as 1.0.
NOVELTY_K = 10
NOVELTY_QUANTILE = 0.99


class HisToSGE:
    """Predict spatial gene expression from H&E: ``HisToSGE(...).fit(sections).predict(adata)``.

    Parameters
    ----------
    mode
        ``"neighbours"`` (default): fitted on one section's measured spots, predicts other
        positions of that section from its measured neighbours and the image (``superres``,
        ``recover``). ``"image"``: fitted on one or more sections, predicts any H&E of the
        same tissue from the image alone (``histosge predict`` on a slide). ``"paper"``: the
        authors' model (``HisToSGE.paper()``).
    encoder, weights
        Image encoder name (``histosge encoders``; default the registry's default) and a local
        weights file for it. The weights' identity is recorded; a model refuses features of
        another encoder.
    patch_scale
        Patch side in spot diameters (2: the spot and a ring of its surroundings); recorded in
        micrometres (``patch_um_``) from the training sections' spot size.
    genes
        Genes always predicted, whatever their variance (a HER2 model must predict ERBB2), in
        addition to the ``n_top_genes`` HVGs; each must be measured in every training section.
    n_top_genes
        Highly variable genes predicted besides ``genes`` (seurat_v3 on the training spots' raw
        counts); 0: only ``genes``.
    all_genes
        Predict every gene detected in at least 1% of the training spots (the whole
        transcriptome) instead of the ``n_top_genes`` HVGs.
    n_components
        Principal components of expression the contexts and the network work in.
    outside_weight
        Weight of the gene-specific detail outside those components.
    stack_image
        Blend an image-only ridge prediction into the neighbours' context (neighbours mode).
    image_blend
        Weight of the gene-wise image-only prediction in the final blend (neighbours mode).
    ring
        Spots whose features make a spot's image neighbourhood, itself included (image mode).
    cv_blocks
        Spatial blocks that stand in for sections when one section trains an image model.
    k_choices
        Neighbour counts searched by leave-one-out CV.
    oof_folds
        Folds of the out-of-fold image predictions stacked into the context.
    network
        The correction network's size and schedule: a ``TrainConfig`` or a dict of its fields
        (default ``DEFAULT_NETWORK``; ``HisToSGE.paper()`` uses ``PAPER_CONFIG``).
    seed
        Seeds every random choice (splits, initialisation, batching).
    prior
        Neighbours mode: an image-mode model fitted on *other* sections of the same tissue (a
        ``HisToSGE`` or the path of its file; ``histosge train OTHERS --mode image``). It must
        never have seen a spot of this section and must read the same features (encoder,
        weights, patch size in micrometres); both are checked at ``fit``. Genes it does not
        predict are learnt from this section alone. Saved inside this model's file.
    prior_use
        What the prior contributes (``model.prior.USES``; default ``prior.DEFAULT_USES``,
        ``("genes", "stack")``): ``"context"``, its component scores
        stacked with the neighbours' and the image probe's; ``"genes"``, the gene-wise image
        term fitted as a correction of the prior's prediction instead of from scratch;
        ``"stack"``, the final prediction mixed with the prior's (offset to this section's
        training means), ``(1 - w) x model + w x prior`` on the genes the prior predicts.
    prior_weight
        ``w`` of ``"stack"``; None (default): the weight of ``prior.STACK_WEIGHTS`` with the
        best mean Pearson on the training spots, the model's side predicted there as at a new
        spot (leave-one-out neighbours, out-of-fold image probe; the correction network left out).
    reliability
        Estimate each gene's held-out Pearson (``reliability_``, ``var['cv_pcc']`` of every
        output). Free in neighbours and image modes (their out-of-sample predictions are made
        anyway); the paper's model refits its network on ``reliability.REFIT_FOLDS`` folds.
    device
        Where the network trains and predicts (``cpu``, ``cuda``...; default CUDA if present).
        Not saved with the model.

    Attributes
    ----------
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
        Columns of the image features the model was fitted on.
    training_ : dict
        The training sections (name, source, spots, fingerprint), spot count, HVG flavour, seconds.
    scores_ : dict
        Out-of-sample scores on the training spots (``pcc``, ``pcc_top50``, ``mse``, ``mae``) and
        their ``scope``.
    reliability_ : Reliability or None
        Per-gene ``cv_pcc`` (the Pearson each gene's prediction is expected to have at spots the
        model never saw) and the ``reliable`` flag (``model.reliability``); None when not
        estimated (``reliability_note_`` says why).
    info_ : dict
        What fitting chose (neighbour counts, components, the network's history, the prior's share).
    file_sha256_ : str
        SHA-256 of the model file, once saved or loaded.

    Raises
    ------
    InputError
        An unknown mode or prior use, a prior outside neighbours mode, a prior weight outside [0, 1].
    """

    def __init__(self, mode: str = "neighbours", *, encoder: str | None = None, weights: str | None = None,
                 patch_scale: float = 2.0, genes: list[str] | tuple[str, ...] | str | None = None,
                 n_top_genes: int = 1000, all_genes: bool = False, n_components: int = 8,
                 outside_weight: float = 0.5, stack_image: bool = True, image_blend: float = 0.25,
                 ring: int = 7, cv_blocks: int = 5, k_choices: tuple[int, ...] = K_CHOICES, oof_folds: int = 5,
                 network: TrainConfig | dict | None = None, seed: int = 0, prior=None,
                 prior_use: tuple[str, ...] = PRIOR_DEFAULT_USES, prior_weight: float | None = None,
                 reliability: bool = True, device: str | None = None):
        if mode not in MODES:
            raise InputError(f"unknown mode {mode!r}", where="mode", fix=f"use one of {', '.join(MODES)}")
        if prior is not None and mode != "neighbours":
            raise InputError(f"a {mode}-mode model takes no prior", where="prior",
                             fix="use a prior with mode='neighbours' (within a measured section)")
        unknown = [u for u in prior_use if u not in PRIOR_USES]
        if unknown:
            raise InputError(f"unknown prior use {', '.join(map(str, unknown))}", where="prior_use",
                             fix=f"choose among {', '.join(PRIOR_USES)}")
        if isinstance(network, dict):
            base = PAPER_CONFIG if mode == "paper" else DEFAULT_NETWORK
            network = base.replace(**network)
        self.mode = mode
        self.encoder = encoder
        self.weights = weights
        self.patch_scale = float(patch_scale)
        from ..genes import parse_gene_names

        self.genes = tuple(parse_gene_names(genes, where="genes")[0]) if genes not in (None, [], ()) else ()
        self.n_top_genes = n_top_genes
        self.all_genes = bool(all_genes)
        self.gene_choice()  # bad choices fail here, before any work
        self.n_components = int(n_components)
        self.outside_weight = float(outside_weight)
        self.stack_image = bool(stack_image)
        self.image_blend = float(image_blend)
        self.ring = int(ring)
        self.cv_blocks = int(cv_blocks)
        self.k_choices = tuple(int(k) for k in k_choices)
        self.oof_folds = int(oof_folds)
        self.network = network or (PAPER_CONFIG if mode == "paper" else DEFAULT_NETWORK)
        self.seed = int(seed)
        self.prior = prior
        self.prior_use = tuple(str(u) for u in prior_use)
        if prior_weight is not None and not 0.0 <= float(prior_weight) <= 1.0:
            raise InputError(f"prior weight {prior_weight!r} is not in [0, 1]", where="prior_weight",
                             fix="e.g. prior_weight=0.5, or None to choose it on the training spots")
        self.prior_weight = None if prior_weight is None else float(prior_weight)
        self.reliability = bool(reliability)
        self.device = device

    @classmethod
    def paper(cls, **params) -> HisToSGE:
        """The authors' model, for comparison with ours on the same footing.

        The network on image features + grid position, 1000 fixed epochs, groups of 50, lr 1e-3,
        no early stopping (``PAPER_CONFIG``).

        Parameters
        ----------
        **params
            Constructor arguments other than ``mode`` (``encoder``, ``n_top_genes``, ``network``...).

        Returns
        -------
        HisToSGE
            An unfitted model in ``"paper"`` mode.
        """
        return cls("paper", **params)

    # -- parameters ---------------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments: what ``save`` records as hyperparameters.

        ``prior`` is left out: a model file holds it whole (its description under ``prior``, its
        arrays under ``prior.``).

        Returns
        -------
        dict
            Argument name -> value, JSON-ready (``network`` as a dict without seed and device).
        """
        return {"mode": self.mode, "encoder": self.encoder, "weights": self.weights,
                "patch_scale": self.patch_scale, "genes": list(self.genes), "n_top_genes": self.n_top_genes,
                "all_genes": self.all_genes, "n_components": self.n_components,
                "outside_weight": self.outside_weight, "stack_image": self.stack_image,
                "image_blend": self.image_blend, "ring": self.ring, "cv_blocks": self.cv_blocks,
                "k_choices": list(self.k_choices), "oof_folds": self.oof_folds,
                "network": {k: v for k, v in self.network.to_dict().items() if k not in ("seed", "device")},
                "seed": self.seed, "prior_use": list(self.prior_use), "prior_weight": self.prior_weight,
                "reliability": self.reliability}

    def gene_choice(self):
        """The genes to predict, as ``genes.GeneChoice`` (named + HVGs, or all detected)."""
        from ..genes import GeneChoice

        return GeneChoice(self.genes, self.n_top_genes, self.all_genes)

    def __repr__(self) -> str:
        fitted = f", {len(self.genes_)} genes, fitted on {len(self.training_['sections'])} section(s)" \
            if self.is_fitted else ""
        return f"HisToSGE(mode={self.mode!r}{fitted})"

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "genes_")

    def _config(self) -> TrainConfig:
        return self.network.replace(seed=self.seed, device=self.device)

    def _encoder(self):
        from .. import encode

        return encode.create(self.encoder or encode.DEFAULT_ENCODER, weights=self.weights, device=self.device)

    # -- fit ----------------------------------------------------------------------------------------
    def fit(self, sections: ad.AnnData | list[ad.AnnData], *, genes: list[str] | None = None,
            features: np.ndarray | list[np.ndarray] | None = None, cache_dir=None, batch_size: int = 64,
            progress: bool = True) -> HisToSGE:
        """Fit on the measured spots of one or more sections.

        Parameters
        ----------
        sections : AnnData or list of AnnData
            Sections as ``histosge.read_section`` returns them (raw counts). Neighbours and paper
            modes take exactly one; image mode learns from several.
        genes : list of str, optional
            Predict exactly these (overrides the constructor's ``genes`` / ``n_top_genes``; the
            benchmark passes each protocol's genes this way).
        features : ndarray or list of ndarray, optional
            The spots' image features made by this model's encoder at its patch size, one array
            per section; default ``obsm['features']`` when its record matches, else the section's
            image is encoded (cached on disk).
        cache_dir : str or path, optional
            The feature cache (``histosge.encode.extract``).
        batch_size : int
            Patches encoded at once.
        progress : bool
            Progress bars on a terminal, a line every few seconds in a log.

        Returns
        -------
        HisToSGE
            ``self``, fitted (``genes_``, ``var_``, ``encoder_``, ``training_``, ``scores_``...).

        Raises
        ------
        InputError
            No section, several sections for a one-section mode, feature arrays that do not match
            the sections, sections sharing no gene, or a prior that saw these spots or reads other
            features.
        """
        from . import training_data as T

        t0 = time.perf_counter()
        sections = T.as_sections(sections)
        if self.mode != "image" and len(sections) != 1:
            raise InputError(f"mode {self.mode!r} fits one section, got {len(sections)}", where="sections",
                             fix="fit one section, or use mode='image' to learn from several")
        encoder = self._encoder()
        T.set_geometry(self, sections)
        from ..features import record

        self.encoder_ = record(encoder, self.patch_um_) | {"dim": int(encoder.dim)}
        flavour = T.set_genes(self, sections, genes)
        given = T.check_given_features(features, sections)
        data = T.gather(sections, self.genes_, lambda i, s: self._features(
            s, encoder, None if given is None else given[i], cache_dir=cache_dir, batch_size=batch_size,
            progress=progress))
        t_feat = time.perf_counter()
        hashes = np.concatenate(data.hashes)
        from ..provenance import spot_identity

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
                  where: str = "training spots") -> HisToSGE:
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
            A progress bar while the network trains.
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
        HisToSGE
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
        self.info_: dict[str, Any] = {}
        prior_train = self._fit_prior(train, mpp, spot_hashes, where, spot_identity)
        self.reliability_ = None
        self.reliability_note_ = None if self.reliability else "not estimated (reliability=False)"
        if self.mode == "paper":
            self.network_ = fit(train.features, train.rows, train.cols, y, self._config(), progress=progress)
            self.probe_ = Projector.fit(train.features)
            self._fit_novelty(train.features)
            self._scores_from(None, y)
            if self.reliability:
                self._paper_reliability(train, y, progress)
            return self
        n_comp = max(1, min(self.n_components, len(y) - 1, y.shape[1]))
        self.pca_ = LinearPCA.fit(y, n_comp, seed=self.seed)
        z = self.pca_.transform(y).astype(np.float32)
        if self.mode == "neighbours":
            self._fit_neighbours(train, y, z, progress, prior_train)
        else:
            self._fit_image(train, y, z, groups, progress)
        self.info_.update({"n_components": n_comp, "history": _short(self.network_.history)})
        return self

    def _paper_reliability(self, train: Spots, y: np.ndarray, progress: bool) -> None:
        """The paper's model keeps no spot out of its fit: refit the network on random folds of
        the training spots (held out as ``recover`` holds them out) and score what it predicts
        for the spots it did not see."""
        from .reliability import REFIT_FOLDS, estimate, random_folds, sparse_genes

        folds = random_folds(len(y), REFIT_FOLDS, self.seed)
        oof = np.zeros_like(y)
        for f in np.unique(folds):
            out = folds == f
            net = fit(train.features[~out], train.rows[~out], train.cols[~out], y[~out], self._config(),
                      progress=progress)
            oof[out] = net.predict(train.features[out], train.rows[out], train.cols[out])
        self.reliability_ = estimate(y, np.maximum(oof, 0), folds, sparse=sparse_genes(y),
                                     scope=f"the network refitted on {REFIT_FOLDS} random folds of the training "
                                           "spots, each fold predicted by the fit without it")

    def _fit_prior(self, train: Spots, mpp: float | None, hashes: np.ndarray | None, where: str,
                   identity: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray | None:
        """Check the prior (features, never saw these spots) and return its prediction of this
        model's genes at the training spots (NaN where it does not predict a gene); None without one."""
        from .prior import Prior, resolve

        self.prior_ = None
        if self.prior is None:
            return None
        src = str(self.prior) if isinstance(self.prior, (str, os.PathLike)) else "prior"
        prior = Prior(resolve(self.prior), self.genes_, where=str(src))
        prior.check_encoder(self.encoder_, self.patch_um_, train.features.shape[1])
        if hashes is None:
            raise InputError("a prior needs the hashes of the section's spots to show it never saw them",
                             where="fit_spots", fix="pass spot_hashes=histosge.provenance.spot_hashes(section), "
                                                    "or use fit(sections)")
        prior.check_unseen(hashes, where=where, identity=identity)
        self.prior_ = prior
        self.prior_mpp_ = float(mpp) if mpp else float("nan")
        return prior.genes(train, mpp)

    def _prior_parts(self, prior_genes: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(the prior's component scores if the context stacks them, its gene-wise anchor if the
        image term is fitted around it); uncovered genes sit at the training mean / zero."""
        if prior_genes is None:
            return None, None
        z = anchor = None
        if "context" in self.prior_use:
            filled = np.where(np.isnan(prior_genes), self.pca_.mean[None, :], prior_genes)
            z = self.pca_.transform(filled).astype(np.float32)
        if "genes" in self.prior_use:
            anchor = np.nan_to_num(prior_genes, nan=0.0).astype(np.float32)
        return z, anchor

    def _prior_info(self) -> dict:
        """What the prior contributed: genes covered, its mean weight per component in the blend
        (next to the neighbours' and the image probe's), and the anchored image term's penalty."""
        p = self.prior_
        out: dict[str, Any] = {"sha256": p.sha256, "genes_covered": int(p.covered.sum()), "genes": len(p.covered),
                               "use": list(self.prior_use)}
        blend = getattr(self.context_, "blend", None)
        if blend is not None and self.context_.prior:
            names = ["neighbours"] + (["image"] if self.context_.head is not None else []) + ["prior"]
            out["blend_weights"] = {n: round(float(w), 4) for n, w in zip(names, blend.weights.mean(0), strict=True)}
        if "genes" in self.prior_use and self.gene_head_ is not None:
            out["gene_head_alpha"] = float(self.gene_head_.alpha)
        if self.stack_ is not None:
            out["stack_weight"] = self.stack_["weight"]
            out["stack_chosen_on"] = self.stack_["chosen_on"]
        return out

    def _fit_stack(self, train: Spots, y: np.ndarray, ctx_train: np.ndarray, prior_train: np.ndarray,
                   anchor: np.ndarray | None) -> None:
        """The weight of the prior in the final prediction: chosen on the training spots, where
        the prior's prediction is out-of-sample (it never saw them) and the model's is made so
        (leave-one-out neighbours, out-of-fold image probe)."""
        from .prior import STACK_WEIGHTS

        covered = self.prior_.covered
        offset = np.zeros(y.shape[1], np.float32)
        offset[covered] = y[:, covered].mean(0) - prior_train[:, covered].mean(0)
        if self.prior_weight is not None:
            self.stack_ = {"weight": self.prior_weight, "offset": offset, "chosen_on": "given"}
            return
        own = self._own_ if getattr(self, "_own_", None) is not None else \
            self._own_at_training_spots(train, y, ctx_train, anchor)
        yc, own, pri = y[:, covered], own[:, covered], prior_train[:, covered] + offset[covered]
        grid = list(STACK_WEIGHTS)
        scores = [float(np.nan_to_num(pearson_per_gene(yc, (1 - w) * own + w * pri)).mean()) for w in grid]
        best = int(np.argmax(scores))
        self.stack_ = {"weight": float(grid[best]), "offset": offset,
                       "chosen_on": f"training spots: mean Pearson {scores[0]:.4f} at w = 0, {scores[best]:.4f} at "
                                    f"w = {grid[best]:g}"}

    def _own_at_training_spots(self, train: Spots, y: np.ndarray, ctx_train: np.ndarray,
                               anchor: np.ndarray | None) -> np.ndarray:
        """The model's own prediction at its training spots as it would look at a new spot
        (leave-one-out neighbours, out-of-fold image probe), before any prior is mixed in."""
        from .contexts import image_oof
        from .neighbours import idw

        near = idw(train.xy, y, train.xy, self.context_.k_genes, exclude_self=True)
        own = self.pca_.inverse_transform(ctx_train) + self.outside_weight * (
            near - self.pca_.inverse_transform(self.pca_.transform(near)))
        if self.image_blend and self.gene_head_ is not None:
            a = np.zeros_like(y) if anchor is None else anchor
            img = image_oof(train.features, y - a, self.seed, self.oof_folds) + a
            own = (1 - self.image_blend) * own + self.image_blend * img
        return own

    def _fit_neighbours(self, train: Spots, y: np.ndarray, z: np.ndarray, progress: bool,
                        prior_train: np.ndarray | None = None) -> None:
        self.probe_ = probe = Projector.fit(train.features)
        prior_z, anchor = self._prior_parts(prior_train)
        self.context_, ctx_train = NeighbourContext.fit(
            train, y, z, k_choices=self.k_choices, stack_image=self.stack_image, folds=self.oof_folds,
            seed=self.seed, probe=probe, prior=prior_z)
        self.measured_ = Measured(np.asarray(train.xy, np.float64), z, y)
        self.network_ = fit(train.features, train.rows, train.cols, z, self._config(), context=ctx_train,
                            progress=progress)
        target = y if anchor is None else y - anchor
        self.gene_head_ = RidgeHead.fit_cv(probe(train.features), target) if self.image_blend else None
        self.stack_ = None
        stacked = self.prior_ is not None and "stack" in self.prior_use
        self._own_ = self._own_at_training_spots(train, y, ctx_train, anchor) if self.reliability or stacked \
            else None
        if stacked:
            self._fit_stack(train, y, ctx_train, prior_train, anchor)
        if self.reliability:
            self._neighbour_reliability(train, y, prior_train)
        self._own_ = None
        self.extent_ = _extent(train.xy)
        self.info_.update({"k": self.context_.k, "k_genes": self.context_.k_genes})
        if self.image_blend:
            self.info_["image_blend"] = self.image_blend
        if self.prior_ is not None:
            self.info_["prior"] = self._prior_info()
        self._fit_novelty(train.features)
        self._scores_from(self.pca_.inverse_transform(ctx_train), y)

    def _neighbour_reliability(self, train: Spots, y: np.ndarray, prior_train: np.ndarray | None) -> None:
        """Each training spot predicted as a new spot would be (leave-one-out neighbours, out-of-fold
        image term, the prior mixed in as at prediction), scored per spatial block."""
        from .reliability import SCORE_FOLDS, estimate, random_folds, sparse_genes

        own = self._own_.copy()
        if self.stack_ is not None:
            cov, w = self.prior_.covered, self.stack_["weight"]
            own[:, cov] = (1 - w) * own[:, cov] + w * (prior_train[:, cov] + self.stack_["offset"][cov])
        folds = random_folds(len(y), SCORE_FOLDS, self.seed)
        self.reliability_ = estimate(
            y, np.maximum(own, 0), folds, sparse=sparse_genes(y),
            scope=f"each training spot predicted without itself (leave-one-out neighbours, out-of-fold image "
                  f"term), scored in {SCORE_FOLDS} random folds")

    def _fit_image(self, train: Spots, y: np.ndarray, z: np.ndarray, groups, progress: bool) -> None:
        groups = None if groups is None else np.asarray(groups)
        if groups is None or len(np.unique(groups)) < 2:
            cv_groups = spatial_blocks(train.xy, self.cv_blocks, self.seed)
        else:
            cv_groups = groups
        f_train = with_ring(train, groups, self.ring)
        self.context_, ctx_train, oof = ImageContext.fit(f_train, y, self.pca_, cv_groups,
                                                         outside_weight=self.outside_weight)
        labels = np.unique(cv_groups)
        val_mask = cv_groups == labels[np.random.default_rng(self.seed).integers(len(labels))]
        zeros = np.zeros(len(train))  # a position on another section's array says nothing here
        self.network_ = fit(f_train, zeros, zeros, z, self._config(), context=ctx_train, progress=progress,
                            val_mask=val_mask)
        oof_pcc = float(np.nan_to_num(pearson_per_gene(y, oof)).mean())  # constant genes count 0
        self.info_.update({"alpha": self.context_.alpha, "oof_pcc": round(oof_pcc, 4)})
        self.probe_ = self.context_.probe
        if self.reliability:
            from .reliability import SCORE_FOLDS, estimate, random_folds, sparse_genes

            n_folds = len(np.unique(cv_groups))
            if groups is not None and len(np.unique(groups)) >= 2:
                scored, scope = cv_groups, (f"each of {n_folds} training sections predicted by the image context "
                                            "fitted without it, scored per section")
            else:
                scored = random_folds(len(y), SCORE_FOLDS, self.seed)
                scope = (f"each of {n_folds} spatial blocks of the training section predicted by the image context "
                         f"fitted without it, scored in {SCORE_FOLDS} random folds of the section")
            self.reliability_ = estimate(y, np.maximum(oof, 0), scored, sparse=sparse_genes(y), scope=scope)
        self._fit_novelty(f_train)
        self._scores_from(oof, y, scope="each training section predicted by a model fitted without it "
                                        "(spatial blocks when one section trains)")

    def _fit_novelty(self, features: np.ndarray) -> None:
        """How far a new spot's image lies from the training spots': the mean distance to its
        ``NOVELTY_K`` nearest training spots in the probe's standardised feature space, in units
        of the training spots' own ``NOVELTY_QUANTILE`` (leave-one-out)."""
        from scipy.spatial import cKDTree

        ref = self.probe_.standardised(features).astype(np.float32)
        k = min(NOVELTY_K, len(ref) - 1)
        dist = cKDTree(ref).query(ref, k=k + 1)[0].reshape(len(ref), -1)[:, 1:]
        scale = float(np.quantile(dist.mean(1), NOVELTY_QUANTILE)) or 1.0
        self.novelty_ = {"reference": ref, "scale": scale}

    def novelty(self, features: np.ndarray) -> np.ndarray:
        """How far each spot's image lies from the training images: a warning that a prediction extrapolates.

        Parameters
        ----------
        features : ndarray
            Image features as the model sees them (spots x features; image mode: with rings).

        Returns
        -------
        ndarray
            float32 per spot; 1.0 is as far from the training images as the farthest 1% of
            training spots are from the others (``obs['novel']`` marks spots above 1).
        """
        from scipy.spatial import cKDTree

        ref = self.novelty_["reference"]
        k = min(NOVELTY_K, len(ref))
        dist = cKDTree(ref).query(self.probe_.standardised(features), k=k)[0].reshape(len(features), -1)
        return (dist.mean(1) / self.novelty_["scale"]).astype(np.float32)

    def _scores_from(self, oof: np.ndarray | None, y: np.ndarray,
                     scope: str = "training spots predicted without themselves (leave-one-out neighbours, "
                                  "out-of-fold image)") -> None:
        if oof is None:
            self.scores_ = {"scope": "none: the paper's model keeps no spot out of training"}
            return
        s = score(y, np.maximum(oof, 0))
        self.scores_ = {"scope": scope, **{k: round(float(s[k]), 4) for k in ("pcc", "pcc_top50", "mse", "mae")}}

    # -- predict ------------------------------------------------------------------------------------
    def predict(self, adata: ad.AnnData, context: ad.AnnData | None = None, *, features: np.ndarray | None = None,
                cache_dir=None, batch_size: int = 64, progress: bool = True) -> ad.AnnData:
        """Predict log1p expression at the spots of ``adata``: measured, generated or virtual.

        Parameters
        ----------
        adata : AnnData
            The spots to predict (measured spots, generated ones, or the virtual spots of an H&E
            slide): ``obsm['spatial']`` and an image, ``obs['array_row']``/``obs['array_col']``
            where the mode uses them.
        context : AnnData, optional
            Neighbours mode: a section with measured expression whose spots stand in for the
            training spots (same pixel frame as ``adata``); default the training spots, and then
            most query spots must lie within the training section.
        features : ndarray, optional
            The spots' features, made by this model's encoder at its patch size; default
            ``obsm['features']`` if its record matches, else encoded from the image.
        cache_dir : str or path, optional
            The feature cache.
        batch_size : int
            Patches encoded at once.
        progress : bool
            Progress bars on a terminal, a line every few seconds in a log.

        Returns
        -------
        AnnData
            One row per spot of ``adata``:

            - ``X``: predicted log1p(normalize_total(1e4)), spots x ``genes_``, float32, >= 0;
              ``var``: ``var_`` (the genes and their annotations).
            - ``obs['array_row']``, ``obs['array_col']``, ``obs['in_tissue']``,
              ``obs['spot_type']``: copied when the input has them.
            - ``obs['novelty']`` (:meth:`novelty`) and ``obs['novel']`` (``novelty > 1``: the
              spot's image lies farther from the training images than 99% of training spots from
              each other).
            - ``obsm['spatial']``: the input's, in full-resolution (level-0) pixels;
              ``obsm['features']``: the encoder's output (``storage.write_output`` stores it only
              when asked).
            - ``uns['spatial'][library_id]``: the input's, when it has one.
            - ``uns['histosge']``: ``task`` ('predict'), ``library_id``, ``mode``, ``genes``
              ('var_names'), ``units`` (``X``, ``obsm['spatial']``, ``mpp``, ``patch_um``),
              ``encoder`` and ``features`` (the features' record), ``model``
              (:meth:`provenance`), ``novelty_threshold`` (1.0).

        Raises
        ------
        InputError
            An unfitted model, features of another width or record, neighbours-mode spots
            outside the training section without ``context``, a context lacking the model's
            genes, or spots a prior was fitted on.
        """
        self._check_fitted()
        feats = self._features(adata, None, features, cache_dir=cache_dir, batch_size=batch_size,
                               progress=progress)
        query = Spots(feats, adata.obs["array_row"].to_numpy(np.float64) if "array_row" in adata.obs
                      else np.zeros(adata.n_obs), adata.obs["array_col"].to_numpy(np.float64)
                      if "array_col" in adata.obs else np.zeros(adata.n_obs),
                      np.asarray(adata.obsm[keys.SPATIAL], np.float64))
        if self.mode == "neighbours" and context is None:
            self._check_within_training(query.xy)
        if getattr(self, "prior_", None) is not None:
            from ..provenance import spot_hashes, spot_identity

            for section, what in ((adata, "the spots predicted"), (context, "the context section")):
                if section is not None and section.n_vars and section.X is not None:
                    self.prior_.check_unseen(spot_hashes(section), where=what, identity=spot_identity(section))
        measured = self._measured(context) if context is not None else None
        from threadpoolctl import threadpool_limits

        # BLAS sums in another order with another thread count (last bits differ): one thread makes
        # a prediction the same bit for bit on any machine, a Ray worker and the local run alike.
        with threadpool_limits(limits=1, user_api="blas"):
            pred, seen = self._predict(query, measured, None, keys.mpp(adata))
            novelty = self.novelty(seen)
        return self._output(adata, query, pred, novelty)

    def predict_spots(self, query: Spots, *, measured: Measured | None = None, groups: np.ndarray | None = None,
                      mpp: float | None = None) -> np.ndarray:
        """Predict from arrays (features already made): what ``predict`` and the benchmark call.

        Parameters
        ----------
        query : Spots
            The spots to predict: features, grid rows and columns, pixel centres.
        measured : Measured, optional
            Neighbours mode: the measured spots whose expression informs the query; default the
            training spots.
        groups : ndarray, optional
            Image mode: each query spot's section (rings never cross sections).
        mpp : float, optional
            Micrometres per pixel of ``query.xy`` (image mode: rings of the same size in
            micrometres on a denser lattice).

        Returns
        -------
        ndarray
            Predictions, spots x ``genes_``, float32, >= 0 (log1p expression).

        Raises
        ------
        InputError
            An unfitted model, or features of another width than the training features.
        """
        return self._predict(query, measured, groups, mpp)[0]

    def _predict(self, query: Spots, measured: Measured | None, groups, mpp) -> tuple[np.ndarray, np.ndarray]:
        """(predictions, the features the image probe saw: what novelty is measured on)."""
        self._check_fitted()
        if query.features.shape[1] != self.n_features_in_:
            raise InputError(f"features have {query.features.shape[1]} columns, the model was fitted on "
                             f"{self.n_features_in_}", where="features", fix="encode with the model's encoder")
        if self.mode == "paper":
            pred = self.network_.predict(query.features, query.rows, query.cols)
            return np.maximum(pred, 0).astype(np.float32), query.features
        if self.mode == "image":
            f_query = with_ring(query, groups, self._ring_k(query, mpp))
            base, ctx = self.context_.predict(f_query, self.pca_)
            zeros = np.zeros(len(query))
            z = self.network_.predict(f_query, zeros, zeros, context=ctx)
            pred = base + (z - ctx) @ self.pca_.components
            return np.maximum(pred, 0).astype(np.float32), f_query
        measured = measured or self.measured_
        prior = self.prior_.genes(query, mpp) if getattr(self, "prior_", None) is not None else None
        prior_z, anchor = self._prior_parts(prior)
        ctx = self.context_.scores(measured, query, prior=prior_z)
        outside = self.context_.outside(measured, query, self.pca_)
        base = self.pca_.inverse_transform(ctx) + self.outside_weight * outside
        z = self.network_.predict(query.features, query.rows, query.cols, context=ctx)
        pred = base + (z - ctx) @ self.pca_.components
        if self.image_blend and self.gene_head_ is not None:
            # Gene-wise detail from the image that neither the components nor the neighbours carry
            # (with a prior: the prior's prediction, corrected by this section's image probe).
            img = self.gene_head_.predict(self.probe_(query.features)).astype(np.float32)
            if anchor is not None:
                img = img + anchor
            pred = (1 - self.image_blend) * pred + self.image_blend * img
        if getattr(self, "stack_", None) is not None:
            cov, w = self.prior_.covered, self.stack_["weight"]
            pred[:, cov] = (1 - w) * pred[:, cov] + w * (prior[:, cov] + self.stack_["offset"][cov])
        return np.maximum(pred, 0).astype(np.float32), query.features

    def _ring_k(self, query: Spots, mpp: float | None) -> int:
        """A ring covers the same tissue on a denser lattice: ``ring`` spots at the training
        pitch, ``ring x (training pitch / query pitch)^2`` on a lattice finer by more than 10%."""
        from ..geometry import spot_pitch

        pitch = spot_pitch(query.xy) * mpp if mpp else float("nan")
        if not (pitch > 0 and self.pitch_um_ > 0) or abs(pitch / self.pitch_um_ - 1) <= 0.1:
            return self.ring
        return max(1, int(round(self.ring * (self.pitch_um_ / pitch) ** 2)))

    def _check_within_training(self, xy: np.ndarray) -> None:
        """A neighbours-mode model predicts positions of its own section: most query spots must lie
        within the training spots' extent (padded by a tenth of its size)."""
        lo, hi = self.extent_[:2], self.extent_[2:]
        pad = 0.1 * (hi - lo) + 1.0
        inside = np.all((xy >= lo - pad) & (xy <= hi + pad), axis=1)
        if len(xy) and inside.mean() < 0.5:
            raise InputError(
                f"{int((~inside).sum())} of {len(xy)} spots lie outside the section this neighbours-mode model "
                "was fitted on", where="predict", fix="predict another section with an image-mode model "
                "(histosge train --mode image), or pass that section's measured spots as context")

    def _measured(self, context: ad.AnnData) -> Measured:
        from ..genes import log_normalize

        if self.mode != "neighbours":
            raise InputError(f"a {self.mode}-mode model takes no context", where="context",
                             fix="drop context, or fit a neighbours-mode model")
        missing = [g for g in self.genes_ if g not in set(context.var_names)]
        if missing:
            raise InputError(f"the context section lacks {len(missing)} of the model's {len(self.genes_)} genes: "
                             f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}", where="context",
                             fix="give a context section measured on the same gene panel")
        y = log_normalize(context, self.genes_)
        return Measured(np.asarray(context.obsm[keys.SPATIAL], np.float64),
                        self.pca_.transform(y).astype(np.float32), y)

    def _features(self, adata: ad.AnnData, encoder, given: np.ndarray | None, **kw) -> np.ndarray:
        from ..features import for_model

        return for_model(adata, self, encoder, given, **kw)

    def _output(self, adata: ad.AnnData, query: Spots, pred: np.ndarray, novelty: np.ndarray) -> ad.AnnData:
        from .output import prediction_anndata

        return prediction_anndata(self, adata, query, pred, obs={"novelty": novelty, "novel": novelty > 1.0},
                                  uns={"novelty_threshold": 1.0})

    def provenance(self) -> dict:
        """What identifies this model in an output (``uns['histosge']['model']``).

        Returns
        -------
        dict
            ``mode``, ``sha256`` (the model file's, once saved or loaded; else None) and
            ``training_sections`` (their names).
        """
        return {"mode": self.mode, "sha256": getattr(self, "file_sha256_", None),
                "training_sections": [s["name"] for s in self.training_["sections"]]
                if hasattr(self, "training_") else []}

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise InputError("the model is not fitted", where="HisToSGE", fix="call fit(...) or HisToSGE.load(path)")

    # -- save / load --------------------------------------------------------------------------------
    def save(self, path) -> str:
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
            The model is not fitted, or was fitted on arrays alone without an encoder record.
        OutputError
            The file cannot be written there.
        """
        from .persist import save

        self._check_fitted()
        self.file_sha256_ = save(self, path)
        return self.file_sha256_

    @classmethod
    def load(cls, path, *, device: str | None = None) -> HisToSGE:
        """Read a model file written by ``save``; every way it can be unusable is one clear error.

        Parameters
        ----------
        path : str or path
            The model file.
        device : str, optional
            Where the network will predict (default CUDA if present).

        Returns
        -------
        HisToSGE
            The fitted model, with ``file_sha256_`` set.

        Raises
        ------
        InputError
            A missing, truncated or foreign file, a file changed after it was written, or one that
            needs an encoder or format this version does not have.
        """
        from .persist import load

        return load(path, device=device)

    def state(self) -> dict[str, np.ndarray]:
        """Every fitted array, by name: what ``save`` writes besides the JSON description.

        Returns
        -------
        dict of str to ndarray
            Dotted names (``network.``, ``pca.``, ``context.``, ``prior.``...) -> arrays.
        """
        out = nest("network", self.network_.state()) | {"novelty.reference": self.novelty_["reference"]}
        if hasattr(self, "spot_hashes_"):
            out["training.spot_hashes"] = self.spot_hashes_
        if hasattr(self, "spot_groups_"):
            out |= {"training.spot_positions": self.spot_positions_, "training.spot_groups": self.spot_groups_}
        if getattr(self, "prior_", None) is not None:
            out |= nest("prior", self.prior_.model.state())
        if getattr(self, "stack_", None) is not None:
            out |= {"stack.weight": np.asarray(self.stack_["weight"]), "stack.offset": self.stack_["offset"]}
        if self.mode != "image":
            out |= nest("probe", self.probe_.state())
        if self.mode == "paper":
            return out
        out |= nest("pca", self.pca_.state()) | nest("context", self.context_.state())
        if self.mode == "neighbours":
            out |= nest("measured", self.measured_.state()) | {"extent": self.extent_}
            if self.gene_head_ is not None:
                out |= nest("gene_head", self.gene_head_.state())
        return out

    def set_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Rebuild the fitted attributes from ``state()`` arrays and the saved description.

        Parameters
        ----------
        arrays : dict of str to ndarray
            What ``state()`` returned (read back from the file).
        meta : dict
            The file's JSON description (network config and history, novelty scale, info).
        """
        self.network_ = Trained.from_state(sub(arrays, "network"), meta["network"], device=self.device)
        self.network_.history = meta.get("history", {})
        self.novelty_ = {"reference": arrays["novelty.reference"], "scale": float(meta["novelty_scale"])}
        if "training.spot_hashes" in arrays:
            self.spot_hashes_ = arrays["training.spot_hashes"]
        if "training.spot_groups" in arrays:
            self.spot_positions_, self.spot_groups_ = arrays["training.spot_positions"], arrays["training.spot_groups"]
        if self.mode != "image":
            self.probe_ = Projector.from_state(sub(arrays, "probe"))
        if self.mode != "paper":
            self.pca_ = LinearPCA.from_state(sub(arrays, "pca"))
            ctx = sub(arrays, "context")
            if self.mode == "neighbours":
                self.context_ = NeighbourContext.from_state(ctx, self.probe_)
            else:
                self.context_ = ImageContext.from_state(ctx)
                self.probe_ = self.context_.probe
        self.stack_ = None
        if "stack.weight" in arrays:
            chosen = (meta.get("info", {}).get("prior") or {}).get("stack_chosen_on", "")
            self.stack_ = {"weight": float(np.asarray(arrays["stack.weight"]).reshape(-1)[0]),
                           "offset": arrays["stack.offset"], "chosen_on": chosen}
        if self.mode == "neighbours":
            self.measured_ = Measured.from_state(sub(arrays, "measured"))
            self.extent_ = arrays["extent"]
            head = sub(arrays, "gene_head")
            self.gene_head_ = RidgeHead.from_state(head) if head else None


def _extent(xy: np.ndarray) -> np.ndarray:
    xy = np.asarray(xy, np.float64)
    return np.concatenate([xy.min(0), xy.max(0)])


def _short(history: dict) -> dict:
    keys_ = ("epochs_run", "initial_val_loss", "best_val_loss", "best_epoch", "seconds", "skipped", "stopped",
             "outcome")
    return {k: history[k] for k in keys_ if k in history}

