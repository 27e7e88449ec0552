"""ImageSource region reads (PIL, arrays, tiled/pyramidal TIFF) and image_for's choice of image."""

from __future__ import annotations

import pickle

import anndata as ad
import numpy as np
import pytest
import tifffile
from PIL import Image

from histosge.errors import InputError
from histosge.read.image import ImageSource, image_for


def _gradient(h=120, w=160):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=2).astype(np.uint8)


def test_png_region_matches_array_and_is_rgb(tmp_path):
    arr = _gradient()
    Image.fromarray(arr).save(tmp_path / "a.png")
    src = ImageSource(tmp_path / "a.png")
    assert (src.width, src.height) == (160, 120)
    region = src.read_region(10, 20, 30, 40)
    assert region.dtype == np.uint8 and region.shape == (40, 30, 3)
    np.testing.assert_array_equal(region, arr[20:60, 10:40])  # channel order R, G, B (not BGR)


def test_out_of_bounds_is_white(tmp_path):
    arr = _gradient()
    src = ImageSource(arr)
    region = src.read_region(-5, -3, 10, 10)
    assert (region[:3] == 255).all() and (region[:, :5] == 255).all()
    np.testing.assert_array_equal(region[3:, 5:], arr[:7, :5])
    assert (src.read_region(1000, 1000, 4, 4) == 255).all()
    assert src.read_region(150, 110, 20, 20)[10:, :].min() == 255


def test_rgba_and_grey_become_rgb(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[:5, :, 3] = 0  # transparent rows composite onto white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = ImageSource(tmp_path / "rgba.png").read_region(0, 0, 10, 10)
    assert out.shape == (10, 10, 3)
    assert (out[:5] == 255).all() and (out[5:, :, 0] == 200).all() and (out[5:, :, 1] == 0).all()
    Image.fromarray(np.full((8, 8), 77, np.uint8), "L").save(tmp_path / "grey.jpg")
    grey = ImageSource(tmp_path / "grey.jpg").read_region(0, 0, 8, 8)
    assert grey.shape == (8, 8, 3) and abs(int(grey.mean()) - 77) <= 2


def test_float_array_in_unit_range_becomes_uint8():
    arr = np.full((4, 4, 3), 0.5, np.float32)
    assert (ImageSource(arr).read_region(0, 0, 4, 4) == 128).all()


def test_float_array_out_of_range_is_input_error():
    with pytest.raises(InputError, match="not colours"):
        ImageSource(np.full((4, 4, 3), -3.0))


def test_tiled_tiff_reads_only_the_region(tmp_path):
    arr = _gradient(600, 700)
    tifffile.imwrite(tmp_path / "t.tif", arr, tile=(256, 256), compression="zlib", photometric="rgb")
    src = ImageSource(tmp_path / "t.tif")
    assert src.kind == "tiff" and (src.width, src.height) == (700, 600)
    np.testing.assert_array_equal(src.read_region(250, 300, 100, 50), arr[300:350, 250:350])
    edge = src.read_region(650, 580, 100, 40)
    np.testing.assert_array_equal(edge[:20, :50], arr[580:, 650:])
    assert (edge[20:] == 255).all() and (edge[:, 50:] == 255).all()


def test_planar_and_pyramidal_tiff(tmp_path):
    arr = _gradient(512, 512)
    tifffile.imwrite(
        tmp_path / "planar.tif", np.moveaxis(arr, 2, 0), photometric="rgb", planarconfig="separate"
    )
    np.testing.assert_array_equal(
        ImageSource(tmp_path / "planar.tif").read_region(5, 6, 7, 8), arr[6:14, 5:12]
    )
    path = tmp_path / "pyr.ome.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(arr, subifds=1, tile=(128, 128), photometric="rgb", compression="zlib")
        tw.write(arr[::2, ::2], subfiletype=1, tile=(128, 128), photometric="rgb", compression="zlib")
    src = ImageSource(path)
    assert (src.width, src.height) == (512, 512)  # level 0, the full resolution
    np.testing.assert_array_equal(src.read_region(100, 200, 64, 32), arr[200:232, 100:164])
    thumb, scale = src.thumbnail(256)
    assert thumb.shape == (256, 256, 3) and scale == 0.5


def test_uint16_tiff_scaled_to_uint8(tmp_path):
    arr = _gradient(64, 64).astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "u16.tif", arr, photometric="rgb")
    np.testing.assert_array_equal(
        ImageSource(tmp_path / "u16.tif").read_region(0, 0, 64, 64), _gradient(64, 64)
    )


