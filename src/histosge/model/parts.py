"""The fitted pieces of the model, each a few arrays that round-trip through a model file.

scikit-learn fits them (PCA, RidgeCV); what is kept is only what prediction needs, as plain
numpy arrays, so a saved model holds numbers and never pickled objects. Each piece has
``state()`` (name -> array) and ``from_state(arrays)``; prediction repeats scikit-learn's own
arithmetic in the same order, so a fitted piece and its reloaded copy give identical numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV

from .scaling import FeatureScaler

#: Ridge penalties searched by leave-one-out CV on the training spots.
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 13))


@dataclass
class LinearPCA:
    """A fitted PCA (no whitening): ``transform`` and ``inverse_transform`` as scikit-learn's."""

    mean: np.ndarray  # (n_features,)
    components: np.ndarray  # (n_components, n_features)

    @classmethod
    def fit(cls, x: np.ndarray, n_components: int, *, seed: int = 0, svd_solver: str = "auto") -> LinearPCA:
        pca = PCA(n_components, random_state=seed, svd_solver=svd_solver).fit(x)
        return cls(pca.mean_, pca.components_)

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def transform(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(x) @ self.components.T
        out -= self.mean.reshape(1, -1) @ self.components.T
        return out

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z) @ self.components + self.mean

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "components": self.components}

    @classmethod
    def from_state(cls, s: dict[str, np.ndarray]) -> LinearPCA:
        return cls(s["mean"], s["components"])


class Projector:
    """Image features -> the probe's input: clip to the training range, standardise, then PCA
    fitted on the training spots (at most n_train - 1 components). A probe must not extrapolate."""

    def __init__(self, scaler: FeatureScaler, pca: LinearPCA):
        self.scaler, self.pca = scaler, pca

    @classmethod
    def fit(cls, train_x: np.ndarray, n_pcs: int = 256) -> Projector:
        scaler = FeatureScaler(train_x)
        z = scaler.transform(train_x)
        n_comp = max(1, min(n_pcs, z.shape[0] - 1, z.shape[1]))
        return cls(scaler, LinearPCA.fit(z, n_comp, svd_solver="full"))

    @property
    def n_pcs(self) -> int:
        return self.pca.n_components

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.pca.transform(self.scaler.transform(x))

    def standardised(self, x: np.ndarray) -> np.ndarray:
        """Standardised and projected *without* the clip: how far a spot lies outside the
        training range is what a novelty score must see."""
        s = self.scaler
        return self.pca.transform(((np.asarray(x, np.float32) - s.mean) / s.std).astype(np.float32))

    def state(self) -> dict[str, np.ndarray]:
        return {**nest("scaler", self.scaler.state()), **nest("pca", self.pca.state())}

    @classmethod
    def from_state(cls, s: dict[str, np.ndarray]) -> Projector:
        return cls(FeatureScaler.from_state(sub(s, "scaler")), LinearPCA.from_state(sub(s, "pca")))


class RidgeHead:
    """A linear map fitted by ridge regression: ``(x - center) @ coef.T + intercept``
    (``center`` is None for scikit-learn's RidgeCV, which folds it into the intercept)."""

    @classmethod
    def fit_cv(cls, x: np.ndarray, y: np.ndarray, alphas=RIDGE_ALPHAS) -> RidgeHead:
        """Penalty chosen by efficient leave-one-out CV over ``alphas`` (scikit-learn's RidgeCV)."""
        reg = RidgeCV(alphas=alphas).fit(x, y)
        return cls(reg.coef_, np.asarray(reg.intercept_), float(reg.alpha_))

    @classmethod
    def fit_fixed(cls, x: np.ndarray, y: np.ndarray, alpha: float) -> RidgeHead:
        """Closed-form ridge with an unpenalised intercept at a given ``alpha`` (targets in float64,
        inputs in their own precision, as the probe has always computed it)."""
        x = np.asarray(x)
        y = np.asarray(y, np.float64)
        mu, y_mu = x.mean(0), y.mean(0)
        a = x - mu
        w = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ (y - y_mu))
        # The centring stays explicit ((q - mu) @ w + y_mu): folding it into the intercept
        # would round differently from the fit.
        return cls(w.T, np.asarray(y_mu), float(alpha), center=mu)

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, alpha: float, *, center: np.ndarray | None = None):
        self.coef, self.intercept, self.alpha = coef, intercept, float(alpha)
        self.center = center

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.center is not None:
            return (np.asarray(x) - self.center) @ self.coef.T + self.intercept
        return np.asarray(x) @ self.coef.T + self.intercept

    def state(self) -> dict[str, np.ndarray]:
        out = {"coef": self.coef, "intercept": self.intercept, "alpha": np.asarray(self.alpha)}
        if self.center is not None:
            out["center"] = self.center
        return out

    @classmethod
    def from_state(cls, s: dict[str, np.ndarray]) -> RidgeHead:
        return cls(s["coef"], s["intercept"], scalar(s["alpha"]), center=s.get("center"))


def grouped_alpha(p_train: np.ndarray, y: np.ndarray, groups: np.ndarray, alphas=RIDGE_ALPHAS
                  ) -> tuple[float, np.ndarray]:
    """The ridge penalty with the lowest leave-one-group-out MSE, and that penalty's
    out-of-group prediction of every training spot.

    Spots of one section share staining, scanner and neighbours, so leaving out single spots
    picks penalties far too small for a *new* section (on DLPFC 151673 -> 151676 the spot-wise
    choice is alpha 0.3 and predictions lose a quarter of their Pearson).
    """
    groups = np.asarray(groups)
    y = np.asarray(y, np.float64)
    labels = np.unique(groups)
    if len(labels) < 2:
        raise ValueError("grouped_alpha needs at least two groups")
    errors, oofs = [], []
    for alpha in alphas:
        oof = np.empty_like(y)
        for g in labels:
            held = groups == g
            oof[held] = RidgeHead.fit_fixed(p_train[~held], y[~held], alpha).predict(p_train[held])
        errors.append(float(((oof - y) ** 2).mean()))
        oofs.append(oof)
    best = int(np.argmin(errors))
    return float(alphas[best]), oofs[best]


def scalar(a) -> float:
    """The one number in a (0-d or 1-element) array; safetensors stores 0-d arrays as (1,)."""
    return np.asarray(a).reshape(-1)[0].item()


def sub(s: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries of ``s`` under ``prefix.``, with the prefix removed."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in s.items() if k.startswith(p)}


def nest(prefix: str, s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``s`` with every key put under ``prefix.`` (the inverse of ``sub``)."""
    return {f"{prefix}.{k}": v for k, v in s.items()}
