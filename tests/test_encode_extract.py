"""``encode.extract``: batched patch features, and the chunked disk cache (reuse, resume after an
interruption, corrupt chunks recomputed, key sensitive to what decides the features)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from histosge import encode
from histosge.encode.base import Encoder
from histosge.encode.cache import FeatureCache, file_fingerprint
from histosge.patches import crop_patches, patch_side_px
from histosge.read.image import ImageSource


class MeanColour(Encoder):
    """A tiny encoder: mean RGB of the (resized) patch; counts calls, can fail on call ``fail_at``."""

    def __init__(self, tag: str = "v1"):
        spec = dataclasses.replace(encode.get_spec("he-stats"), name="test-mean", dim=3, input_size=16)
        super().__init__(spec, None, weights_id=f"test:{tag}")
        self.calls = 0
        self.spots = 0
        self.fail_at: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        self.spots += len(x)
        return x.mean(dim=(2, 3))


def _image(seed=0, size=300):
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 240, np.uint8)
    for _ in range(30):
        x, y = rng.integers(0, size - 40, 2)
        img[y : y + 40, x : x + 40] = rng.integers(0, 255, 3)
    return img


def _centers(n=10, seed=1, size=300):
    return np.random.default_rng(seed).uniform(20, size - 20, (n, 2))


def _run(source, centers, enc, tmp_path, **kw):
    kw = {
        "patch_scale": 2.0,
        "batch_size": 2,
        "cache_dir": tmp_path / "cache",
        "chunk_size": 4,
        "progress": False,
        **kw,
    }
    return encode.extract(source, centers, 0.5, 30.0, encoder=enc, **kw)


def test_extract_matches_direct_encoding(tmp_path):
    source = ImageSource(_image())
    centers = _centers()
    enc = MeanColour()
    feats = _run(source, centers, enc, tmp_path, cache_dir=False)
    assert feats.shape == (10, 3) and feats.dtype == np.float32
    side = patch_side_px(30.0, 0.5, 2.0)
    assert side == 30
    patches = crop_patches(source, centers, 0.5, side)
    with torch.inference_mode():
        expect = enc(enc.preprocess(patches)).numpy()
    np.testing.assert_allclose(feats, expect, atol=1e-6)
    assert enc.calls == 5 + 1  # 10 spots in batches of 2, plus the direct call


def test_second_run_reuses_cache(tmp_path):
    source = ImageSource(_image())
    centers = _centers()
    first = MeanColour()
    a = _run(source, centers, first, tmp_path)
    assert first.spots == 10
    again = MeanColour()
    b = _run(source, centers, again, tmp_path)
    assert again.calls == 0
    np.testing.assert_array_equal(a, b)


def test_interrupted_run_resumes(tmp_path):
    source = ImageSource(_image())
    centers = _centers()
    clean = _run(source, centers, MeanColour(), tmp_path, cache_dir=False)
    enc = MeanColour()
    enc.fail_at = 4  # batches 1-3 pass (6 spots: chunk 0 of 4 is written), batch 4 fails
    with pytest.raises(KeyboardInterrupt):
        _run(source, centers, enc, tmp_path)
    resumed = MeanColour()
    out = _run(source, centers, resumed, tmp_path)
    assert resumed.spots == 6  # chunks 1 (4 spots) and 2 (2 spots) only
    np.testing.assert_allclose(out, clean, atol=1e-6)
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".part")]
    assert leftovers == []


def test_corrupt_chunk_is_recomputed(tmp_path):
    source = ImageSource(_image())
    centers = _centers()
    a = _run(source, centers, MeanColour(), tmp_path)
    (chunk,) = list((tmp_path / "cache").rglob("chunk_00001.npy"))
    data = bytearray(chunk.read_bytes())
    data[-5] ^= 0xFF
    chunk.write_bytes(bytes(data))
    enc = MeanColour()
    b = _run(source, centers, enc, tmp_path)
    assert enc.spots == 4
    np.testing.assert_array_equal(a, b)
    (tmp_path / "cache").rglob("chunk_00002.json").__next__().unlink()  # checksum gone: not trusted
    enc = MeanColour()
    _run(source, centers, enc, tmp_path)
    assert enc.spots == 2


def test_cache_key_follows_what_decides_features(tmp_path):
    img = _image()
    centers = _centers()
    _run(ImageSource(img), centers, MeanColour(), tmp_path)
    cases = {
        "other pixels": (ImageSource(_image(seed=5)), centers, MeanColour(), {}),
        "other centres": (ImageSource(img), centers + 1.0, MeanColour(), {}),
        "other weights": (ImageSource(img), centers, MeanColour("v2"), {}),
        "other patch side": (ImageSource(img), centers, MeanColour(), {"patch_scale": 1.0}),
    }
    for what, (src, c, enc, kw) in cases.items():
        _run(src, c, enc, tmp_path, **kw)
        assert enc.spots == 10, what
    same = MeanColour()
    _run(ImageSource(img.copy()), centers.copy(), same, tmp_path)
    assert same.calls == 0


def test_file_image_fingerprint_and_workers(tmp_path):
    path = tmp_path / "he.png"
    Image.fromarray(_image()).save(path)
    fp = file_fingerprint(path)
    assert fp.startswith("file:") and fp == file_fingerprint(path)
    centers = _centers()
    enc = MeanColour()
    a = _run(ImageSource(path), centers, enc, tmp_path, num_workers=1)
    b = _run(ImageSource(_image()), centers, MeanColour(), tmp_path, cache_dir=False)
    np.testing.assert_allclose(a, b, atol=1e-6)
    Image.fromarray(_image(seed=3)).save(path)
    assert file_fingerprint(path) != fp


def test_feature_cache_rejects_wrong_shapes(tmp_path):
    cache = FeatureCache(tmp_path, "ab" * 32, n=5, dim=2, chunk_size=4)
    assert cache.n_chunks == 2 and cache.load(0) is None
    with pytest.raises(ValueError):
        cache.save(1, np.zeros((4, 2), np.float32))
    cache.save(1, np.ones((1, 2), np.float32))
    np.testing.assert_array_equal(cache.load(1), np.ones((1, 2), np.float32))


def test_real_encoders_through_extract(tmp_path):
    source = ImageSource(_image())
    centers = _centers(n=3)
    assert _run(source, centers, MeanColour(), tmp_path, cache_dir=False)[:0].shape == (0, 3)
    for name in ("he-stats", "efficientnet-lite0"):
        feats = encode.extract(source, centers, 0.5, 30.0, encoder=name, cache_dir=False, progress=False)
        assert feats.shape == (3, encode.get_spec(name).dim) and np.isfinite(feats).all()
    empty = encode.extract(source, np.zeros((0, 2)), 0.5, 30.0, encoder=MeanColour(), cache_dir=False)
    assert empty.shape == (0, 3)


def test_he_stats_workers_give_identical_features(monkeypatch):
    import torch

    from histosge.encode import create, handcrafted

    rng = np.random.default_rng(0)
    x = torch.from_numpy((rng.random((24, 3, 64, 64)) * 0.7 + 0.2).astype(np.float32))
    enc = create("he-stats")
    monkeypatch.setenv("HISTOSGE_WORKERS", "1")
    serial = enc(x).numpy()
    monkeypatch.setenv("HISTOSGE_WORKERS", "2")
    parallel = enc(x).numpy()
    handcrafted._shutdown()
    assert np.array_equal(serial, parallel)


def test_he_stats_workers_setting_is_checked(monkeypatch):
    from histosge.encode import handcrafted
    from histosge.errors import EncoderError

    monkeypatch.setenv("HISTOSGE_WORKERS", "two")
    with pytest.raises(EncoderError, match="HISTOSGE_WORKERS"):
        handcrafted.worker_count()
    monkeypatch.setenv("HISTOSGE_WORKERS", "0")
    assert handcrafted.worker_count() == 1
