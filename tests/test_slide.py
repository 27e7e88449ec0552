"""H&E-only slides: virtual spots on tissue in micrometres, and every bad slide one clear line."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile
from PIL import Image

import histosge
from histosge import tasks
from histosge.errors import InputError
from histosge.geometry import spot_pitch
from histosge.model import HisToSGE
from histosge.read.slide import hex_lattice, read_slide

MPP = 0.5


def _tissue(width=1600, height=1200, seed=0):
    """Pink-purple tissue in an ellipse on white glass."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((xx - width / 2) / (0.4 * width)) ** 2 + ((yy - height / 2) / (0.35 * height)) ** 2 <= 1
    img = np.full((height, width, 3), 245, np.uint8)
    noise = rng.integers(-25, 25, size=(int(inside.sum()), 3))
    img[inside] = np.clip(np.array([200, 90, 160]) + noise, 0, 255)
    return img, inside


def _ome(path, img, mpp=MPP, levels=3):
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(img, tile=(256, 256), subifds=levels - 1, photometric="rgb",
                 metadata={"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp})
        for k in range(1, levels):
            tw.write(img[:: 2**k, :: 2**k], tile=(256, 256), subfiletype=1, photometric="rgb")
    return path


def test_lattice_is_hexagonal_at_the_pitch():
    rows, cols, xy = hex_lattice(1000, 1000, 100.0)
    assert ((rows + cols) % 2 == 0).all()
    assert spot_pitch(xy) == pytest.approx(100.0)
    same_row = xy[(rows == 0)]
    assert np.allclose(np.diff(np.sort(same_row[:, 0])), 100.0)


def test_virtual_spots_lie_on_tissue_at_the_pitch_in_micrometres(tmp_path):
    img, inside = _tissue()
    ad = read_slide(_ome(tmp_path / "s.ome.tif", img), pitch_um=50.0, spot_diameter_um=25.0)
    xy = np.asarray(ad.obsm["spatial"])
    assert ad.n_obs > 50 and ad.n_vars == 0
    assert spot_pitch(xy) == pytest.approx(50.0 / MPP, rel=1e-6)  # 50 um at 0.5 um/px
    on = inside[np.round(xy[:, 1]).astype(int), np.round(xy[:, 0]).astype(int)]
    assert on.mean() > 0.97
    info = ad.uns["histosge"]
    assert info["mpp"] == pytest.approx(MPP) and info["grid"] == "hex" and info["spot_diameter_um"] == 25.0
    lib = info["library_id"]
    sf = ad.uns["spatial"][lib]["scalefactors"]
    assert sf["spot_diameter_fullres"] == pytest.approx(25.0 / MPP)
    thumb = ad.uns["spatial"][lib]["images"]["hires"]
    assert max(thumb.shape[:2]) <= 2000 and sf["tissue_hires_scalef"] == pytest.approx(thumb.shape[1] / img.shape[1],
                                                                                      rel=1e-2)


def test_same_tissue_area_at_any_resolution(tmp_path):
    """A slide scanned at twice the resolution gets spots the same micrometres apart."""
    img, _ = _tissue()
    big = np.asarray(Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.Resampling.NEAREST))
    a = read_slide(_ome(tmp_path / "a.ome.tif", img, mpp=0.5), pitch_um=60.0, spot_diameter_um=30.0)
    b = read_slide(_ome(tmp_path / "b.ome.tif", big, mpp=0.25), pitch_um=60.0, spot_diameter_um=30.0)
    assert abs(a.n_obs - b.n_obs) <= 0.05 * a.n_obs
    assert spot_pitch(np.asarray(b.obsm["spatial"])) == pytest.approx(2 * spot_pitch(np.asarray(a.obsm["spatial"])))


def test_a_jpeg_needs_its_pixel_size(tmp_path):
    img, _ = _tissue(600, 400)
    path = tmp_path / "he.jpg"
    Image.fromarray(img).save(path)
    with pytest.raises(InputError, match="pixel size is unknown.*--mpp"):
        read_slide(path, pitch_um=50.0, spot_diameter_um=25.0)
    assert read_slide(path, pitch_um=50.0, spot_diameter_um=25.0, mpp=0.5).n_obs > 10


@pytest.mark.parametrize("mpp, match", [(0.0, "not positive"), (-1.0, "not positive"), (12.0, "outside"),
                                        (float("nan"), "not positive")])
def test_absurd_pixel_sizes_are_refused(tmp_path, mpp, match):
    img, _ = _tissue(600, 400)
    path = tmp_path / "he.png"
    Image.fromarray(img).save(path)
    with pytest.raises(InputError, match=match):
        read_slide(path, pitch_um=50.0, spot_diameter_um=25.0, mpp=mpp)


def test_glass_without_tissue_is_refused(tmp_path):
    path = _ome(tmp_path / "glass.ome.tif", np.full((800, 800, 3), 243, np.uint8))
    with pytest.raises(InputError, match="no tissue found"):
        read_slide(path, pitch_um=50.0, spot_diameter_um=25.0)


def test_a_slide_smaller_than_one_spot_pitch_is_refused(tmp_path):
    img, _ = _tissue(120, 100)
    with pytest.raises(InputError, match="smaller than one spot pitch"):
        read_slide(_ome(tmp_path / "tiny.ome.tif", img), pitch_um=100.0, spot_diameter_um=55.0)


@pytest.mark.parametrize("content", [b"", b"II*\x00garbage" * 10])
def test_unreadable_slides_are_one_line(tmp_path, content):
    path = tmp_path / "broken.svs"
    path.write_bytes(content)
    with pytest.raises(InputError):
        read_slide(path, pitch_um=100.0, spot_diameter_um=55.0)


def test_an_unsupported_format_is_one_line(tmp_path):
    path = tmp_path / "slide.mrxs"
    path.write_bytes(b"not really a mirax file")
    with pytest.raises(InputError):
        read_slide(path, pitch_um=100.0, spot_diameter_um=55.0)


@pytest.fixture
def image_model(make_legacy_st, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = histosge.read_section("her2st:A1", data_dir=make_legacy_st("A1", seed=0).parent)
        b = histosge.read_section("her2st:A2", data_dir=make_legacy_st("A2", seed=1).parent)
    return HisToSGE("image", n_top_genes=6, network={"epochs": 2, "dim": 32, "mlp_dim": 32}).fit(
        [a, b], cache_dir=str(tmp_path / "cache"), progress=False), a


def test_predict_a_slide_with_an_image_model(image_model, tmp_path):
    model, section = image_model
    # the synthetic sections' image, exported as a slide: 100 um spots 120 px apart -> 200 um pitch
    mpp = float(model.pitch_um_ / spot_pitch(np.asarray(section.obsm["spatial"])))
    src = section.uns["spatial"][section.uns["histosge"]["library_id"]]["metadata"]["source_image_path"]
    img = np.asarray(Image.open(src).convert("RGB"))
    slide = _ome(tmp_path / "slide.ome.tif", img, mpp=mpp, levels=2)
    out = tasks.predict(model, slide, cache_dir=str(tmp_path / "cache"), progress=False)
    assert out.n_vars == 6 and out.n_obs > 10 and np.isfinite(out.X).all() and (np.asarray(out.X) >= 0).all()
    assert out.uns["histosge"]["pitch_um"] == pytest.approx(model.pitch_um_)
    assert {"novelty", "novel"} <= set(out.obs.columns)
    denser = tasks.predict(model, slide, factor=4, cache_dir=str(tmp_path / "cache"), progress=False)
    assert denser.uns["histosge"]["pitch_um"] == pytest.approx(model.pitch_um_ / 2)
    assert denser.n_obs > 3 * out.n_obs
    with pytest.raises(InputError, match="both set the spot pitch"):
        tasks.predict(model, slide, factor=4, pitch_um=50.0, progress=False)


def test_a_neighbours_model_refuses_a_slide(make_legacy_st, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = histosge.read_section("her2st:A1", data_dir=make_legacy_st("A1", seed=0).parent)
    model = HisToSGE(n_top_genes=6, network={"epochs": 2, "dim": 32, "mlp_dim": 32}).fit(
        a, cache_dir=str(tmp_path / "cache"), progress=False)
    img, _ = _tissue()
    with pytest.raises(InputError, match="needs measured spots"):
        tasks.predict(model, _ome(tmp_path / "s.ome.tif", img), progress=False)
