"""``encode.extract``: batched patch features, and the per-spot disk cache (reuse, resume after an
interruption, corrupt chunks recomputed, key sensitive to what decides the features, later runs
reuse every spot already encoded, faults of the cache folder never cost a run)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from histosge import encode
from histosge.encode.base import Encoder
from histosge.encode.cache import CacheWarning, FeatureStore, file_fingerprint
from histosge.errors import OutputError
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
    enc.fail_at = 4  # batches 1-3 pass (6 spots, kept), batch 4 fails
    with pytest.raises(KeyboardInterrupt):
        _run(source, centers, enc, tmp_path)
    resumed = MeanColour()
    out = _run(source, centers, resumed, tmp_path)
    assert resumed.spots == 4  # only the spots not encoded before the interruption
    np.testing.assert_allclose(out, clean, atol=1e-6)
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".part")]
    assert leftovers == []


def _chunk_files(cache, rows):
    """The (.json, .npy) files of the cache chunks holding ``rows`` spots."""
    import json

    return [
        (j, j.with_name(j.name[: -len(".json")] + ".npy"))
        for j in cache.rglob("*.json")
        if j.name != "meta.json" and json.loads(j.read_text())["rows"] == rows
    ]


def test_corrupt_chunk_is_recomputed(tmp_path):
    source = ImageSource(_image())
    centers = _centers()
    a = _run(source, centers, MeanColour(), tmp_path)  # chunks of 4, 4 and 2 spots
    (info, npy), _ = _chunk_files(tmp_path / "cache", 4)
    data = bytearray(npy.read_bytes())
    data[-5] ^= 0xFF
    npy.write_bytes(bytes(data))
    enc = MeanColour()
    b = _run(source, centers, enc, tmp_path)
    assert enc.spots == 4
    np.testing.assert_array_equal(a, b)
    (info, _), = _chunk_files(tmp_path / "cache", 2)
    info.unlink()  # checksum gone: not trusted
    enc = MeanColour()
    _run(source, centers, enc, tmp_path)
    assert enc.spots == 2


def test_later_runs_encode_only_new_spots(tmp_path):
    """superres encodes measured + generated spots; recover on the same section then encodes nothing,
    and a denser run only its new spots (the cache is per spot, not per set of centres)."""
    source = ImageSource(_image(size=400))
    rng = np.random.default_rng(3)
    measured = rng.uniform(30, 370, (12, 2))
    generated = rng.uniform(30, 370, (9, 2))
    superres = MeanColour()
    both = _run(source, np.concatenate([measured, generated]), superres, tmp_path)
    assert superres.spots == 21
    recover = MeanColour()
    again = _run(source, measured[::-1], recover, tmp_path)  # a subset, in another order
    assert recover.calls == 0
    np.testing.assert_array_equal(again, both[:12][::-1])
    denser = MeanColour()
    extra = rng.uniform(30, 370, (5, 2))
    more = _run(source, np.concatenate([generated, extra, measured[:3]]), denser, tmp_path)  # a superset
    assert denser.spots == 5
    fresh = _run(source, np.concatenate([generated, extra, measured[:3]]), MeanColour(), tmp_path, cache_dir=False)
    np.testing.assert_allclose(more, fresh, atol=1e-6)
    dup = MeanColour()
    twice = _run(source, np.concatenate([extra, extra]), dup, tmp_path, cache_dir=False)
    assert dup.spots == 5 and np.array_equal(twice[:5], twice[5:])  # a repeated centre is encoded once


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


def test_feature_store_lookup_and_shapes(tmp_path):
    store = FeatureStore(tmp_path, "ab" * 32, dim=2)
    xy = np.array([[1.0, 2.0], [3.5, 4.25], [-0.0, 7.0]])
    found, _ = store.lookup(xy)
    assert not found.any()
    with pytest.raises(ValueError):
        store.save(xy, np.zeros((2, 2), np.float32))
    assert store.save(xy[:2], np.array([[1, 1], [2, 2]], np.float32))
    found, feats = store.lookup(np.array([[3.5, 4.25], [9.0, 9.0], [1.0, 2.0], [3.5, 4.25]]))
    assert found.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(feats[[0, 2, 3]], [[2, 2], [1, 1], [2, 2]])
    found, _ = store.lookup(np.array([[1.0, 2.0 + 1e-9]]))  # exact centres only
    assert not found.any()


def test_real_encoders_through_extract(tmp_path):
    source = ImageSource(_image())
    centers = _centers(n=3)
    assert _run(source, centers, MeanColour(), tmp_path, cache_dir=False)[:0].shape == (0, 3)
    for name in ("he-stats", "efficientnet-lite0"):
        feats = encode.extract(source, centers, 0.5, 30.0, encoder=name, cache_dir=False, progress=False)
        assert feats.shape == (3, encode.get_spec(name).dim) and np.isfinite(feats).all()
    empty = encode.extract(source, np.zeros((0, 2)), 0.5, 30.0, encoder=MeanColour(), cache_dir=False)
    assert empty.shape == (0, 3)


def test_he_stats_threads_give_identical_features(monkeypatch):
    from histosge.encode import create

    rng = np.random.default_rng(0)
    x = torch.from_numpy((rng.random((24, 3, 64, 64)) * 0.7 + 0.2).astype(np.float32))
    enc = create("he-stats")
    monkeypatch.setenv("HISTOSGE_THREADS", "1")
    serial = enc(x).numpy()
    monkeypatch.setenv("HISTOSGE_THREADS", "3")
    threaded = enc(x).numpy()
    assert np.array_equal(serial, threaded)


def test_he_stats_threads_setting_is_checked(monkeypatch):
    from histosge.encode import handcrafted
    from histosge.errors import EncoderError

    monkeypatch.setenv("HISTOSGE_THREADS", "two")
    with pytest.raises(EncoderError, match="HISTOSGE_THREADS"):
        handcrafted.thread_count()
    monkeypatch.setenv("HISTOSGE_THREADS", "0")
    assert handcrafted.thread_count() == 1


# -- the cache folder never costs a run ------------------------------------------------------------
def test_unwritable_default_cache_warns_once_and_runs(tmp_path, monkeypatch):
    import histosge.encode.cache as cache_mod

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setattr(cache_mod, "_warned", set())
    source, centers = ImageSource(_image()), _centers()
    expect = _run(source, centers, MeanColour(), tmp_path, cache_dir=False)
    cases = ({"HISTOSGE_CACHE": str(blocker / "sub")}, {"HISTOSGE_CACHE": "", "XDG_CACHE_HOME": "", "HOME": "/proc"})
    for env in cases:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        with pytest.warns(CacheWarning, match="running without it") as record:
            for _ in range(2):
                np.testing.assert_allclose(_run(source, centers, MeanColour(), tmp_path, cache_dir=None), expect)
        assert len([w for w in record if issubclass(w.category, CacheWarning)]) == 1  # once


def test_explicit_cache_dir_that_cannot_be_used_fails_before_any_work(tmp_path):
    a_file = tmp_path / "cache.txt"
    a_file.write_text("x")
    for bad in (a_file, a_file / "below", "/proc/histosge-cache"):
        enc = MeanColour()
        with pytest.raises(OutputError, match="cache") as info:
            _run(ImageSource(_image()), _centers(), enc, tmp_path, cache_dir=bad)
        assert enc.calls == 0 and "--cache-dir" in str(info.value) and "\n" not in str(info.value)


def test_cache_write_failure_mid_run_warns_and_finishes(tmp_path, monkeypatch):
    import errno

    import histosge.encode.cache as cache_mod

    real = cache_mod._write_atomic
    writes = {"n": 0}

    def disk_fills_up(path, data):
        writes["n"] += 1
        if writes["n"] > 4:  # meta.json and the first chunk's three files, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(cache_mod, "_write_atomic", disk_fills_up)
    monkeypatch.setattr(cache_mod, "_warned", set())
    source, centers = ImageSource(_image()), _centers()
    with pytest.warns(CacheWarning, match="No space left"):
        out = _run(source, centers, MeanColour(), tmp_path)
    np.testing.assert_allclose(out, _run(source, centers, MeanColour(), tmp_path, cache_dir=False), atol=1e-6)
    monkeypatch.setattr(cache_mod, "_write_atomic", real)
    again = MeanColour()
    _run(source, centers, again, tmp_path)
    assert again.spots == 6  # the first chunk (4 spots) was kept
    assert not [p for p in (tmp_path / "cache").rglob("*.part")]


def test_stale_part_files_are_cleaned_and_modes_follow_umask(tmp_path):
    import os
    import time

    from histosge.encode.cache import clean_stale_parts

    folder = tmp_path / "store"
    folder.mkdir()
    dead = folder / ".x.npy.999999999.ab12.part"  # no such process
    old = folder / f".y.npy.{os.getpid()}.cd34.part"
    live = folder / f".z.npy.{os.getpid()}.ef56.part"  # this process, just now: still being written
    for p in (dead, old, live):
        p.write_bytes(b"0" * 100)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert clean_stale_parts(folder) == 2
    assert [p.name for p in folder.iterdir()] == [live.name]
    previous = os.umask(0o027)
    try:
        _run(ImageSource(_image()), _centers(), MeanColour(), tmp_path)
    finally:
        os.umask(previous)
    modes = {p.stat().st_mode & 0o777 for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    assert modes == {0o640}


# -- pyramid levels and tiles ---------------------------------------------------------------------
def _coloured_pyramid(path, side=1024, tile=128):
    """A pyramid whose levels differ in colour (red, green, blue), so a feature tells the level read."""
    import tifffile

    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    opts = {"tile": (tile, tile), "photometric": "rgb", "compression": "zlib"}
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(np.full((side, side, 3), colours[0], np.uint8), subifds=2, **opts)
        for k in (1, 2):
            tw.write(np.full((side >> k, side >> k, 3), colours[k], np.uint8), subfiletype=1, **opts)


def test_extract_reads_the_level_nearest_the_encoder_input(tmp_path):
    path = tmp_path / "pyr.tif"
    _coloured_pyramid(path)
    centers = np.random.default_rng(0).uniform(200, 800, (6, 2))
    for diameter, colour in ((12.0, 0), (20.0, 1), (32.0, 2)):  # patch 24, 40, 64 px; encoder input 16
        feats = encode.extract(ImageSource(path), centers, 1.0, diameter, encoder=MeanColour(), cache_dir=False,
                               progress=False)
        assert (feats.argmax(axis=1) == colour).all(), diameter
    forced = encode.extract(ImageSource(path), centers, 1.0, 32.0, encoder=MeanColour(), cache_dir=tmp_path / "c",
                            progress=False, level=0)
    assert (forced.argmax(axis=1) == 0).all()
    enc = MeanColour()
    auto = encode.extract(ImageSource(path), centers, 1.0, 32.0, encoder=enc, cache_dir=tmp_path / "c",
                          progress=False)
    assert enc.spots == 6 and (auto.argmax(axis=1) == 2).all()  # another level: not the cached level-0 spots


def test_extract_decodes_each_tile_once(tmp_path):
    import tifffile

    arr = np.random.default_rng(1).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "t.tif", arr, tile=(128, 128), photometric="rgb", compression="zlib")
    src = ImageSource(tmp_path / "t.tif")
    grid = np.stack(np.meshgrid(np.arange(16, 1024, 32.0), np.arange(16, 1024, 32.0)), -1).reshape(-1, 2)
    centers = np.random.default_rng(2).permutation(grid)  # 1024 overlapping patches in random order
    feats = encode.extract(src, centers, 1.0, 30.0, encoder=MeanColour(), cache_dir=False, progress=False,
                           batch_size=32)
    assert src.backend.tiles.decoded == 64  # the 8 x 8 tiles, once each
    expect = encode.extract(ImageSource(arr), centers, 1.0, 30.0, encoder=MeanColour(), cache_dir=False,
                            progress=False)
    np.testing.assert_allclose(feats, expect, atol=1e-6)


def test_extract_memory_is_bounded_by_the_batch(tmp_path):
    """A 20k x 20k tiled TIFF (1.2 GB decoded): extraction holds a few blocks and the tile cache."""
    import tracemalloc

    from test_patches import SIDE, write_big_tiff

    from histosge.patches import BLOCK
    from histosge.read.tiff import TILE_CACHE_BYTES

    path = tmp_path / "big.tif"
    write_big_tiff(path)
    centers = np.random.default_rng(3).uniform(0, SIDE, (600, 2))
    src = ImageSource(path)
    tracemalloc.start()
    feats = encode.extract(src, centers, 1.0, 100.0, encoder=MeanColour(), cache_dir=False, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert feats.shape == (600, 3)
    assert peak < 3 * (BLOCK + 200) ** 2 * 3 + TILE_CACHE_BYTES, f"peak {peak / 2**20:.0f} MiB"
