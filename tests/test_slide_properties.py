"""Slides whose files say something a reader can miss (issue 27): non-square pixels, pixel sizes in
other units or unusable, a truncated file, empty tiles, CMYK / MinIsWhite / greyscale / 12-bit
samples. Each is read correctly or refused in one line naming the property; never read wrong."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import tifffile
from cohort_fixtures import tissue, write_ome

from histosge.errors import InputError
from histosge.read.image import ImageSource
from histosge.read.slide import open_slide, read_slide

H, W = 512, 640
#: resolution tags of 0.5 um/px (pixels per centimetre)
RES = {"resolution": (2e4, 2e4), "resolutionunit": "CENTIMETER"}


@pytest.fixture(scope="module")
def rgb():
    return tissue(W, H, seed=3)


def _read(path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = ImageSource(path)
    try:
        return src.read_region(0, 0, W, H)
    finally:
        src.close()


def _ome(path, img, **meta):
    tifffile.imwrite(path, img, photometric="rgb", tile=(256, 256), metadata={"axes": "YXS", **meta})
    return path


@pytest.mark.parametrize("how", ["ome", "tags"])
def test_non_square_pixels_are_refused_naming_both_sizes(rgb, tmp_path, how):
    path = tmp_path / "s.ome.tif" if how == "ome" else tmp_path / "s.tif"
    if how == "ome":
        _ome(path, rgb, PhysicalSizeX=0.5, PhysicalSizeY=0.7)
    else:
        tifffile.imwrite(path, rgb, photometric="rgb", tile=(256, 256), resolution=(2e4, 2e4 / 1.4),
                         resolutionunit="CENTIMETER")
    with pytest.raises(InputError, match=r"pixels are not square: .* 0\.5 um wide and 0\.7 um high") as err:
        open_slide(path)
    assert ("PhysicalSize" in str(err.value)) == (how == "ome") and "\n" not in str(err.value)
    assert open_slide(path, mpp=0.5).mpp == 0.5  # the user's --mpp is taken as said


def test_a_pixel_size_in_inches_is_converted(rgb, tmp_path):
    path = _ome(tmp_path / "s.ome.tif", rgb, PhysicalSizeX=2e-5, PhysicalSizeXUnit="in", PhysicalSizeY=2e-5,
                PhysicalSizeYUnit="in")
    assert open_slide(path).mpp == pytest.approx(0.508)


@pytest.mark.parametrize("meta, match", [
    ({"PhysicalSizeX": 0, "PhysicalSizeY": 0}, 'PhysicalSizeX="0" is not a pixel size'),
    ({"PhysicalSizeX": 0.5, "PhysicalSizeXUnit": "pixel", "PhysicalSizeY": 0.5}, 'PhysicalSizeXUnit="pixel" is not'),
])
def test_an_unusable_pixel_size_is_named_not_called_missing(rgb, tmp_path, meta, match):
    path = _ome(tmp_path / "s.ome.tif", rgb, **meta)
    with pytest.raises(InputError, match=match) as err:
        open_slide(path)
    assert "no MPP" not in str(err.value) and "--mpp" in str(err.value)


def test_a_truncated_ome_tiff_is_called_truncated_without_stray_lines(rgb, tmp_path, capfd):
    path = write_ome(tmp_path / "s.ome.tif", rgb, 0.5)
    data = path.read_bytes()
    for keep in (0.5, 0.99):
        cut = tmp_path / f"cut{keep}.ome.tif"
        cut.write_bytes(data[: int(len(data) * keep)])
        with pytest.raises(InputError, match="the TIFF file is truncated") as err:
            open_slide(cut)
        assert "pixel size" not in str(err.value)
    out, errs = capfd.readouterr()
    assert out == "" and errs == ""  # tifffile's own complaints do not reach the terminal


def _empty_tiles(path, which):
    with tifffile.TiffFile(path, mode="r+b") as t:
        page = t.pages[0]
        counts, offsets = list(page.databytecounts), list(page.dataoffsets)
        for i in which:
            counts[i] = offsets[i] = 0
        page.tags["TileByteCounts"].overwrite(counts)
        page.tags["TileOffsets"].overwrite(offsets)


@pytest.mark.parametrize("layout", ["interleaved", "planar"])
def test_empty_tiles_are_glass_and_said(rgb, tmp_path, layout):
    path = tmp_path / "s.tif"
    img = np.full((H, W, 3), (200, 90, 160), np.uint8)  # tissue everywhere
    if layout == "interleaved":
        tifffile.imwrite(path, img, photometric="rgb", tile=(256, 256), **RES)
        _empty_tiles(path, [4])  # row 1, column 1
    else:
        tifffile.imwrite(path, np.moveaxis(img, 2, 0), photometric="rgb", planarconfig="separate", tile=(256, 256),
                         **RES)
        _empty_tiles(path, [4, 4 + 6, 4 + 12])  # the same tile in each colour plane
    with pytest.warns(UserWarning, match="tiles at full resolution are empty \\(0 bytes\\); read as glass"):
        src = ImageSource(path)
    region = src.read_region(0, 0, W, H)
    assert (region[256:, 256:512] == 255).all() and (region[:256] == (200, 90, 160)).all()


def test_cmyk_is_converted_to_rgb(rgb, tmp_path):
    path = tmp_path / "s.tif"
    cmyk = np.concatenate([255 - rgb, np.zeros((H, W, 1), np.uint8)], axis=2)
    tifffile.imwrite(path, cmyk, photometric="separated", tile=(256, 256), **RES)
    assert np.abs(_read(path).astype(int) - rgb).max() <= 1


@pytest.mark.parametrize("photometric, name", [("minisblack", "MinIsBlack"), ("miniswhite", "MinIsWhite")])
def test_greyscale_is_refused_naming_the_photometric_interpretation(rgb, tmp_path, photometric, name):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, rgb.mean(2).astype(np.uint8), photometric=photometric, tile=(256, 256), **RES)
    with pytest.raises(InputError, match=f"greyscale image \\(PhotometricInterpretation {name}") as err:
        read_slide(path, pitch_um=100.0, spot_diameter_um=55.0)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_12_bit_samples_in_16_bit_are_scaled_by_their_white(rgb, tmp_path):
    path = tmp_path / "s.tif"
    twelve = np.round(rgb.astype(np.float64) * 4095 / 255).astype(np.uint16)
    tifffile.imwrite(path, twelve, photometric="rgb", tile=(256, 256), **RES)
    with pytest.warns(UserWarning, match="reach at most 4095 \\(12-bit data\\)"):
        ImageSource(path).close()
    assert np.abs(_read(path).astype(int) - rgb).max() <= 1
    full = tmp_path / "f.tif"  # true 16-bit data: read as before
    tifffile.imwrite(full, rgb.astype(np.uint16) * 257, photometric="rgb", tile=(256, 256), **RES)
    assert np.array_equal(_read(full), rgb)


def test_a_symlink_loop_is_named(tmp_path):
    import histosge
    from histosge.cohort import resolve_slides
    from histosge.model.persist import read_description

    a, b = tmp_path / "a.svs", tmp_path / "b.svs"
    os.symlink(b, a)
    os.symlink(a, b)
    for call in (lambda: histosge.read_section(str(a)), lambda: open_slide(a), lambda: read_description(a),
                 lambda: resolve_slides([a])):
        with pytest.raises(InputError, match="symbolic link that loops") as err:
            call()
        assert "unknown section" not in str(err.value) and str(a) in str(err.value)


def test_a_lattice_too_large_for_memory_is_refused_before_it_is_laid(tmp_path, monkeypatch):
    import time

    from histosge.read import slide as S

    path = write_ome(tmp_path / "s.ome.tif", tissue(600, 480, seed=1), 1.0)
    monkeypatch.setattr(S, "available_memory", lambda: 150e6)
    for pitch in (0.6, 0.5):  # 0.5: the hostile user's --pitch-um, 20 million points on their slide
        t0 = time.monotonic()
        with pytest.raises(InputError, match=rf"a {pitch:g} um lattice on this slide is about [\d,]+ spots on "
                                             r"tissue \([\d,]+ lattice points\), about [\d.]+ GB to lay and "
                                             r"predict; [\d.]+ GB of memory") as err:
            read_slide(path, pitch_um=pitch, spot_diameter_um=55.0)
        assert time.monotonic() - t0 < 20 and "--pitch-um" in err.value.fix
    assert read_slide(path, pitch_um=100.0, spot_diameter_um=55.0).n_obs > 0  # the same slide at a real pitch


def test_the_cli_refuses_a_huge_lattice_in_one_line(make_legacy_st, tmp_path_factory, tmp_path, monkeypatch):
    from cohort_fixtures import model_file, synthetic_slides
    from typer.testing import CliRunner

    from histosge.cli import app
    from histosge.read import slide as S

    model = model_file(make_legacy_st, tmp_path_factory)
    slide = synthetic_slides(tmp_path / "slides", model, n=1)[0]
    monkeypatch.setattr(S, "available_memory", lambda: 2e9)
    res = CliRunner().invoke(app, ["predict", str(model), str(slide), "--pitch-um", "0.5", "-o",
                                   str(tmp_path / "x.h5ad"), "--quiet"])
    assert res.exit_code == 2 and "lattice on this slide" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "x.h5ad").exists()


def test_a_models_own_pitch_is_never_blamed_on_pitch_um():
    from types import SimpleNamespace

    from histosge.tasks import slide_pitch

    for bad in (0.0, -100.0):
        with pytest.raises(InputError, match=f"the model records a spot pitch of {bad:g} um") as err:
            slide_pitch(SimpleNamespace(mode="image", pitch_um_=bad), "s.svs")
        assert err.value.where == "model"
    assert slide_pitch(SimpleNamespace(mode="image", pitch_um_=100.0), "s.svs", factor=4) == 50.0
