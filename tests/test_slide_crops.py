"""Tissue detection with little or no background: crops of the shipped slide (her2st C4, 0.687 um/px).

A crop of solid tumour, a crop across the tissue's edge and a crop of bare glass, cut with the
project's own reader into a temporary folder (never committed) and read as ``histosge predict``
reads a slide (``read_slide`` with ``--mpp``). Otsu's threshold alone cut an all-tissue crop in two
(dark nuclei against pale stroma): a 2.06 mm square got 46 virtual spots where 126 fit.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from histosge.errors import InputError
from histosge.read.image import ImageSource
from histosge.read.slide import hex_lattice, read_slide

MPP = 0.687
PITCH_UM, SPOT_UM = 200.0, 100.0  # legacy ST, the platform of the her2st models
CROPS = {"solid": (3000, 2950, 3000), "edge": (5000, 2500, 3000), "glass": (500, 7000, 2000)}  # x, y, side (px)


@pytest.fixture(scope="module")
def crops(data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("crops")
    src = ImageSource(data_dir / "slides" / "her2st_C4.ome.tif")
    assert src.mpp == pytest.approx(MPP)
    out = {}
    for name, (x, y, side) in CROPS.items():
        out[name] = folder / f"{name}.png"
        Image.fromarray(src.read_region(x, y, side, side)).save(out[name])
    src.close()
    return out


def lattice_size(side_px: int) -> int:
    return len(hex_lattice(side_px, side_px, PITCH_UM / MPP)[2])


def test_a_crop_of_solid_tumour_gets_a_whole_lattice(crops):
    a = read_slide(crops["solid"], pitch_um=PITCH_UM, spot_diameter_um=SPOT_UM, mpp=MPP)
    fit = lattice_size(CROPS["solid"][2])  # 126 on a 2.06 mm square
    assert a.n_obs >= 0.9 * fit, f"{a.n_obs} of {fit} spots"  # was 46
    assert a.uns["histosge"]["slide"]["tissue_fraction"] > 0.95


def test_a_crop_across_the_tissue_edge_keeps_the_tissue_side(crops):
    a = read_slide(crops["edge"], pitch_um=PITCH_UM, spot_diameter_um=SPOT_UM, mpp=MPP)
    frac = a.uns["histosge"]["slide"]["tissue_fraction"]
    assert 0.3 < frac < 0.6  # about 45% tissue by eye, the rest glass
    x = a.obsm["spatial"][:, 0]
    assert np.median(x) < CROPS["edge"][2] / 2  # the tissue is the left part


def test_a_crop_of_bare_glass_has_no_tissue(crops):
    with pytest.raises(InputError, match="no tissue found"):  # the printed spot array is not tissue
        read_slide(crops["glass"], pitch_um=PITCH_UM, spot_diameter_um=SPOT_UM, mpp=MPP)


def test_a_grey_scanner_background_is_not_tissue():
    from histosge.read.slide import tissue_mask

    rng = np.random.default_rng(0)
    img = np.empty((200, 200, 3), np.uint8)
    img[:] = (128, 130, 127)  # a grey scan background, as around the Visium mouse-brain crop
    img[:, 60:] = np.clip(np.array([150, 80, 150]) + rng.integers(-25, 25, (200, 140, 3)), 0, 255)  # tissue
    mask = tissue_mask(img)
    assert mask[:, 70:].mean() > 0.95 and mask[:, :50].mean() < 0.05
