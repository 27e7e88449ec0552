"""The two HisToSGE variants as fit-and-predict calls on the same inputs as any baseline.

- ``histosge-paper``: the paper's model and schedule (1000 fixed epochs, lr 1e-3, groups of 50).
- ``histosge``: our default. Expression is modelled in a low-rank space (the top
  ``n_components`` principal components of the training spots' log1p expression), which
  removes per-gene counting noise from targets and predictions. The same network also sees
  what the measured neighbours say (IDW interpolation of the nearest training spots' scores,
  leave-one-out on training spots so it looks as at prediction time) and predicts a correction
  to it from the image and position; early stopping on a validation split of training spots.
  The context itself also blends in an image-only prediction (ridge on frozen features,
  out-of-fold on training spots), weighted per component by non-negative least squares, and
  a quarter of the final prediction is the gene-wise image-only prediction (``IMAGE_BLEND``).
  On another section (``cross_section``, benchmark protocol X) no neighbour is measured: the
  context is then an image-only prediction from each spot's features and its ring's.
  docs/MODEL_NOTES.md records what each of these choices bought on held-out spots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA

from ..evaluate import pearson_per_gene
from .neighbours import choose_k, idw, ring_mean
from .probe import grouped_ridge, ridge_probe
from .train import PAPER_CONFIG, TrainConfig, fit

#: Our default schedule and size (see docs/MODEL_NOTES.md for what each choice bought).
DEFAULT_CONFIG = TrainConfig(epochs=300, patience=20, val_fraction=0.2, group_size=50, groups_per_step=8,
                             dim=256, mlp_dim=512, dropout=0.1, lr=1e-3, residual=True,
                             min_val_spots=100, min_delta=0.005)

METHODS = ("histosge", "histosge-paper")

#: Principal components the default model predicts (see docs/MODEL_NOTES.md).
N_COMPONENTS = 8
#: Weight of the neighbours' expression outside those components (gene-specific detail).
OUTSIDE_WEIGHT = 0.5
#: Blend an image-only prediction (ridge on frozen features) into the neighbours' context.
STACK_IMAGE = True
#: Weight of the gene-wise image-only prediction (ridge probe) in the final blend, within a
#: section (docs/MODEL_NOTES.md, section 10).
IMAGE_BLEND = 0.25
#: Spots whose features make a spot's image neighbourhood (itself and its ring).
RING = 7
#: Spatial blocks that stand in for sections when only one section trains (protocol X).
CV_BLOCKS = 5


@dataclass
class Spots:
    """What is known of a set of spots apart from their expression."""

    features: np.ndarray  # (n, d) image features
    rows: np.ndarray  # grid row (float; half-steps for generated spots)
    cols: np.ndarray  # grid column
    xy: np.ndarray  # (n, 2) centres in full-resolution pixels

    def __len__(self) -> int:
        return len(self.rows)


def fit_predict(method: str, train: Spots, y_train: np.ndarray, query: Spots, *,
                config: TrainConfig | None = None, seed: int = 0, progress: bool = True,
                cross_section: bool = False, train_groups: np.ndarray | None = None,
                query_groups: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Train ``method`` on ``train`` spots and predict ``query`` spots; returns (pred, info).

    ``cross_section``: the query spots lie on another section (benchmark protocol X), so no
    measured neighbour is known there and the default model predicts from the image alone
    (``_image_context``). ``train_groups`` / ``query_groups`` name each spot's section: image
    neighbourhoods never cross sections, and penalties are cross-validated section by section.
    """
    if method == "histosge-paper":
        cfg = (config or PAPER_CONFIG).replace(seed=seed)
        model = fit(train.features, train.rows, train.cols, y_train, cfg, progress=progress)
        pred = model.predict(query.features, query.rows, query.cols)
        return pred, {"config": cfg.to_dict(), "history": _short(model.history)}
    if method != "histosge":
        raise ValueError(f"unknown method {method!r}; known: {METHODS}")
    cfg = (config or DEFAULT_CONFIG).replace(seed=seed)
    y_train = np.asarray(y_train, np.float32)
    n_comp = max(1, min(N_COMPONENTS, len(y_train) - 1, y_train.shape[1]))
    pca = PCA(n_comp, random_state=seed).fit(y_train)
    z_train = pca.transform(y_train).astype(np.float32)
    if cross_section:
        f_train, f_query, base_query, ctx_train, ctx_query, val_mask, info = _image_context(
            train, y_train, query, pca, train_groups, query_groups, seed)
    else:
        f_train, f_query, val_mask = train.features, query.features, None
        base_query, ctx_train, ctx_query, info = _neighbour_context(train, y_train, query, pca, z_train, seed)
    model = fit(f_train, train.rows, train.cols, z_train, cfg, context=ctx_train, progress=progress,
                val_mask=val_mask)
    z = model.predict(f_query, query.rows, query.cols, context=ctx_query)
    # The network predicts components; its correction to the context is added to the base prediction.
    pred = base_query + (z - ctx_query) @ pca.components_
    if IMAGE_BLEND and not cross_section:
        # Gene-wise detail from the image that neither the components nor the neighbours carry.
        img = ridge_probe(train.features, y_train, query.features)[0]
        pred = (1 - IMAGE_BLEND) * pred + IMAGE_BLEND * img
        info["image_blend"] = IMAGE_BLEND
    info.update({"config": cfg.to_dict(), "n_components": n_comp, "history": _short(model.history)})
    return np.maximum(pred, 0).astype(np.float32), info


