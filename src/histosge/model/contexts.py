"""What is known at a spot before the network looks at it: the model's two contexts.

Expression is modelled in a low-rank space (the top principal components of the training
spots' log1p expression). The network predicts a correction to a *context* in that space:

- ``NeighbourContext`` (within a section: ``superres``, ``recover``, protocols R and G): the
  inverse-distance-weighted scores of the nearest measured spots (leave-one-out on training
  spots, so they look as they will at a new spot), blended per component with an image-only
  ridge prediction (out-of-fold on training spots) by non-negative least squares; plus the
  neighbours' gene-specific detail outside the components, shrunk.
- ``ImageContext`` (another section or an H&E slide with nothing measured: protocol X,
  ``histosge predict``): a ridge probe on each spot's features and its ring's, with the penalty
  chosen leave-one-section-out.

Both are fitted once and keep only arrays (``state`` / ``from_state``), so they can be saved.
docs/MODEL_NOTES.md records what each choice bought on held-out spots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .neighbours import K_CHOICES, choose_k, idw, ring_mean
from .parts import LinearPCA, Projector, RidgeHead, grouped_alpha, nest, scalar, sub


@dataclass
class Spots:
    """What is known of a set of spots apart from their expression."""

    features: np.ndarray  # (n, d) image features
    rows: np.ndarray  # grid row (float; half-steps for generated spots)
    cols: np.ndarray  # grid column
    xy: np.ndarray  # (n, 2) centres in full-resolution pixels
    mpp: float | None = None  # micrometres per pixel of ``xy`` (None: unknown)

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, idx) -> Spots:
        return Spots(self.features[idx], self.rows[idx], self.cols[idx], self.xy[idx], self.mpp)

    def with_mpp(self, mpp: float | None) -> Spots:
        """The same spots, their pixel size ``mpp`` known."""
        return Spots(self.features, self.rows, self.cols, self.xy, None if mpp is None else float(mpp))


@dataclass
class Measured:
    """Measured spots that a neighbour context interpolates from: positions, component scores
    and log1p expression of the model's genes."""

    xy: np.ndarray
    z: np.ndarray
    y: np.ndarray

    def state(self) -> dict[str, np.ndarray]:
        return {"xy": self.xy, "z": self.z, "y": self.y}

    @classmethod
    def from_state(cls, s: dict[str, np.ndarray]) -> Measured:
        return cls(s["xy"], s["z"], s["y"])


@dataclass
class Blend:
    """Per component: non-negative weights of the centred predictions it stacks (the neighbours',
    the image probe's and, with a prior, the prior's), and a free intercept, fitted on the
    training spots (``fit``) and applied to new ones (``__call__``)."""

    weights: np.ndarray  # (n_components, n_inputs)
    centers: np.ndarray  # (n_components, n_inputs): training means of the inputs
    target_means: np.ndarray  # (n_components,)

    @classmethod
    def fit(cls, knn: np.ndarray, img: np.ndarray | None, z: np.ndarray, extra: np.ndarray | None = None) -> Blend:
        """Non-negative: with ~50 training spots the leave-one-out neighbour average of a large k
        is *anti*-correlated with the spot itself (it is the mean of the others), and an
        unconstrained fit turned that into a negative weight that flipped the sign of the
        prediction at new spots (her2st B4, protocol G). Inputs that are None are left out."""
        from scipy.optimize import nnls

        inputs = [a for a in (knn, img, extra) if a is not None]
        n, m = z.shape[1], len(inputs)
        weights, centers, means = np.zeros((n, m)), np.zeros((n, m)), np.zeros(n)
        for j in range(n):
            a = np.column_stack([x[:, j] for x in inputs]).astype(np.float64)
            centers[j], means[j] = a.mean(0), float(z[:, j].mean())
            weights[j], _ = nnls(a - centers[j], z[:, j] - means[j])
        return cls(weights, centers, means)

    def __call__(self, knn: np.ndarray, img: np.ndarray | None = None, extra: np.ndarray | None = None) -> np.ndarray:
        inputs = [a for a in (knn, img, extra) if a is not None]
        if len(inputs) != self.weights.shape[1]:
            raise ValueError(f"the blend stacks {self.weights.shape[1]} inputs, got {len(inputs)}")
        out = np.empty(knn.shape, np.float32)
        for j in range(knn.shape[1]):
            a = np.column_stack([x[:, j] for x in inputs]).astype(np.float64)
            out[:, j] = (a - self.centers[j]) @ self.weights[j] + self.target_means[j]
        return out

    def state(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "centers": self.centers, "target_means": self.target_means}

    @classmethod
    def from_state(cls, s: dict[str, np.ndarray]) -> Blend:
        return cls(s["weights"], s["centers"], s["target_means"])