def test_pickle_reopens(tmp_path):
    arr = _gradient(300, 300)
    tifffile.imwrite(tmp_path / "t.tif", arr, tile=(128, 128), photometric="rgb")
    Image.fromarray(arr).save(tmp_path / "p.png")
    for name in ("t.tif", "p.png"):
        src = ImageSource(tmp_path / name)
        src.read_region(0, 0, 2, 2)
        clone = pickle.loads(pickle.dumps(src))
        np.testing.assert_array_equal(clone.read_region(10, 10, 5, 5), arr[10:15, 10:15])


def test_thumbnail_of_jpeg_keeps_aspect(tmp_path):
    Image.fromarray(_gradient(300, 500)).save(tmp_path / "big.jpg")
    thumb, scale = ImageSource(tmp_path / "big.jpg").thumbnail(100)
    assert thumb.shape == (60, 100, 3) and scale == pytest.approx(0.2)


def _section(images=None, metadata=None):
    a = ad.AnnData(np.zeros((2, 2), np.float32))
    a.obsm["spatial"] = np.array([[10.0, 10.0], [20.0, 20.0]])
    a.uns["spatial"] = {
        "lib": {
            "images": images or {},
            "scalefactors": {
                "tissue_hires_scalef": 0.5,
                "tissue_lowres_scalef": 0.1,
                "spot_diameter_fullres": 5,
            },
            "metadata": metadata or {},
        }
    }
    a.uns["histosge"] = {"library_id": "lib"}
    return a


def test_image_for_order(tmp_path):
    hires, lowres = np.zeros((50, 50, 3), np.uint8), np.zeros((10, 10, 3), np.uint8)
    full = tmp_path / "full.png"
    Image.fromarray(_gradient(100, 100)).save(full)
    src, scale = image_for(_section({"hires": hires, "lowres": lowres}))
    assert (src.width, scale) == (50, 0.5)
    src, scale = image_for(_section({"lowres": lowres}))
    assert (src.width, scale) == (10, 0.1)
    src, scale = image_for(_section({"hires": hires}, {"source_image_path": str(full)}))
    assert (src.path, scale) == (full, 1.0)
    explicit = tmp_path / "other.png"
    Image.fromarray(_gradient(30, 30)).save(explicit)
    src, scale = image_for(_section({"hires": hires}, {"source_image_path": str(full)}), image=explicit)
    assert (src.path, scale) == (explicit, 1.0)


def test_image_for_stale_source_path_falls_back(tmp_path):
    with pytest.warns(UserWarning, match="source image not found"):
        src, scale = image_for(
            _section(
                {"hires": np.zeros((50, 50, 3), np.uint8)}, {"source_image_path": str(tmp_path / "gone.tif")}
            )
        )
    assert scale == 0.5


def test_image_for_without_image_is_input_error():
    with pytest.raises(InputError, match="no image"):
        image_for(_section())


# -- pyramid levels and physical pixel size --------------------------------------------------------
def _write_pyramid(path, arr, levels=3, tile=128, **kw):
    with tifffile.TiffWriter(path, bigtiff=True, ome=path.name.endswith(".ome.tif")) as tw:
        tw.write(arr, subifds=levels - 1, tile=(tile, tile), photometric="rgb", compression="zlib", **kw)
        for k in range(1, levels):
            tw.write(arr[:: 2**k, :: 2**k], subfiletype=1, tile=(tile, tile), photometric="rgb", compression="zlib")


def test_pyramid_levels_and_level_reads(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, size=(600, 520, 3), dtype=np.uint8)
    _write_pyramid(tmp_path / "pyr.tif", arr)
    src = ImageSource(tmp_path / "pyr.tif")
    assert src.level_count == 3
    assert src.level_dimensions == [(520, 600), (260, 300), (130, 150)]
    assert src.level_downsamples == [1.0, 2.0, 4.0]
    for level in range(3):
        small = arr[:: 2**level, :: 2**level]
        np.testing.assert_array_equal(src.read_region(7, 11, 90, 70, level=level), small[11:81, 7:97])
    edge = src.read_region(120, 140, 20, 20, level=2)  # level 2 is 130 x 150: the rest is white
    np.testing.assert_array_equal(edge[:10, :10], arr[::4, ::4][140:, 120:])
    assert (edge[10:] == 255).all() and (edge[:, 10:] == 255).all()
    assert [src.best_level(d) for d in (0.5, 1.0, 1.99, 2.0, 3.9, 4.0, 50.0)] == [0, 0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="level 3"):
        src.read_region(0, 0, 1, 1, level=3)


def test_each_tile_is_decoded_once(tmp_path):
    arr = _gradient(512, 512)
    tifffile.imwrite(tmp_path / "t.tif", arr, tile=(128, 128), photometric="rgb", compression="zlib")
    src = ImageSource(tmp_path / "t.tif")
    for x in range(0, 300, 10):  # 30 overlapping reads over tile rows 0-1, columns 0-3
        np.testing.assert_array_equal(src.read_region(x, 100, 100, 100), arr[100:200, x : x + 100])
    assert src.backend.tiles.decoded == 2 * 4


