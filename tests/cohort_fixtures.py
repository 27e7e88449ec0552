"""Helpers for the cohort tests: a small image-mode model (trained once per session on synthetic
legacy-ST sections) and synthetic or real slides written as pyramidal OME-TIFFs with a pixel size."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import tifffile

_MODELS: dict[str, Path] = {}
#: A slide's spots are this many pixels apart at the model's pitch.
PITCH_PX = 60.0


def model_file(make_legacy_st, tmp_path_factory, *, seed: int = 0) -> Path:
    """An image-mode model (6 genes, 2 epochs) saved to a session folder; trained once per seed."""
    key = f"seed{seed}"
    if key not in _MODELS:
        import histosge
        from histosge.model import HisToSGE

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = histosge.read_section("her2st:A1", data_dir=make_legacy_st("A1", seed=0).parent)
            b = histosge.read_section("her2st:A2", data_dir=make_legacy_st("A2", seed=1).parent)
        folder = tmp_path_factory.mktemp(f"cohort-model-{key}")
        model = HisToSGE("image", n_top_genes=6, seed=seed, network={"epochs": 2, "dim": 32, "mlp_dim": 32}).fit(
            [a, b], cache_dir=str(folder / "cache"), progress=False)
        model.save(folder / "m.histosge")
        _MODELS[key] = folder / "m.histosge"
    return _MODELS[key]


def write_ome(path: Path, img: np.ndarray, mpp: float, levels: int = 2) -> Path:
    """A tiled pyramidal OME-TIFF with its pixel size."""
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(img, tile=(256, 256), subifds=levels - 1, photometric="rgb",
                 metadata={"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp})
        for k in range(1, levels):
            tw.write(img[:: 2**k, :: 2**k], tile=(256, 256), subfiletype=1, photometric="rgb")
    return path


def tissue(width: int, height: int, seed: int) -> np.ndarray:
    """Pink-purple textured tissue in an ellipse on white glass; the seed moves and shapes it."""
    rng = np.random.default_rng(seed)
    cx, cy = width * (0.45 + 0.1 * rng.random()), height * (0.45 + 0.1 * rng.random())
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((xx - cx) / (0.38 * width)) ** 2 + ((yy - cy) / (0.34 * height)) ** 2 <= 1
    img = np.full((height, width, 3), 245, np.uint8)
    base = np.array([200, 90, 160]) + rng.integers(-30, 30, size=3)
    noise = rng.integers(-40, 40, size=(int(inside.sum()), 3))
    img[inside] = np.clip(base + noise, 0, 255)
    return img


def synthetic_slides(folder: Path, model_path: Path, n: int = 3, size=(600, 480)) -> list[Path]:
    """``n`` different synthetic slides whose lattice (at the model's pitch) is ``PITCH_PX`` apart."""
    from histosge.model.persist import read_description

    pitch_um = float(read_description(model_path)["geometry"]["pitch_um"])
    folder.mkdir(parents=True, exist_ok=True)
    return [write_ome(folder / f"slide{i}.ome.tif", tissue(*size, seed=10 + i), pitch_um / PITCH_PX)
            for i in range(n)]


def crops_of_shipped_slide(data_dir: Path, folder: Path, n: int = 3, side: int = 1600) -> list[Path]:
    """``n`` crops of ``slides/her2st_C4.ome.tif`` (real H&E, 0.687 um/px) as OME-TIFFs with that
    pixel size."""
    from histosge.read.image import ImageSource

    src_path = data_dir / "slides" / "her2st_C4.ome.tif"
    mpp = ImageSource(src_path).mpp
    img = tifffile.imread(src_path, level=0)
    folder.mkdir(parents=True, exist_ok=True)
    corners = [(3000, 3000), (4600, 3600), (3600, 5200), (5200, 5200)][:n]
    return [write_ome(folder / f"c4_{i}.ome.tif", np.ascontiguousarray(img[y : y + side, x : x + side]), mpp)
            for i, (x, y) in enumerate(corners)]


VOLATILE = {"seconds", "storage"}


def same_output(a_path: Path, b_path: Path) -> None:
    """Assert two outputs hold the same arrays, bit for bit, and the same provenance (timings aside)."""
    a, b = ad.read_h5ad(a_path), ad.read_h5ad(b_path)
    assert a.shape == b.shape
    assert np.array_equal(np.asarray(a.X), np.asarray(b.X)), "X differs"
    assert a.obs.equals(b.obs) and a.var.equals(b.var)
    for k in a.obsm:
        assert np.array_equal(a.obsm[k], b.obsm[k]), k
    ia = {k: v for k, v in a.uns["histosge"].items() if k not in VOLATILE}
    ib = {k: v for k, v in b.uns["histosge"].items() if k not in VOLATILE}
    assert repr(ia) == repr(ib)