class NeighbourContext:
    """The measured neighbours' component scores at a spot (and, stacked, the image's and a
    prior's).

    ``k`` (components) and ``k_genes`` (gene-wise detail) are chosen by leave-one-out CV on the
    training spots; ``probe``/``head`` are the image-only ridge on components, ``blend`` how
    the inputs are mixed. With ``stack_image=False`` and no prior only the neighbours count.
    ``prior``: whether the blend stacks a prior's component scores (``scores(..., prior=...)``).
    """

    def __init__(self, k: int, k_genes: int, probe: Projector | None = None, head: RidgeHead | None = None,
                 blend: Blend | None = None, *, prior: bool = False):
        self.k, self.k_genes = int(k), int(k_genes)
        self.probe, self.head, self.blend = probe, head, blend
        self.prior = bool(prior)

    @classmethod
    def fit(cls, train: Spots, y_train: np.ndarray, z_train: np.ndarray, *, k_choices=K_CHOICES,
            stack_image: bool = True, folds: int = 5, seed: int = 0, probe: Projector | None = None,
            prior: np.ndarray | None = None) -> tuple[NeighbourContext, np.ndarray]:
        """(fitted context, the training spots' own context scores: leave-one-out neighbours and
        out-of-fold image predictions, as they will look at a new spot). ``prior``: a prior's
        component scores at the training spots (it never saw them, so they need no folds)."""
        k = choose_k(train.xy, z_train, k_choices)
        ctx_train = idw(train.xy, z_train, train.xy, k, exclude_self=True)
        k_genes = choose_k(train.xy, y_train, k_choices)
        if not stack_image and prior is None:
            return cls(k, k_genes), ctx_train
        head = img_train = None
        if stack_image:
            probe = probe or Projector.fit(train.features)
            head = RidgeHead.fit_cv(probe(train.features), z_train)
            img_train = image_oof(train.features, z_train, seed, folds)
        else:
            probe = None
        blend = Blend.fit(ctx_train, img_train, z_train, prior)
        return (cls(k, k_genes, probe, head, blend, prior=prior is not None),
                blend(ctx_train, img_train, prior))

    def scores(self, measured: Measured, query: Spots, prior: np.ndarray | None = None) -> np.ndarray:
        """Context scores of ``query`` spots from ``measured`` ones (and the query's image, and a
        prior's component scores at the query when the context stacks one)."""
        knn = idw(measured.xy, measured.z, query.xy, self.k)
        if self.blend is None:
            return knn
        if self.prior and prior is None:
            raise ValueError("this context stacks a prior's scores; pass prior=")
        img = self.head.predict(self.probe(query.features)).astype(np.float32) if self.head is not None else None
        return self.blend(knn, img, prior if self.prior else None)

    def outside(self, measured: Measured, query: Spots, pca: LinearPCA) -> np.ndarray:
        """The neighbours' gene-specific detail that the components miss."""
        near = idw(measured.xy, measured.y, query.xy, self.k_genes)
        return near - pca.inverse_transform(pca.transform(near))

    def state(self) -> dict[str, np.ndarray]:
        """Arrays of everything but the probe, which its owner saves (the model shares it)."""
        out = {"k": np.asarray(self.k), "k_genes": np.asarray(self.k_genes)}
        if self.blend is not None:
            out |= nest("blend", self.blend.state())
            if self.head is not None:
                out |= nest("head", self.head.state())
            if self.prior:
                out["prior"] = np.asarray(1)
        return out

    @classmethod
    def from_state(cls, s: dict[str, np.ndarray], probe: Projector) -> NeighbourContext:
        if "blend.weights" not in s:
            return cls(scalar(s["k"]), scalar(s["k_genes"]))
        head = RidgeHead.from_state(sub(s, "head")) if "head.coef" in s else None
        return cls(scalar(s["k"]), scalar(s["k_genes"]), probe if head is not None else None, head,
                   Blend.from_state(sub(s, "blend")), prior="prior" in s)