def test_mpp_from_metadata(tmp_path):
    arr = _gradient(64, 64)
    cases = {
        "cm.tif": ({"resolution": (1e4 / 0.5, 1e4 / 0.5), "resolutionunit": "CENTIMETER"}, 0.5),
        "inch.tif": ({"resolution": (25400 / 0.25, 25400 / 0.25), "resolutionunit": "INCH"}, 0.25),
        "dpi72.tif": ({"resolution": (72, 72), "resolutionunit": "INCH"}, None),  # a software default
        "nounit.tif": ({"resolution": (2.0, 2.0), "resolutionunit": "NONE"}, None),
        "plain.tif": ({}, None),
    }
    for name, (kw, mpp) in cases.items():
        tifffile.imwrite(tmp_path / name, arr, photometric="rgb", **kw)
        assert ImageSource(tmp_path / name).mpp == (None if mpp is None else pytest.approx(mpp)), name
    tifffile.imwrite(
        tmp_path / "nm.ome.tif", arr, photometric="rgb", metadata={"PhysicalSizeX": 250, "PhysicalSizeXUnit": "nm"}
    )
    assert ImageSource(tmp_path / "nm.ome.tif").mpp == pytest.approx(0.25)
    Image.fromarray(arr).save(tmp_path / "dpi.jpg", dpi=(72, 72))
    assert ImageSource(tmp_path / "dpi.jpg").mpp is None  # JPEG/PNG: never guessed
    assert ImageSource(tmp_path / "dpi.jpg", mpp=0.5).mpp == 0.5
    assert ImageSource(arr).mpp is None and ImageSource(arr).level_count == 1
    with pytest.raises(InputError, match="mpp"):
        ImageSource(arr, mpp=-1)


def test_real_ome_pyramid(data_dir):
    src = ImageSource(data_dir / "slides" / "her2st_C4.ome.tif")
    assert src.mpp == pytest.approx(0.687)
    assert src.level_count == 5 and src.level_dimensions[0] == (9278, 9916)
    assert src.level_dimensions[4] == (579, 619)
    np.testing.assert_allclose(src.level_downsamples, [1, 2, 4, 8, 16], rtol=2e-3)
    assert [src.best_level(d) for d in (1.5, 2.0, 4.0, 7.9, 8.0, 100)] == [0, 1, 2, 2, 3, 4]
    z = src.backend.levels[2].zarr()  # tifffile's own zarr view: the reference for the tile reader
    np.testing.assert_array_equal(src.read_region(700, 900, 600, 500, level=2), np.asarray(z[900:1400, 700:1300]))
    # the same tissue at level 0 and level 2: a 4x box filter of level 0 is close to level 2
    full = src.read_region(2800, 3600, 400, 400).astype(float)
    small = src.read_region(700, 900, 100, 100, level=2).astype(float)
    assert np.abs(full.reshape(100, 4, 100, 4, 3).mean((1, 3)) - small).mean() < 12


def test_real_svs_mpp(data_dir):
    src = ImageSource(data_dir / "slides" / "aperio_small.svs")
    assert src.kind == "tiff" and src.mpp == pytest.approx(0.499)
    assert (src.width, src.height) == (16, 16) and src.level_count == 1
    assert src.read_region(0, 0, 16, 16).shape == (16, 16, 3)


def test_openslide_reader(data_dir):
    pytest.importorskip("openslide")
    path = data_dir / "slides" / "aperio_small.svs"
    slide, tiff = ImageSource(path, reader="openslide"), ImageSource(path)
    assert slide.kind == "openslide" and slide.mpp == pytest.approx(0.499)
    assert slide.level_dimensions == [(16, 16)] and slide.level_downsamples == [1.0]
    a, b = slide.read_region(-4, 2, 12, 12).astype(int), tiff.read_region(-4, 2, 12, 12).astype(int)
    assert (a[:, :4] == 255).all() and np.abs(a - b).max() <= 8  # two JPEG decoders
    clone = pickle.loads(pickle.dumps(slide))
    np.testing.assert_array_equal(clone.read_region(0, 0, 16, 16), slide.read_region(0, 0, 16, 16))


def test_vendor_format_without_openslide_names_the_extra(tmp_path, monkeypatch):
    import sys

    (tmp_path / "slide.ndpi").write_bytes(b"II*\x00" + bytes(64))
    monkeypatch.setitem(sys.modules, "openslide", None)  # import openslide -> ImportError
    with pytest.raises(InputError, match=r"histosge\[slides\]"):
        ImageSource(tmp_path / "slide.ndpi")
    with pytest.raises(InputError, match="reader"):
        ImageSource(tmp_path / "slide.ndpi", reader="bioformats")
