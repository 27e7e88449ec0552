"""The default model's contexts: non-negative image stacking, the cross-section (image-only)
mode, the leave-one-section-out ridge penalty and image neighbourhoods."""

import numpy as np

from histosge.evaluate import score
from histosge.model import HisToSGE, Spots, TrainConfig, fit
from histosge.model.contexts import Blend, image_oof
from histosge.model.neighbours import idw, ring_mean
from histosge.model.probe import grouped_ridge, ridge_probe

SMALL = TrainConfig(epochs=5, patience=2, dim=32, mlp_dim=32, groups_per_step=4)


def _sections(n_sections=3, n=150, seed=0, shift=3.0):
    """Sections whose image features carry expression, each with its own feature offset (stain)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(6, 40))
    out = []
    for _ in range(n_sections):
        side = int(np.ceil(np.sqrt(n)))
        rows, cols = np.divmod(np.arange(n), side)
        xy = np.column_stack([cols * 100.0, rows * 100.0])
        latent = rng.normal(size=(n, 6))
        feats = np.hstack([latent + rng.normal(scale=0.5, size=latent.shape), rng.normal(size=(n, 4))])
        feats = feats + shift * rng.normal(size=(1, feats.shape[1]))  # a section-wide offset
        y = np.maximum(latent @ w / 3 + 2 + rng.normal(scale=0.5, size=(n, 40)), 0).astype(np.float32)
        out.append((feats.astype(np.float32), xy, rows.astype(float), cols.astype(float), y))
    return out


def test_ring_mean_averages_each_spot_with_its_nearest_neighbours():
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 0.0]])
    v = np.array([[0.0], [2.0], [10.0], [20.0]], np.float32)
    assert np.allclose(ring_mean(xy, v, k=2)[:, 0], [1.0, 1.0, 15.0, 15.0])
    assert np.allclose(ring_mean(xy, v, k=1), v)  # itself only
    assert ring_mean(xy, v, k=50).shape == v.shape  # k larger than the section


def test_grouped_ridge_oof_never_sees_its_own_group():
    (fa, _, _, _, ya), (fb, _, _, _, yb) = _sections(2)[:2]
    x, y = np.vstack([fa, fb]), np.vstack([ya, yb])
    groups = np.repeat([0, 1], len(fa))
    _, info = grouped_ridge(x, y, fb, groups, oof=True, alphas=(10.0,))
    assert info["oof"].shape == y.shape and info["alpha"] == 10.0
    # section 1's out-of-group predictions depend on section 0's expression only
    y_changed = y.copy()
    y_changed[groups == 1] = np.random.default_rng(9).normal(size=yb.shape)
    _, info2 = grouped_ridge(x, y_changed, fb, groups, oof=True, alphas=(10.0,))
    assert np.allclose(info["oof"][groups == 1], info2["oof"][groups == 1], atol=1e-5)
    assert not np.allclose(info["oof"][groups == 0], info2["oof"][groups == 0], atol=1e-3)


def test_grouped_ridge_penalty_is_at_least_the_spotwise_one_under_section_shift():
    secs = _sections(3, shift=4.0)
    x, y = np.vstack([s[0] for s in secs]), np.vstack([s[4] for s in secs])
    groups = np.repeat(np.arange(3), len(secs[0][0]))
    _, spotwise = ridge_probe(x, y, x[:5])
    _, grouped = grouped_ridge(x, y, x[:5], groups)
    assert grouped["alpha"] >= spotwise["alpha"]


def test_stacking_never_turns_an_anticorrelated_loo_context_into_a_negative_weight():
    # ~50 spots, k close to n: the leave-one-out neighbour mean is anti-correlated with each spot
    rng = np.random.default_rng(3)
    n = 50
    z = rng.normal(size=(n, 2)).astype(np.float32)
    xy = rng.uniform(0, 10, (n, 2))
    loo = idw(xy, z, xy, 40, exclude_self=True)
    assert np.corrcoef(loo[:, 0], z[:, 0])[0, 1] < 0  # the trap exists
    feats = rng.normal(size=(n, 5)).astype(np.float32)
    query_ctx = np.repeat(z.mean(0, keepdims=True), 10, 0) + rng.normal(size=(10, 2)).astype(np.float32)
    img_train = image_oof(feats, z, seed=0)
    out_q = Blend.fit(loo, img_train, z)(query_ctx, ridge_probe(feats, z, feats[:10])[0])
    # with a non-negative weight the query prediction moves with (or ignores) its context, never against it
    for j in range(2):
        c = np.corrcoef(out_q[:, j], query_ctx[:, j])[0, 1] if out_q[:, j].std() > 1e-6 else 0.0
        assert c >= -1e-6


def test_cross_section_mode_predicts_from_the_image_and_validates_on_a_held_out_section():
    secs = _sections(4, shift=1.0)
    train_secs, target = secs[:3], secs[3]
    feats = np.vstack([s[0] for s in train_secs])
    xy = np.vstack([s[1] for s in train_secs])
    zeros = np.zeros(len(feats))
    y = np.vstack([s[4] for s in train_secs])
    groups = np.repeat(np.arange(3), len(train_secs[0][0]))
    train = Spots(feats, zeros, zeros, xy)
    query = Spots(target[0], np.zeros(len(target[0])), np.zeros(len(target[0])), target[1])
    model = HisToSGE("image", network=SMALL).fit_spots(train, y, groups=groups, progress=False)
    pred = model.predict_spots(query)
    assert pred.shape == target[4].shape and (pred >= 0).all()
    assert score(target[4], pred)["pcc"] > 0.5  # the image carries the signal here
    assert model.info_["alpha"] > 0 and "oof_pcc" in model.info_
    # a single training section: spatial blocks stand in for sections
    one = Spots(train_secs[0][0], np.zeros(150), np.zeros(150), train_secs[0][1])
    pred1 = HisToSGE("image", network=SMALL).fit_spots(one, train_secs[0][4], progress=False).predict_spots(query)
    assert np.isfinite(pred1).all()


def test_fit_honours_an_explicit_validation_mask():
    rng = np.random.default_rng(0)
    n = 120
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = rng.normal(size=(n, 3)).astype(np.float32)
    rows, cols = np.divmod(np.arange(n), 12)
    mask = np.zeros(n, bool)
    mask[:30] = True
    cfg = TrainConfig(epochs=3, patience=5, dim=16, mlp_dim=16, min_val_spots=1)
    model = fit(x, rows.astype(float), cols.astype(float), y, cfg, progress=False, val_mask=mask)
    assert len(model.history["val_loss"]) == 3
    ctx = np.zeros_like(y)
    gated = fit(x, rows.astype(float), cols.astype(float), y, cfg.replace(min_val_spots=31), progress=False,
                val_mask=mask, context=ctx)
    assert "30 validation spots" in gated.history["skipped"]
