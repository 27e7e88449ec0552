"""``histosge``: our model within a measured section (``superres``, ``recover``, protocols R and G).

Fitted on the measured spots of one section, it predicts other positions of the same section from
what the measured neighbours say (``contexts.NeighbourContext``: their expression in a few
principal components, blended with an image-only ridge prediction), a correction network on the
image features and grid positions, and a gene-wise image term (docs/MODEL_NOTES.md says what each
bought). It reads the section's measured spots: the training spots, or the measured spots of the
predicted section given as ``context``.

A *prior* (``model.prior.Prior``: any fitted image-mode model of other sections of the same
tissue, checked by the section model) enters three ways (``prior_use``): its component scores
stacked with the neighbours' and the image probe's (``"context"``), the gene-wise image term
fitted as a correction of its prediction (``"genes"``), and the final prediction mixed with its
own (``"stack"``, weight ``prior_weight`` or chosen on the training spots).

The benchmark's protocol X runs it as ``histosge-image`` (its spec's ``cross_section``): fitted on
the other sections, saved to a model file and loaded back, as ``histosge train --mode image`` and
``histosge predict`` do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..evaluate import pearson_per_gene
from ..model.contexts import Measured, NeighbourContext, Spots
from ..model.parts import LinearPCA, Projector, RidgeHead, nest, sub
from ..model.train import fit as fit_network
from ._histosge import HisToSGEBase, short_history
from ._registry import builtin


@builtin("histosge")  # its spec: methods/_builtin.py
class HisToSGENeighbours(HisToSGEBase):
    """Neighbours mode; the parameters are ``HisToSGEBase``'s."""

    def fit(self, train: Spots, y: np.ndarray, *, groups: np.ndarray | None = None, progress: bool = False,
            reliability: bool = False, prior=None) -> HisToSGENeighbours:
        y = np.asarray(y, np.float32)
        self._start(train, reliability)
        self.prior_ = prior
        prior_train = prior.genes(train) if prior is not None else None
        n_comp = max(1, min(self.n_components, len(y) - 1, y.shape[1]))
        self.pca_ = LinearPCA.fit(y, n_comp, seed=self.seed)
        z = self.pca_.transform(y).astype(np.float32)
        self.probe_ = probe = Projector.fit(train.features)
        prior_z, anchor = self._prior_parts(prior_train)
        self.context_, ctx_train = NeighbourContext.fit(
            train, y, z, k_choices=self.k_choices, stack_image=self.stack_image, folds=self.oof_folds,
            seed=self.seed, probe=probe, prior=prior_z)
        self.measured_ = Measured(np.asarray(train.xy, np.float64), z, y)
        self.network_ = fit_network(train.features, train.rows, train.cols, z, self._config(), context=ctx_train,
                                    progress=progress)
        target = y if anchor is None else y - anchor
        self.gene_head_ = RidgeHead.fit_cv(probe(train.features), target) if self.image_blend else None
        self.stack_ = None
        stacked = self.prior_ is not None and "stack" in self.prior_use
        own = self._own_at_training_spots(train, y, ctx_train, anchor) if reliability or stacked else None
        if stacked:
            self._fit_stack(y, prior_train, own)
        if reliability:
            self._reliability(y, prior_train, own)
        self.info.update({"k": self.context_.k, "k_genes": self.context_.k_genes})
        if self.image_blend:
            self.info["image_blend"] = self.image_blend
        if self.prior_ is not None:
            self.info["prior"] = self._prior_info()
        self._fit_novelty(train.features)
        self._scores_from(self.pca_.inverse_transform(ctx_train), y)
        self.info.update({"n_components": n_comp, "history": short_history(self.network_.history)})
        return self

    # -- the prior ------------------------------------------------------------------------------
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

    def _fit_stack(self, y: np.ndarray, prior_train: np.ndarray, own: np.ndarray) -> None:
        """The weight of the prior in the final prediction: chosen on the training spots, where
        the prior's prediction is out-of-sample (it never saw them) and the model's is made so
        (leave-one-out neighbours, out-of-fold image probe: ``own``)."""
        from ..model.prior import STACK_WEIGHTS

        covered = self.prior_.covered
        offset = np.zeros(y.shape[1], np.float32)
        offset[covered] = y[:, covered].mean(0) - prior_train[:, covered].mean(0)
        if self.prior_weight is not None:
            self.stack_ = {"weight": self.prior_weight, "offset": offset, "chosen_on": "given"}
            return
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
        from ..model.contexts import image_oof
        from ..model.neighbours import idw

        near = idw(train.xy, y, train.xy, self.context_.k_genes, exclude_self=True)
        own = self.pca_.inverse_transform(ctx_train) + self.outside_weight * (
            near - self.pca_.inverse_transform(self.pca_.transform(near)))
        if self.image_blend and self.gene_head_ is not None:
            a = np.zeros_like(y) if anchor is None else anchor
            img = image_oof(train.features, y - a, self.seed, self.oof_folds) + a
            own = (1 - self.image_blend) * own + self.image_blend * img
        return own

    def _reliability(self, y: np.ndarray, prior_train: np.ndarray | None, own: np.ndarray) -> None:
        """Each training spot predicted as a new spot would be (leave-one-out neighbours, out-of-fold
        image term, the prior mixed in as at prediction), scored in random folds."""
        from ..model.reliability import SCORE_FOLDS, estimate, random_folds, sparse_genes

        own = own.copy()
        if self.stack_ is not None:
            cov, w = self.prior_.covered, self.stack_["weight"]
            own[:, cov] = (1 - w) * own[:, cov] + w * (prior_train[:, cov] + self.stack_["offset"][cov])
        folds = random_folds(len(y), SCORE_FOLDS, self.seed)
        self.reliability_ = estimate(
            y, np.maximum(own, 0), folds, sparse=sparse_genes(y),
            scope=f"each training spot predicted without itself (leave-one-out neighbours, out-of-fold image "
                  f"term), scored in {SCORE_FOLDS} random folds")

    # -- predicting -----------------------------------------------------------------------------
    def _predict(self, query: Spots, groups, context) -> tuple[np.ndarray, np.ndarray]:
        """``context``: (spots, log1p expression) measured on the query's section, in place of the
        training spots."""
        measured = self.measured_ if context is None else Measured(
            np.asarray(context[0].xy, np.float64), self.pca_.transform(context[1]).astype(np.float32), context[1])
        prior = self.prior_.genes(query) if self.prior_ is not None else None
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
        if self.stack_ is not None:
            cov, w = self.prior_.covered, self.stack_["weight"]
            pred[:, cov] = (1 - w) * pred[:, cov] + w * (prior[:, cov] + self.stack_["offset"][cov])
        return np.maximum(pred, 0).astype(np.float32), query.features

    # -- state ----------------------------------------------------------------------------------
    def _mode_state(self) -> dict[str, np.ndarray]:
        out = {}
        if self.stack_ is not None:
            out |= {"stack.weight": np.asarray(self.stack_["weight"]), "stack.offset": self.stack_["offset"]}
        out |= nest("probe", self.probe_.state()) | nest("pca", self.pca_.state())
        out |= nest("context", self.context_.state()) | nest("measured", self.measured_.state())
        if self.gene_head_ is not None:
            out |= nest("gene_head", self.gene_head_.state())
        return out

    def _set_mode_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.probe_ = Projector.from_state(sub(arrays, "probe"))
        self.pca_ = LinearPCA.from_state(sub(arrays, "pca"))
        self.context_ = NeighbourContext.from_state(sub(arrays, "context"), self.probe_)
        self.measured_ = Measured.from_state(sub(arrays, "measured"))
        head = sub(arrays, "gene_head")
        self.gene_head_ = RidgeHead.from_state(head) if head else None
        self.stack_ = None
        if "stack.weight" in arrays:
            chosen = (self.info.get("prior") or {}).get("stack_chosen_on", "")
            self.stack_ = {"weight": float(np.asarray(arrays["stack.weight"]).reshape(-1)[0]),
                           "offset": arrays["stack.offset"], "chosen_on": chosen}