def _neighbour_context(train: Spots, y_train, query: Spots, pca, z_train, seed: int):
    """Protocols R/G and ``superres``: what the measured neighbours (and the image) say.

    Returns (base prediction in gene space, context scores of training spots (leave-one-out),
    context scores of query spots, info).
    """
    k = choose_k(train.xy, z_train)
    ctx_train = idw(train.xy, z_train, train.xy, k, exclude_self=True)
    ctx_query = idw(train.xy, z_train, query.xy, k)
    if STACK_IMAGE:
        ctx_train, ctx_query = _stack_image(train.features, query.features, z_train, ctx_train, ctx_query, seed)
    # Gene-specific detail the components miss, from plain neighbour averaging, shrunk.
    k_genes = choose_k(train.xy, y_train)
    near = idw(train.xy, y_train, query.xy, k_genes)
    outside = near - pca.inverse_transform(pca.transform(near))
    base = pca.inverse_transform(ctx_query) + OUTSIDE_WEIGHT * outside
    return base, ctx_train, ctx_query, {"k": k, "k_genes": k_genes}


def _stack_image(f_train, f_query, z_train, knn_train, knn_query, seed: int, folds: int = 5):
    """Blend the neighbours' scores with what the image alone predicts, per component.

    The image prediction for training spots is out-of-fold, and the neighbours' is
    leave-one-out, so both look as they will at a new spot. The per-component blend weights
    are least squares on those with both weights non-negative: with ~50 training spots the
    leave-one-out neighbour average of a large k is *anti*-correlated with the spot itself
    (it is the mean of the others), and an unconstrained fit turned that into a negative
    weight that flipped the sign of the prediction at new spots (her2st B4, protocol G).
    """
    img_train = _image_oof(f_train, z_train, seed, folds)
    img_query = ridge_probe(f_train, z_train, f_query)[0]
    return _blend(knn_train, img_train, knn_query, img_query, z_train)


def _image_oof(f_train, z_train, seed: int, folds: int = 5) -> np.ndarray:
    """The image probe's ``folds``-fold out-of-fold prediction of each training spot."""
    fold = np.random.default_rng(seed).permutation(len(f_train)) % folds
    out = np.zeros_like(z_train)
    for k in range(folds):
        held = fold == k
        out[held] = ridge_probe(f_train[~held], z_train[~held], f_train[held])[0]
    return out


