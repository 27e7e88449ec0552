"""he-stats over whole batches gives the features of the one-patch-at-a-time version it replaced
(``hestats_reference.py``, kept verbatim) to 1e-5, on real patches of every kind of section, and
its compiled pieces equal scikit-image / scipy / numpy piece by piece."""

from __future__ import annotations

import numpy as np
import pytest
from hestats_reference import FEATURE_NAMES as REF_NAMES
from hestats_reference import reference_batch
from scipy import ndimage
from skimage.feature import graycomatrix, local_binary_pattern

from histosge import _hestats as H

TOL = 1e-5
# features that are counts over pixels: equal to the last bit when the masks are
COUNTED = [i for i, n in enumerate(H.FEATURE_NAMES) if any(k in n for k in ("hist", "frac", "nuclei", "lbp"))]


def _compare(patches: np.ndarray) -> float:
    ref = reference_batch(patches)
    new = H.features_batch(patches)
    assert new.shape == ref.shape == (len(patches), H.DIM) and new.dtype == np.float32
    np.testing.assert_array_equal(new[:, COUNTED], ref[:, COUNTED])
    worst = float(np.abs(new - ref).max())
    assert worst <= TOL, H.FEATURE_NAMES[int(np.abs(new - ref).max(0).argmax())]
    return worst


def test_names_and_dim_unchanged():
    assert H.FEATURE_NAMES == REF_NAMES and H.DIM == 93


def _encoder_inputs(section: str, data_dir, n: int) -> np.ndarray:
    """What the encoder's forward sees on a real section: patches read and preprocessed as
    ``encode.extract`` does (cropped, resized to 128 px), float32 in [0, 1]."""
    import histosge
    from histosge import encode
    from histosge.encode.extract import PatchBatches
    from histosge.patches import patch_side_px
    from histosge.read.image import image_for

    adata = histosge.read_section(section, data_dir=data_dir)
    source, scale = image_for(adata)
    lib = next(iter(adata.uns["spatial"]))
    side = patch_side_px(adata.uns["spatial"][lib]["scalefactors"]["spot_diameter_fullres"], scale, 2.0)
    xy = np.asarray(adata.obsm["spatial"], float)
    picked = xy[np.random.default_rng(0).choice(len(xy), n, replace=False)]
    enc = encode.create("he-stats")
    batches = PatchBatches(source, picked, scale, side, enc.input_size, batch_size=n)
    return enc.preprocess(batches[0]).permute(0, 2, 3, 1).clamp(0, 1).numpy()


@pytest.mark.parametrize("section", ["her2st:C2", "dlpfc:151673"])
def test_same_features_as_reference_on_real_patches(section, data_dir):
    x = _encoder_inputs(section, data_dir, 48)
    assert x.shape == (48, 128, 128, 3)
    _compare(x)


def test_same_features_as_reference_on_odd_patches():
    rng = np.random.default_rng(1)
    tissue = rng.random((4, 128, 128, 3)) * 0.6 + 0.2
    half = np.ones((1, 128, 128, 3))
    half[0, :, 64:] = (0.55, 0.25, 0.6)  # glass on the left, stained tissue on the right
    flat = np.stack([np.full((128, 128, 3), v) for v in (0.0, 1.0, 128 / 255, 0.5)])  # ties everywhere
    quantised = np.round(rng.random((2, 128, 128, 3)) * 4) / 4  # few grey levels: many exact LBP ties
    _compare(np.concatenate([tissue, half, flat, quantised]).astype(np.float32))
    _compare((rng.random((3, 33, 33, 3))).astype(np.float32))  # odd, small sides work too
    single = rng.random((64, 64, 3))
    np.testing.assert_allclose(H.he_features(single), reference_batch(single[None])[0], atol=TOL)
    assert H.features_batch(np.zeros((0, 128, 128, 3))).shape == (0, H.DIM)
    with pytest.raises(ValueError, match="square"):
        H.features_batch(np.zeros((2, 10, 12, 3)))


def test_stains_and_grey_are_the_references_bit_for_bit():
    from skimage.color import rgb2hed

    rng = np.random.default_rng(5)
    x = rng.random((3, 40, 40, 3))
    x[0, :5] = 0.0  # clipped at 1e-6
    x[1, :5] = 1.0
    hed = H.rgb2hed(x)
    for i in range(3):
        np.testing.assert_array_equal(hed[i], rgb2hed(x[i]))
        np.testing.assert_array_equal((x @ H.GREY)[i], x[i] @ np.array([0.299, 0.587, 0.114]))


def test_lbp_is_scikit_images_bit_for_bit():
    rng = np.random.default_rng(2)
    images = [
        rng.integers(0, 256, (40, 37), dtype=np.uint8),
        (rng.integers(0, 3, (50, 50)) * 100).astype(np.uint8),  # plateaus: interpolated samples tie
        np.full((9, 9), 255, np.uint8),
        np.zeros((5, 7), np.uint8),
    ]
    for img in images:
        out = np.empty(img.shape, np.int64)
        H._lbp_uniform(img, *H._lbp_tables(*img.shape), out)
        np.testing.assert_array_equal(out, local_binary_pattern(img, 8, 1, "uniform"))


def test_glcm_counts_are_scikit_images():
    rng = np.random.default_rng(3)
    levels = rng.integers(0, 16, (3, 30, 31), dtype=np.uint8)
    ref = np.stack([graycomatrix(img, H.GLCM_DISTANCES, H.GLCM_ANGLES, levels=16) for img in levels])
    counts = np.zeros((3, len(H._GLCM_OFFSETS), 16, 16), np.int64)
    for i, img in enumerate(levels):
        H._glcm_counts(img, H._GLCM_OFFSETS, counts[i])
    mine = counts.reshape(3, len(H.GLCM_DISTANCES), len(H.GLCM_ANGLES), 16, 16).transpose(0, 3, 4, 1, 2)
    np.testing.assert_array_equal(mine, ref)  # the offsets too: scikit-image's rounding


def test_percentiles_and_nuclei_match_numpy_and_scipy():
    rng = np.random.default_rng(4)
    for n in (1, 2, 7, 1000, 3217):
        values = np.round(rng.random(n) * 50) / 50  # duplicates
        out = np.empty(3)
        H._percentiles(values.copy(), np.array([10.0, 50.0, 90.0]), out)
        np.testing.assert_allclose(out, np.percentile(values, (10, 50, 90)), rtol=0, atol=1e-15)
    code = H._region_code(64)
    for seed in range(5):
        mask = np.random.default_rng(seed).random((64, 64)) > 0.45
        labels, _ = ndimage.label(ndimage.binary_opening(mask))
        expect = [len({v for v in np.unique(labels[code == r]) if v > 0}) for r in (0, 1)]
        counts = np.zeros(2)
        H._nuclei_per_region(mask, code, counts)
        assert counts.tolist() == expect


def test_runs_where_numba_has_no_place_for_its_cache():
    """A read-only install with no writable HOME: numba cannot cache, he-stats still imports and runs."""
    import subprocess
    import sys

    code = (
        "import numba.core.caching as c\n"
        "c.CacheImpl._locator_classes = []\n"  # what numba sees when no folder is writable
        "import numpy as np\n"
        "from histosge import _hestats as H\n"
        "print(H.features_batch(np.random.default_rng(0).random((2, 32, 32, 3))).shape)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "(2, 93)"
