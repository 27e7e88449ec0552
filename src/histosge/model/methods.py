"""The two HisToSGE variants as fit-and-predict calls on the same inputs as any baseline.

- ``histosge-paper``: the paper's model and schedule (1000 fixed epochs, lr 1e-3, groups of 50).
- ``histosge``: our default. Expression is modelled in a low-rank space (the top
  ``n_components`` principal components of the training spots' log1p expression), which
  removes per-gene counting noise from targets and predictions. The same network also sees
  what the measured neighbours say (IDW interpolation of the nearest training spots' scores,
  leave-one-out on training spots so it looks as at prediction time) and predicts a correction
  to it from the image and position; early stopping on a validation split of training spots.
  The context itself also blends in an image-only prediction (ridge on frozen features,
  out-of-fold on training spots), weighted per component by least squares.
  docs/MODEL_NOTES.md records what each of these choices bought on held-out spots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA

from .neighbours import choose_k, idw
from .probe import ridge_probe
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
                config: TrainConfig | None = None, seed: int = 0, progress: bool = True
                ) -> tuple[np.ndarray, dict]:
    """Train ``method`` on ``train`` spots and predict ``query`` spots; returns (pred, info)."""
    if method == "histosge-paper":
        cfg = (config or PAPER_CONFIG).replace(seed=seed)
        model = fit(train.features, train.rows, train.cols, y_train, cfg, progress=progress)
        pred = model.predict(query.features, query.rows, query.cols)
        return pred, {"config": cfg.to_dict(), "history": _short(model.history)}
    if method == "histosge":
        cfg = (config or DEFAULT_CONFIG).replace(seed=seed)
        n_comp = max(1, min(N_COMPONENTS, len(y_train) - 1, y_train.shape[1]))
        pca = PCA(n_comp, random_state=seed).fit(y_train)
        z_train = pca.transform(y_train).astype(np.float32)
        k = choose_k(train.xy, z_train)
        ctx_train = idw(train.xy, z_train, train.xy, k, exclude_self=True)
        ctx_query = idw(train.xy, z_train, query.xy, k)
        if STACK_IMAGE:
            ctx_train, ctx_query = _stack_image(train.features, query.features, z_train, ctx_train, ctx_query, seed)
        model = fit(train.features, train.rows, train.cols, z_train, cfg, context=ctx_train, progress=progress)
        z = model.predict(query.features, query.rows, query.cols, context=ctx_query)
        # Gene-specific detail the components miss, from plain neighbour averaging, shrunk.
        k_genes = choose_k(train.xy, y_train)
        near = idw(train.xy, y_train, query.xy, k_genes)
        outside = near - pca.inverse_transform(pca.transform(near))
        pred = np.maximum(pca.inverse_transform(z) + OUTSIDE_WEIGHT * outside, 0).astype(np.float32)
        return pred, {"config": cfg.to_dict(), "k": k, "k_genes": k_genes, "n_components": n_comp,
                      "history": _short(model.history)}
    raise ValueError(f"unknown method {method!r}; known: {METHODS}")


def _stack_image(f_train, f_query, z_train, knn_train, knn_query, seed: int, folds: int = 5):
    """Blend the neighbours' scores with what the image alone predicts, per component.

    The image prediction for training spots is out-of-fold, and the neighbours' is
    leave-one-out, so both look as they will at a new spot; the per-component blend
    weights are least squares on those, with the image's weight kept in [0, 1].
    """
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(f_train)) % folds
    img_train = np.zeros_like(z_train)
    for k in range(folds):
        held = fold == k
        img_train[held] = ridge_probe(f_train[~held], z_train[~held], f_train[held])[0]
    img_query = ridge_probe(f_train, z_train, f_query)[0]
    out_train, out_query = np.empty_like(knn_train), np.empty_like(knn_query)
    for j in range(z_train.shape[1]):
        A = np.column_stack([knn_train[:, j], img_train[:, j], np.ones(len(z_train))])
        w, *_ = np.linalg.lstsq(A, z_train[:, j], rcond=None)
        w[1] = np.clip(w[1], 0.0, 1.0)
        out_train[:, j] = A @ w
        out_query[:, j] = np.column_stack([knn_query[:, j], img_query[:, j], np.ones(len(knn_query))]) @ w
    return out_train.astype(np.float32), out_query.astype(np.float32)


def _short(history: dict) -> dict:
    keys = ("epochs_run", "initial_val_loss", "best_val_loss", "seconds", "skipped")
    return {k: history[k] for k in keys if k in history}
