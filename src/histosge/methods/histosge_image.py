"""``histosge-image``: our model from the image alone (``histosge train --mode image``, protocol X).

Fitted on one or more sections, it predicts any H&E image of the same tissue with nothing
measured: a section that was not measured, or a whole slide (``histosge predict``). Each spot
is read with its ring (the mean features of the ``ring`` spots around it, itself included: the
same tissue area in micrometres on a denser lattice); a ridge probe on those features, with its
penalty chosen leave-one-section-out (``contexts.ImageContext``; spatial blocks stand in for
sections when one section trains), is the context the correction network corrects. No grid
position is read: another section's array says nothing about this tissue.
"""

from __future__ import annotations

import numpy as np

from ..evaluate import pearson_per_gene
from ..model.contexts import ImageContext, Spots, spatial_blocks, with_ring
from ..model.parts import LinearPCA, nest, sub
from ..model.train import fit as fit_network
from ._histosge import HisToSGEBase, short_history
from ._registry import builtin


@builtin("histosge-image")  # its spec: methods/_builtin.py
class HisToSGEImage(HisToSGEBase):
    """Image mode; the parameters are ``HisToSGEBase``'s (``ring``, ``cv_blocks`` are read here)."""

    def fit(self, train: Spots, y: np.ndarray, *, groups: np.ndarray | None = None, progress: bool = False,
            reliability: bool = False, pitch_um: float | None = None) -> HisToSGEImage:
        """``pitch_um``: the training sections' spot pitch in micrometres, which sizes the rings of a
        denser lattice (``_ring_k``); unknown (None), rings are always ``ring`` spots."""
        y = np.asarray(y, np.float32)
        self._start(train, reliability)
        n_comp = max(1, min(self.n_components, len(y) - 1, y.shape[1]))
        self.pca_ = LinearPCA.fit(y, n_comp, seed=self.seed)
        z = self.pca_.transform(y).astype(np.float32)
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
        self.network_ = fit_network(f_train, zeros, zeros, z, self._config(), context=ctx_train, progress=progress,
                                    val_mask=val_mask)
        oof_pcc = float(np.nan_to_num(pearson_per_gene(y, oof)).mean())  # constant genes count 0
        self.info.update({"alpha": self.context_.alpha, "oof_pcc": round(oof_pcc, 4)})
        self.probe_ = self.context_.probe
        self.pitch_um = float("nan") if pitch_um is None else float(pitch_um)
        if reliability:
            from ..model.reliability import SCORE_FOLDS, estimate, random_folds, sparse_genes

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
        self.info.update({"n_components": n_comp, "history": short_history(self.network_.history)})
        return self

    def _predict(self, query: Spots, groups, context) -> tuple[np.ndarray, np.ndarray]:
        f_query = with_ring(query, groups, self._ring_k(query))
        base, ctx = self.context_.predict(f_query, self.pca_)
        zeros = np.zeros(len(query))
        z = self.network_.predict(f_query, zeros, zeros, context=ctx)
        pred = base + (z - ctx) @ self.pca_.components
        return np.maximum(pred, 0).astype(np.float32), f_query

    def _ring_k(self, query: Spots) -> int:
        """A ring covers the same tissue on a denser lattice: ``ring`` spots at the training
        pitch, ``ring x (training pitch / query pitch)^2`` on a lattice finer by more than 10%."""
        from ..geometry import spot_pitch

        pitch = spot_pitch(query.xy) * query.mpp if query.mpp else float("nan")
        own = self.pitch_um
        if not (pitch > 0 and own > 0) or abs(pitch / own - 1) <= 0.1:
            return self.ring
        return max(1, int(round(self.ring * (own / pitch) ** 2)))

    def _mode_state(self) -> dict[str, np.ndarray]:
        return nest("pca", self.pca_.state()) | nest("context", self.context_.state())

    def _set_mode_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.pca_ = LinearPCA.from_state(sub(arrays, "pca"))
        self.context_ = ImageContext.from_state(sub(arrays, "context"))
        self.probe_ = self.context_.probe

