"""Patch geometry, exact centring, grouped reads, PatchDataset, and memory on a 20k x 20k tiled TIFF."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import tifffile
import torch

from histosge.errors import InputError
from histosge.patches import BLOCK, PatchDataset, crop_patches, patch_origins, patch_side_px
from histosge.read.image import ImageSource
from histosge.read.tiff import TILE_CACHE_BYTES


def _coords(h=400, w=500):
    """Image whose pixel (y, x) encodes its own position, so crops reveal their origin."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx % 256, yy % 256, (xx // 256) * 16 + (yy // 256)], axis=2).astype(np.uint8)


def test_patch_side():
    assert patch_side_px(55.0, 1.0, 1.0) == 55
    assert patch_side_px(96.4, 0.045, 1.0) == 4  # DLPFC lowres: a spot is ~4 px
    assert patch_side_px(96.4, 0.045, 0.1) == 1  # never below one pixel
    assert patch_side_px(136.5, 0.2, 2.0) == 55
    with pytest.raises(InputError):
        patch_side_px(0.0, 1.0, 1.0)


def test_odd_side_is_centred_exactly():
    src = ImageSource(_coords())
    p = crop_patches(src, np.array([[100.0, 50.0]]), 1.0, 5)[0]
    assert p.shape == (5, 5, 3)
    assert (p[2, 2, 0], p[2, 2, 1]) == (100, 50)  # centre pixel is the spot centre
    assert (p[0, 0, 0], p[0, 0, 1]) == (98, 48)


def test_rounding_is_consistent():
    # origin = floor(c - (s - 1) / 2 + 0.5) for every centre
    o = patch_origins(np.array([[10.0, 10.99], [11.0, 10.5]]), 1.0, 4)  # even side: extra pixel right/down
    np.testing.assert_array_equal(o, [[9, 9], [10, 9]])
    o = patch_origins(np.array([[10.4, 10.5], [10.6, 9.5]]), 1.0, 5)  # odd side: round half up, minus 2
    np.testing.assert_array_equal(o, [[8, 9], [9, 8]])
    o = patch_origins(np.array([[200.0, 100.0]]), 0.5, 3)  # centre scaled into the image first
    np.testing.assert_array_equal(o, [[99, 49]])


def test_scale_maps_fullres_centres():
    arr = _coords()
    src = ImageSource(arr)
    p = crop_patches(src, np.array([[400.0, 300.0]]), 0.5, 3)[0]
    assert (p[1, 1, 0], p[1, 1, 1]) == (200, 150)


def test_edges_are_padded_white():
    src = ImageSource(_coords())
    p = crop_patches(src, np.array([[0.0, 0.0], [499.0, 399.0]]), 1.0, 7)
    assert (p[0, :3] == 255).all() and (p[0, :, :3] == 255).all()
    assert (p[0, 3, 3, :2] == 0).all()
    assert (p[1, 4:] == 255).all() and (p[1, :, 4:] == 255).all()


def test_grouped_reads_equal_single_reads(monkeypatch):
    arr = np.random.default_rng(0).integers(0, 255, size=(700, 900, 3), dtype=np.uint8)
    src = ImageSource(arr)
    rng = np.random.default_rng(1)
    centres = np.c_[rng.uniform(-20, 920, 300), rng.uniform(-20, 720, 300)]
    monkeypatch.setattr("histosge.patches.BLOCK", 256)  # many groups on a small image
    grouped = crop_patches(src, centres, 1.0, 21)
    single = np.stack([PatchDataset(src, centres, 1.0, 21)[i] for i in range(len(centres))])
    np.testing.assert_array_equal(grouped, single)


def test_resize_and_dataset_loader():
    src = ImageSource(_coords())
    centres = np.array([[100.0, 100.0], [250.5, 200.2], [10.0, 390.0]])
    out = crop_patches(src, centres, 1.0, 31, 16, resample="bilinear")
    assert out.shape == (3, 16, 16, 3) and out.dtype == np.uint8
    ds = PatchDataset(src, centres, 1.0, 31, 16, resample="bilinear")
    assert len(ds) == 3
    np.testing.assert_array_equal(ds[1], out[1])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert tuple(batch.shape) == (3, 16, 16, 3) and batch.dtype == torch.uint8