def _blend(knn_train, img_train, knn_query, img_query, z_train):
    """Per component: non-negative least-squares weights of the two centred predictions (and a
    free intercept) fitted on the training spots, applied to the query spots' predictions.
    Returns (training spots' blend, query spots' blend)."""
    from scipy.optimize import nnls

    out_train, out_query = np.empty_like(knn_train), np.empty_like(knn_query)
    for j in range(z_train.shape[1]):
        a_train = np.column_stack([knn_train[:, j], img_train[:, j]]).astype(np.float64)
        a_query = np.column_stack([knn_query[:, j], img_query[:, j]]).astype(np.float64)
        mu, target_mu = a_train.mean(0), float(z_train[:, j].mean())
        w, _ = nnls(a_train - mu, z_train[:, j] - target_mu)
        out_train[:, j] = (a_train - mu) @ w + target_mu
        out_query[:, j] = (a_query - mu) @ w + target_mu
    return out_train.astype(np.float32), out_query.astype(np.float32)


def _blocks(xy: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Spatial blocks (k-means on positions) as CV groups when only one section trains."""
    from sklearn.cluster import KMeans

    n = max(2, min(n, len(xy)))
    return KMeans(n_clusters=n, n_init=1, random_state=seed).fit_predict(np.asarray(xy, np.float64))


def _with_ring(spots: Spots, groups: np.ndarray | None) -> np.ndarray:
    """Features of each spot next to the mean features of its ring (within its own section)."""
    groups = np.zeros(len(spots), np.int64) if groups is None else np.asarray(groups)
    ring = np.empty_like(np.asarray(spots.features, np.float32))
    for g in np.unique(groups):
        here = groups == g
        ring[here] = ring_mean(spots.xy[here], spots.features[here], RING)
    return np.hstack([np.asarray(spots.features, np.float32), ring])


def _image_context(train: Spots, y_train, query: Spots, pca, train_groups, query_groups, seed: int):
    """Protocol X: a new section, predicted from its image (the spot and its ring) alone.

    A ridge probe on [spot features, ring-mean features] predicts every gene; its penalty is
    chosen leave-one-section-out (spatial blocks when one section trains), because the
    spot-wise choice is far too small for a new section. The same penalty predicts the top
    components, and the prediction is their reconstruction plus half of the gene-wise detail
    outside them, as within a section. The out-of-section predictions of the training spots
    are the context the network learns to correct.
    """
    groups = None if train_groups is None else np.asarray(train_groups)
    if groups is None or len(np.unique(groups)) < 2:
        cv_groups = _blocks(train.xy, CV_BLOCKS, seed)
    else:
        cv_groups = groups
    f_train = _with_ring(train, groups)
    f_query = _with_ring(query, query_groups)  # clipped to the training range by every model that reads it
    genes_q, g_info = grouped_ridge(f_train, y_train, f_query, cv_groups, oof=True)
    z_train = pca.transform(y_train)
    z_q, z_info = grouped_ridge(f_train, z_train, f_query, cv_groups, oof=True, alphas=(g_info["alpha"],))

    def low_rank(z, genes):
        return pca.inverse_transform(z) + OUTSIDE_WEIGHT * (genes - pca.inverse_transform(pca.transform(genes)))

    base = low_rank(z_q, genes_q).astype(np.float32)
    oof = low_rank(z_info["oof"], g_info["oof"])
    ctx_train = pca.transform(oof).astype(np.float32)
    ctx_query = pca.transform(base).astype(np.float32)
    labels = np.unique(cv_groups)
    val_mask = cv_groups == labels[np.random.default_rng(seed).integers(len(labels))]
    oof_pcc = float(np.nan_to_num(pearson_per_gene(y_train, oof)).mean())  # constant genes count 0
    info = {"alpha": g_info["alpha"], "oof_pcc": round(oof_pcc, 4)}
    return f_train, f_query, base, ctx_train, ctx_query, val_mask, info


def _short(history: dict) -> dict:
    keys = ("epochs_run", "initial_val_loss", "best_val_loss", "seconds", "skipped")
    return {k: history[k] for k in keys if k in history}
