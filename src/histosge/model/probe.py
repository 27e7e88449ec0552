"""The HEST-Benchmark linear probe: frozen image features -> standardise -> PCA -> ridge.

Used on its own as the ``ridge`` baseline of the benchmark, and inside the model as the
image-only prediction (``model.contexts``). Both are built from the same fitted pieces
(``model.parts.Projector`` and ``RidgeHead``).
"""

from __future__ import annotations

import numpy as np

from .parts import RIDGE_ALPHAS, Projector, RidgeHead, grouped_alpha

__all__ = ["RIDGE_ALPHAS", "grouped_ridge", "ridge_probe"]


def ridge_probe(train_x: np.ndarray, y_train: np.ndarray, query_x: np.ndarray, *, n_pcs: int = 256
                ) -> tuple[np.ndarray, dict]:
    """Predict ``y`` at ``query_x`` from features; returns (prediction, {'alpha', 'n_pcs'}).

    Differs from HEST: the penalty is chosen by efficient leave-one-out CV over
    ``RIDGE_ALPHAS`` on the training spots (HEST fixes alpha = 100 / (n_features x n_genes)),
    and an intercept is fitted (HEST fits none on uncentred targets). PCA keeps at most
    n_train - 1 components when there are fewer training spots than 256.
    """
    proj = Projector.fit(train_x, n_pcs)
    head = RidgeHead.fit_cv(proj(train_x), y_train)
    return head.predict(proj(query_x)).astype(np.float32), {"alpha": head.alpha, "n_pcs": proj.n_pcs}


def grouped_ridge(train_x: np.ndarray, y_train: np.ndarray, query_x: np.ndarray, groups: np.ndarray, *,
                  n_pcs: int = 256, oof: bool = False, alphas: tuple[float, ...] = RIDGE_ALPHAS
                  ) -> tuple[np.ndarray, dict]:
    """``ridge_probe`` with the penalty chosen by leave-one-group-out CV instead of leave-one-spot-out
    (``parts.grouped_alpha``). ``groups`` names the section (or spatial block) of each training
    spot. With ``oof`` the info also holds ``'oof'``: each training spot predicted by the model
    fitted without its group. ``alphas``: the penalties searched (one value fixes it).
    """
    proj = Projector.fit(train_x, n_pcs)
    p_train = proj(train_x)
    alpha, oof_pred = grouped_alpha(p_train, y_train, groups, alphas)
    head = RidgeHead.fit_fixed(p_train, y_train, alpha)
    info = {"alpha": alpha, "n_pcs": proj.n_pcs}
    if oof:
        info["oof"] = oof_pred.astype(np.float32)
    return head.predict(proj(query_x)).astype(np.float32), info