def image_oof(features: np.ndarray, z: np.ndarray, seed: int, folds: int = 5) -> np.ndarray:
    """The image probe's ``folds``-fold out-of-fold prediction of each training spot."""
    fold = np.random.default_rng(seed).permutation(len(features)) % folds
    out = np.zeros_like(z)
    for k in range(folds):
        held = fold == k
        proj = Projector.fit(features[~held])
        head = RidgeHead.fit_cv(proj(features[~held]), z[~held])
        out[held] = head.predict(proj(features[held])).astype(np.float32)
    return out


def with_ring(spots: Spots, groups: np.ndarray | None, k: int) -> np.ndarray:
    """Features of each spot next to the mean features of its ring: itself and its ``k - 1``
    nearest spots of the same section (k = 7: a Visium spot and its hexagonal ring)."""
    groups = np.zeros(len(spots), np.int64) if groups is None else np.asarray(groups)
    ring = np.empty_like(np.asarray(spots.features, np.float32))
    for g in np.unique(groups):
        here = groups == g
        ring[here] = ring_mean(spots.xy[here], spots.features[here], k)
    return np.hstack([np.asarray(spots.features, np.float32), ring])


def spatial_blocks(xy: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Spatial blocks (k-means on positions) that stand in for sections when only one trains."""
    from sklearn.cluster import KMeans

    n = max(2, min(n, len(xy)))
    return KMeans(n_clusters=n, n_init=1, random_state=seed).fit_predict(np.asarray(xy, np.float64))


class ImageContext:
    """A new section predicted from its image (each spot and its ring) alone.

    A ridge probe on [spot features, ring-mean features] predicts every gene; its penalty is
    chosen leave-one-section-out (spatial blocks when one section trains), because the
    spot-wise choice is far too small for a new section. The same penalty predicts the top
    components; the prediction is their reconstruction plus ``outside_weight`` of the gene-wise
    detail outside them, as within a section.
    """

    def __init__(self, probe: Projector, gene_head: RidgeHead, z_head: RidgeHead, outside_weight: float):
        self.probe, self.gene_head, self.z_head = probe, gene_head, z_head
        self.outside_weight = float(outside_weight)

    @classmethod
    def fit(cls, f_train: np.ndarray, y_train: np.ndarray, pca: LinearPCA, cv_groups: np.ndarray, *,
            outside_weight: float) -> tuple[ImageContext, np.ndarray, np.ndarray]:
        """(fitted context, training spots' out-of-section context scores, their out-of-section
        gene prediction). ``f_train``: features with their ring (``with_ring``)."""
        probe = Projector.fit(f_train)
        p_train = probe(f_train)
        alpha, g_oof = grouped_alpha(p_train, y_train, cv_groups)
        z_train = pca.transform(y_train)
        _, z_oof = grouped_alpha(p_train, z_train, cv_groups, alphas=(alpha,))
        ctx = cls(probe, RidgeHead.fit_fixed(p_train, y_train, alpha), RidgeHead.fit_fixed(p_train, z_train, alpha),
                  outside_weight)
        oof = ctx._low_rank(z_oof.astype(np.float32), g_oof.astype(np.float32), pca)
        return ctx, pca.transform(oof).astype(np.float32), oof

    @property
    def alpha(self) -> float:
        return self.gene_head.alpha

    def _low_rank(self, z: np.ndarray, genes: np.ndarray, pca: LinearPCA) -> np.ndarray:
        return pca.inverse_transform(z) + self.outside_weight * (genes - pca.inverse_transform(pca.transform(genes)))

    def predict(self, f_query: np.ndarray, pca: LinearPCA) -> tuple[np.ndarray, np.ndarray]:
        """(gene-space prediction, its component scores: the network's context)."""
        p = self.probe(f_query)
        genes = self.gene_head.predict(p).astype(np.float32)
        z = self.z_head.predict(p).astype(np.float32)
        base = self._low_rank(z, genes, pca).astype(np.float32)
        return base, pca.transform(base).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return (nest("probe", self.probe.state()) | nest("gene_head", self.gene_head.state())
                | nest("z_head", self.z_head.state()) | {"outside_weight": np.asarray(self.outside_weight)})

    @classmethod
    def from_state(cls, s: dict[str, np.ndarray]) -> ImageContext:
        return cls(Projector.from_state(sub(s, "probe")), RidgeHead.from_state(sub(s, "gene_head")),
                   RidgeHead.from_state(sub(s, "z_head")), scalar(s["outside_weight"]))
