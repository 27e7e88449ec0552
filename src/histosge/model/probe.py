"""The HEST-Benchmark linear probe: frozen image features -> standardise -> PCA -> ridge.

Used on its own as the ``ridge`` baseline of the benchmark, and inside the default model as
the image-only prediction stacked into the neighbours' context.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV

from .scaling import standardise

#: Ridge penalties searched by leave-one-out CV on the training spots.
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 13))


def ridge_probe(train_x: np.ndarray, y_train: np.ndarray, query_x: np.ndarray, *, n_pcs: int = 256
                ) -> tuple[np.ndarray, dict]:
    """Predict ``y`` at ``query_x`` from features; returns (prediction, {'alpha', 'n_pcs'}).

    Differs from HEST: the penalty is chosen by efficient leave-one-out CV over
    ``RIDGE_ALPHAS`` on the training spots (HEST fixes alpha = 100 / (n_features x n_genes)),
    and an intercept is fitted (HEST fits none on uncentred targets). PCA keeps at most
    n_train - 1 components when there are fewer training spots than 256.
    """
    p_train, p_query, n_comp = _project(train_x, query_x, n_pcs)
    reg = RidgeCV(alphas=RIDGE_ALPHAS).fit(p_train, y_train)
    pred = reg.predict(p_query)
    return pred.astype(np.float32), {"alpha": float(reg.alpha_), "n_pcs": int(n_comp)}


def _project(train_x: np.ndarray, query_x: np.ndarray, n_pcs: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Standardise with training statistics, then PCA fitted on the training spots (at most
    n_train - 1 components): the probe's input for training and query spots. Query features are
    clipped to the training range first (``scaling.standardise``): a probe must not extrapolate."""
    z_train, z_query = standardise(train_x, query_x)
    n_comp = max(1, min(n_pcs, z_train.shape[0] - 1, z_train.shape[1]))
    pca = PCA(n_components=n_comp, svd_solver="full").fit(z_train)
    return pca.transform(z_train), pca.transform(z_query), n_comp


def grouped_ridge(train_x: np.ndarray, y_train: np.ndarray, query_x: np.ndarray, groups: np.ndarray, *,
                  n_pcs: int = 256, oof: bool = False, alphas: tuple[float, ...] = RIDGE_ALPHAS
                  ) -> tuple[np.ndarray, dict]:
    """``ridge_probe`` with the penalty chosen by leave-one-group-out CV instead of leave-one-spot-out.

    Spots of one section share staining, scanner and neighbours, so leaving out single spots
    picks penalties that are far too small for a *new* section (on DLPFC 151673 -> 151676 the
    spot-wise choice is alpha 0.3 and predictions lose a quarter of their Pearson). ``groups``
    names the section (or spatial block) of each training spot. With ``oof`` the info also
    holds ``'oof'``: each training spot predicted by the model fitted without its group, so
    that what is stacked on top sees predictions as they look on an unseen section.
    ``alphas``: the penalties searched (one value fixes it).
    """
    groups = np.asarray(groups)
    p_train, p_query, n_comp = _project(train_x, query_x, n_pcs)
    y = np.asarray(y_train, np.float64)
    labels = np.unique(groups)
    if len(labels) < 2:
        raise ValueError("grouped_ridge needs at least two groups")
    errors, oofs = [], []
    for alpha in alphas:
        oof_pred = np.empty_like(y)
        for g in labels:
            held = groups == g
            oof_pred[held] = _ridge(p_train[~held], y[~held], p_train[held], alpha)
        errors.append(float(((oof_pred - y) ** 2).mean()))
        oofs.append(oof_pred)
    best = int(np.argmin(errors))
    alpha = alphas[best]
    info = {"alpha": float(alpha), "n_pcs": int(n_comp)}
    if oof:
        info["oof"] = oofs[best].astype(np.float32)
    return _ridge(p_train, y, p_query, alpha).astype(np.float32), info


def _ridge(x: np.ndarray, y: np.ndarray, query: np.ndarray, alpha: float) -> np.ndarray:
    """Closed-form ridge with an unpenalised intercept."""
    mu, y_mu = x.mean(0), y.mean(0)
    a = x - mu
    w = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ (y - y_mu))
    return (query - mu) @ w + y_mu
