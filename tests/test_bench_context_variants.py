"""bench/context_variants.py: its rebuilt default must be the library's model, or the table in
docs/MODEL_NOTES.md section 15 compares variants of something else."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from histosge.model import HisToSGE, Spots

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def cv():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("context_variants", BENCH / "context_variants.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def _section(n=120, seed=0):
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    rows, cols = np.divmod(np.arange(n), side)
    xy = np.column_stack([cols * 100.0, rows * 100.0])
    latent = np.column_stack([np.sin(xy[:, 0] / 300), np.cos(xy[:, 1] / 400), rng.normal(size=n)])
    feats = np.hstack([latent + rng.normal(scale=0.3, size=latent.shape), rng.normal(size=(n, 5))]).astype(np.float32)
    y = np.maximum(latent @ rng.normal(size=(3, 30)) + 2 + rng.normal(scale=0.3, size=(n, 30)), 0).astype(np.float32)
    return feats, xy, rows.astype(float), cols.astype(float), y


def test_rebuilt_default_equals_fit_predict_and_every_variant_runs(cv):
    feats, xy, rows, cols, y = _section()
    train = np.arange(0, len(y), 2)
    knn = np.zeros_like(y)
    default = cv.predict("default", feats, xy, train, y[train], 0, knn)
    model = HisToSGE().fit_spots(Spots(feats[train], rows[train], cols[train], xy[train]), y[train], progress=False)
    lib = model.predict_spots(Spots(feats, rows, cols, xy))
    assert np.abs(lib - default).max() < 1e-4
    for variant in cv.VARIANTS:
        pred = cv.predict(variant, feats, xy, train, y[train], 0, knn)
        assert pred.shape == y.shape and np.isfinite(pred).all(), variant
    half = cv.predict("knn-mix0.5", feats, xy, train, y[train], 0, knn)
    assert np.allclose(half, 0.5 * default, atol=1e-5)


def test_kriging_leave_one_out_matches_an_explicit_refit(cv):
    """The closed form [K^-1 y]_i / [K^-1]_ii must be the GP fitted without spot i (same mean,
    kernel and noise), or the lengthscales it picks are picked on a wrong error."""
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 1000, size=(40, 2))
    z = np.column_stack([np.sin(xy[:, 0] / 200), rng.normal(size=40)])
    old = cv.LENGTHSCALES, cv.NOISES
    try:
        cv.LENGTHSCALES, cv.NOISES = (2.0,), (0.5,)
        _, loo = cv.kriging(xy, z, xy[:1])
    finally:
        cv.LENGTHSCALES, cv.NOISES = old
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    spacing = np.median(np.sort(d, 1)[:, 1])
    k = cv._matern32(d, 2.0 * spacing) + 0.5 * np.eye(40)
    mu = z.mean(0)
    for i in (0, 5, 39):
        keep = np.arange(40) != i
        ref = mu + k[i, keep] @ np.linalg.solve(k[np.ix_(keep, keep)], z[keep] - mu)
        assert np.allclose(loo[i], ref, atol=1e-4)
