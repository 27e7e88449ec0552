"""The HEST-Benchmark linear probe: frozen image features -> standardise -> PCA -> ridge.

Used on its own as the ``ridge`` baseline of the benchmark, and inside the default model as
the image-only prediction stacked into the neighbours' context.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV
from sklearn.preprocessing import StandardScaler

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
    scaler = StandardScaler().fit(train_x)
    z_train = scaler.transform(train_x)
    n_comp = max(1, min(n_pcs, z_train.shape[0] - 1, z_train.shape[1]))
    pca = PCA(n_components=n_comp, svd_solver="full").fit(z_train)
    reg = RidgeCV(alphas=RIDGE_ALPHAS).fit(pca.transform(z_train), y_train)
    pred = reg.predict(pca.transform(scaler.transform(query_x)))
    return pred.astype(np.float32), {"alpha": float(reg.alpha_), "n_pcs": int(n_comp)}
