"""``HisToSGE``: the section model of HisToSGE's three registered methods, with the constructor
and the model-file layout they have always had.

``HisToSGE(mode, ...)`` is ``SectionModel`` (``model.section``) over one of the methods:

- ``"neighbours"`` (default; ``superres``, ``recover``): method ``histosge``. Fitted on the
  measured spots of one section, it predicts other positions of the same section from what the
  measured neighbours say, the image, and a correction network.
- ``"image"``: method ``histosge-image``. Fitted on one or more sections, it predicts any H&E
  image of the same tissue from the image alone: a section that was not measured, or a whole
  slide (``histosge predict``).
- ``"paper"`` (``HisToSGE.paper()``): method ``histosge-paper``, the authors' model and schedule,
  the network on image features and grid position only (1000 fixed epochs).

A neighbours-mode model can take a *prior* (``prior=``): an image-mode model fitted on other
sections of the same tissue (``model.prior``). Its prediction at every spot is stacked with the
neighbours' and the image probe's component scores, and anchors the gene-wise image term.

Expression targets are log1p(normalize_total(1e4)) of the genes a user names plus the top
``n_top_genes`` HVGs (seurat_v3 on the training spots' raw counts). Every fit estimates each
gene's held-out Pearson (``reliability_``: ``model.reliability``), carried into the model file and
every output as ``var['cv_pcc']`` and ``var['reliable']``. Patches are cut at ``patch_scale``
spot diameters, recorded in micrometres at fit time, so a model cuts the same tissue area on any
slide.

The model file keeps the layout HisToSGE files had before the registry (``persist``: the mode
names the method, the hyperparameters are flat, the method's arrays sit at the top level), so
files written by any histosge since 0.1 load, and files written now load in those versions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..methods._registry import MethodSpec
from ..options import MODES  # defined where the CLI checks --mode without importing torch
from . import persist
from .neighbours import K_CHOICES
from .prior import DEFAULT_USES as PRIOR_DEFAULT_USES
from .section import SectionModel
from .train import DEFAULT_NETWORK, PAPER_CONFIG, TrainConfig

__all__ = ["DEFAULT_NETWORK", "MODES", "PAPER_CONFIG", "HisToSGE"]


class HisToSGE(SectionModel):
    """Predict spatial gene expression from H&E: ``HisToSGE(...).fit(sections).predict(adata)``.

    Parameters
    ----------
    mode
        ``"neighbours"`` (default): fitted on one section's measured spots, predicts other
        positions of that section from its measured neighbours and the image (``superres``,
        ``recover``). ``"image"``: fitted on one or more sections, predicts any H&E of the
        same tissue from the image alone (``histosge predict`` on a slide). ``"paper"``: the
        authors' model (``HisToSGE.paper()``). Each is a registered method
        (``persist.HISTOSGE_METHODS``: ``histosge``, ``histosge-image``, ``histosge-paper``).
    encoder, weights
        Image encoder (a name of ``histosge encoders``, default the registry's default, or an
        encoder already built) and a local weights file for it. The weights' identity is
        recorded; a model refuses features of another encoder.
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
        Neighbours mode: an image-mode model fitted on *other* sections of the same tissue (any
        fitted image-mode model, e.g. ``histosge train OTHERS --mode image``, or the path of its
        file). It must never have seen a spot of this section and must read the same features
        (encoder, weights, patch size in micrometres); both are checked at ``fit``. Genes it does
        not predict are learnt from this section alone. Saved inside this model's file.
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
    method_ : Method
        The fitted method (``histosge``, ``histosge-image`` or ``histosge-paper``): its network
        (``network_``), contexts and probes, its novelty reference.
    scores_ : dict
        Out-of-sample scores on the training spots (``pcc``, ``pcc_top50``, ``mse``, ``mae``) and
        their ``scope``.
    info_ : dict
        What fitting chose (neighbour counts, components, the network's history, the prior's share).
    genes_, var_, encoder_, patch_um_, spot_diameter_um_, pitch_um_, grid_, n_features_in_
        As :class:`SectionModel`.
    training_, reliability_, prior_, file_sha256_
        As :class:`SectionModel`.

    Raises
    ------
    InputError
        An unknown mode or prior use, a prior outside neighbours mode, a prior weight outside [0, 1].
    """

    def __init__(self, mode: str = "neighbours", *, encoder=None, weights: str | None = None,
                 patch_scale: float = 2.0, genes: list[str] | tuple[str, ...] | str | None = None,
                 n_top_genes: int = 1000, all_genes: bool = False, n_components: int = 8,
                 outside_weight: float = 0.5, stack_image: bool = True, image_blend: float = 0.25,
                 ring: int = 7, cv_blocks: int = 5, k_choices: tuple[int, ...] = K_CHOICES, oof_folds: int = 5,
                 network: TrainConfig | dict | None = None, seed: int = 0, prior=None,
                 prior_use: tuple[str, ...] = PRIOR_DEFAULT_USES, prior_weight: float | None = None,
                 reliability: bool = True, device: str | None = None):
        if mode not in MODES:
            raise InputError(f"unknown mode {mode!r}", where="mode", fix=f"use one of {', '.join(MODES)}")
        super().__init__(persist.HISTOSGE_METHODS[mode], encoder=encoder, weights=weights, patch_scale=patch_scale,
                         genes=genes, n_top_genes=n_top_genes, all_genes=all_genes, reliability=reliability,
                         seed=seed, device=device, prior=prior,
                         params=dict(n_components=n_components, outside_weight=outside_weight, stack_image=stack_image,
                                     image_blend=image_blend, ring=ring, cv_blocks=cv_blocks, k_choices=k_choices,
                                     oof_folds=oof_folds, network=network, prior_use=prior_use,
                                     prior_weight=prior_weight))

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

    @classmethod
    def create(cls, spec: MethodSpec, **params: Any) -> HisToSGE:
        """``create_model``'s door: ``mode`` picks among HisToSGE's methods from ``histosge``;
        ``histosge-image`` and ``histosge-paper`` are one mode each."""
        mode = params.pop("mode", None)
        if mode is not None and mode != spec.mode and spec.name != persist.HISTOSGE_METHODS["neighbours"]:
            raise InputError(f"method {spec.name!r} is HisToSGE's {spec.mode} mode", where="--mode",
                             fix=f"drop --mode, or use --method histosge --mode {mode}")
        return cls(mode or spec.mode, **params)

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
                "all_genes": self.all_genes, **self._method_params, "reliability": self.reliability}

    def __repr__(self) -> str:
        fitted = f", {len(self.genes_)} genes, fitted on {len(self.training_['sections'])} section(s)" \
            if self.is_fitted and hasattr(self, "training_") else ""
        return f"HisToSGE(mode={self.mode!r}{fitted})"

    # -- the layout of its model file -----------------------------------------------------------
    def _names(self) -> dict:
        return {}  # the mode names the method

    def _describe_method(self, method_meta: dict) -> dict:
        return {"mode": self.mode, "hyperparameters": self.get_params()}

    def _describe_after(self, method_meta: dict) -> dict:
        return dict(method_meta)  # network, history, novelty_scale at the top level

    def _arrays(self, method_arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(method_arrays)
        if hasattr(self, "spot_hashes_"):
            out["training.spot_hashes"] = self.spot_hashes_
        if hasattr(self, "spot_groups_"):
            out |= {"training.spot_positions": self.spot_positions_, "training.spot_groups": self.spot_groups_}
        if self.mode == "neighbours":
            out["extent"] = self.extent_
        return out

    def _check_savable(self, path) -> None:
        if not self.encoder_.get("encoder"):
            raise InputError("the model does not record its image encoder (fitted on arrays alone)", where=str(path),
                             fix="fit with HisToSGE.fit(sections), or set encoder_ before saving")

    @classmethod
    def _unfitted(cls, meta: dict, spec: MethodSpec, device: str | None) -> HisToSGE:
        params = persist.upgrade_params(meta["hyperparameters"])
        params["network"] = TrainConfig(**params["network"])
        return cls(**params, device=device)

    def _method_from(self, meta: dict, arrays: dict[str, np.ndarray]):
        params = {k: v for k, v in self._method_args({}).items() if k != "device"}
        return self.spec.cls.from_state(params, arrays, meta, meta.get("info", {}), device=self.device,
                                        prior=self.prior_, pitch_um=self.pitch_um_)

    def _check_loaded(self, where: str) -> None:
        pass  # persist.check_consistency held every array against the description