def test_tiff_and_array_give_the_same_patches(tmp_path):
    arr = _coords(600, 800)
    tifffile.imwrite(tmp_path / "t.tif", arr, tile=(128, 128), photometric="rgb", compression="zlib")
    centres = np.random.default_rng(2).uniform(0, 600, size=(50, 2))
    np.testing.assert_array_equal(
        crop_patches(ImageSource(tmp_path / "t.tif"), centres, 1.0, 24, 32),
        crop_patches(ImageSource(arr), centres, 1.0, 24, 32),
    )


def test_bad_arguments():
    src = ImageSource(_coords())
    with pytest.raises(InputError, match="resampling"):
        crop_patches(src, np.zeros((1, 2)), 1.0, 5, resample="nearest-ish")
    with pytest.raises(InputError, match="NaN"):
        crop_patches(src, np.array([[np.nan, 1.0]]), 1.0, 5)


# -- memory: a 20k x 20k slide is never decoded whole ----------------------------------------------
TILE = 256
SIDE = 20_000


def _tile_value(ty: int, tx: int) -> int:
    return (ty * 7 + tx * 13) % 251


def write_big_tiff(path, side: int = SIDE, tile: int = TILE) -> None:
    """A tiled, zstd-compressed RGB TIFF written tile by tile (never held whole); each tile one colour."""
    n = -(-side // tile)
    colours = {v: np.full((tile, tile, 3), v, np.uint8) for v in range(251)}

    def tiles():
        for ty in range(n):
            for tx in range(n):
                yield colours[_tile_value(ty, tx)]

    tifffile.imwrite(
        path,
        tiles(),
        shape=(side, side, 3),
        dtype=np.uint8,
        tile=(tile, tile),
        compression="zstd",
        compressionargs={"level": 1},
        photometric="rgb",
        bigtiff=True,
    )


def test_big_tiled_tiff_patches_use_little_memory(tmp_path):
    path = tmp_path / "big.tif"
    write_big_tiff(path)
    assert path.stat().st_size < 50 * 2**20
    src = ImageSource(path)
    assert (src.width, src.height) == (SIDE, SIDE)
    rng = np.random.default_rng(0)
    scattered = rng.integers(0, SIDE // TILE, size=(200, 2))
    dense = np.stack(np.meshgrid(np.arange(40, 48), np.arange(16, 24)), -1).reshape(-1, 2)  # one block
    tiles = np.concatenate([scattered, dense])
    centres = tiles * TILE + TILE / 2  # tile centres: a 200 px patch is a single colour
    tracemalloc.start()
    patches = crop_patches(src, centres, 1.0, 200, 32)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    expected = np.array([_tile_value(ty, tx) for tx, ty in tiles])
    assert (patches == expected[:, None, None, None]).all()
    # the whole image decoded would be 1.2 GB; region reads stay under a few blocks plus the
    # bounded cache of decoded tiles
    assert peak < 3 * (BLOCK + 200) ** 2 * 3 + TILE_CACHE_BYTES, f"peak {peak / 2**20:.0f} MiB"


def test_read_level_and_level_crops(tmp_path):
    from histosge.patches import read_level

    arr = _coords(800, 800)
    path = tmp_path / "pyr.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(arr, subifds=2, tile=(128, 128), photometric="rgb", compression="zlib")
        for k in (1, 2):
            tw.write(arr[:: 2**k, :: 2**k], subfiletype=1, tile=(128, 128), photometric="rgb", compression="zlib")
    src = ImageSource(path)
    assert [read_level(src, side, 128) for side in (100, 128, 250, 256, 500, 512, 2000)] == [0, 0, 0, 1, 1, 2, 2]
    assert read_level(src, 1000, None) == 0 and read_level(ImageSource(arr), 1000, 128) == 0  # no pyramid
    centres = np.array([[401.0, 233.0], [20.0, 780.0]])
    for level in (1, 2):
        ds = 2**level
        got = crop_patches(src, centres, 1.0, 40, level=level)
        assert got.shape == (2, 40 // ds, 40 // ds, 3)
        # the same rule as at level 0, in the level's pixels: centres and side divided by the downsample
        expect = crop_patches(ImageSource(arr[::ds, ::ds]), centres / ds, 1.0, 40 // ds)
        np.testing.assert_array_equal(got, expect)
        one = PatchDataset(src, centres, 1.0, 40, level=level)
        np.testing.assert_array_equal(one[0], expect[0])
