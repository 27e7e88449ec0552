"""`histosge train` and `histosge predict`: a model file in, predictions out; every bad input of
issue 13 one line, exit status 2, no output left behind."""

from __future__ import annotations

import json
import warnings

import anndata as ad
import numpy as np
import pytest
import tifffile
from safetensors import safe_open
from safetensors.numpy import save_file
from typer.testing import CliRunner

from histosge.cli import app

runner = CliRunner()
FAST = ["--epochs", "2", "--n-top-genes", "6", "--quiet"]


def run(*args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def legacy(make_legacy_st):
    make_legacy_st("A1", seed=0)
    return make_legacy_st("A2", seed=1, n_x=9)


@pytest.fixture
def image_model(legacy, tmp_path):
    path = tmp_path / "m.histosge"
    res = run("train", "her2st:A1", "her2st:A2", "--data-dir", legacy.parent, "--mode", "image", "-o", path,
              "--cache-dir", tmp_path / "cache", *FAST)
    assert res.exit_code == 0, res.output
    return path


def _slide(path, legacy, mpp=0.85):
    from PIL import Image

    img = np.asarray(Image.open(next((legacy / "ST-imgs" / "A" / "A1").glob("*.jpg"))).convert("RGB"))
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(img, tile=(256, 256), photometric="rgb",
                 metadata={"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp})
    return path


def test_train_then_predict_a_slide_and_a_section(image_model, legacy, tmp_path):
    out = tmp_path / "slide.h5ad"
    res = run("predict", image_model, _slide(tmp_path / "s.ome.tif", legacy), "-o", out,
              "--cache-dir", tmp_path / "cache", "--quiet", "--plot", "G0,G1")
    assert res.exit_code == 0, res.output
    pred = ad.read_h5ad(out)
    assert pred.n_obs > 10 and pred.n_vars == 6 and "novelty" in pred.obs and (tmp_path / "slide_genes.png").exists()
    info = pred.uns["histosge"]
    assert info["input"] == "slide" and info["model"]["sha256"] and info["units"]["mpp"] == pytest.approx(0.85)
    out2 = tmp_path / "section.h5ad"
    res = run("predict", image_model, "her2st:A1", "--data-dir", legacy.parent, "-o", out2,
              "--cache-dir", tmp_path / "cache", "--quiet")
    assert res.exit_code == 0, res.output
    assert ad.read_h5ad(out2).uns["histosge"]["input"] == "section"


def test_neighbours_model_predicts_its_section_4x(legacy, tmp_path):
    path = tmp_path / "n.histosge"
    res = run("train", "her2st:A1", "--data-dir", legacy.parent, "-o", path, "--cache-dir", tmp_path / "cache",
              *FAST)
    assert res.exit_code == 0, res.output
    out = tmp_path / "a1.h5ad"
    res = run("predict", path, "her2st:A1", "--data-dir", legacy.parent, "-o", out, "--cache-dir",
              tmp_path / "cache", "--quiet")
    assert res.exit_code == 0, res.output
    pred = ad.read_h5ad(out)
    assert (pred.obs["spot_type"] == "generated").sum() > 0


def _edit(path, fn, *, reseal=False):
    """Edit a model file's description; ``reseal``: recompute its checksum, as the histosge (or
    plugin) that wrote such a file would have."""
    from histosge.model.persist import description_sha256

    with safe_open(str(path), "np") as fh:
        meta = json.loads(fh.metadata()["histosge"])
        arrays = {k: fh.get_tensor(k) for k in fh.keys()}
    fn(meta)
    if reseal:
        meta["integrity"]["sha256"] = description_sha256(meta)
    save_file(arrays, str(path), metadata={"histosge": json.dumps(meta)})


@pytest.mark.parametrize("damage, needle", [
    ("truncate", "truncated"),
    ("garbage", "not a histosge model"),
    ("schema", "upgrade histosge"),
    ("encoder", "no-such-encoder"),
    ("edited", "changed after it was written (its description"),
])
def test_bad_model_files(image_model, legacy, tmp_path, damage, needle):
    if damage == "truncate":
        image_model.write_bytes(image_model.read_bytes()[:-64])
    elif damage == "garbage":
        image_model.write_bytes(b"definitely not a model")
    elif damage == "schema":
        _edit(image_model, lambda m: m.update(schema_version=99))
    elif damage == "encoder":
        _edit(image_model, lambda m: m["encoder"].update(encoder="no-such-encoder"), reseal=True)
    else:
        _edit(image_model, lambda m: m.update(novelty_scale=1e9))
    out = tmp_path / "x.h5ad"
    res = run("predict", image_model, _slide(tmp_path / "s.ome.tif", legacy), "-o", out, "--quiet")
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output, res.output
    assert not out.exists()


@pytest.mark.parametrize("case, needle", [
    ("no-mpp", "pixel size is unknown"),
    ("mpp-zero", "--mpp"),
    ("mpp-absurd", "--mpp"),
    ("unreadable", "s.svs"),
    ("unsupported", "slide.xyz"),
    ("glass", "no tissue found"),
    ("tiny", "smaller than one spot pitch"),
    ("genes", "--plot"),
])
def test_bad_slides(image_model, legacy, tmp_path, case, needle):
    from PIL import Image

    extra = []
    if case in ("no-mpp", "mpp-zero", "mpp-absurd"):
        slide = tmp_path / "s.png"
        Image.fromarray(np.full((400, 400, 3), 200, np.uint8)).save(slide)
        extra = {"no-mpp": [], "mpp-zero": ["--mpp", "0"], "mpp-absurd": ["--mpp", "50"]}[case]
    elif case == "unreadable":
        slide = tmp_path / "s.svs"
        slide.write_bytes(b"II*\x00" + bytes(50))
    elif case == "unsupported":
        slide = tmp_path / "slide.xyz"
        slide.write_bytes(b"abc")
    elif case == "glass":
        slide = tmp_path / "g.ome.tif"
        tifffile.imwrite(slide, np.full((600, 600, 3), 244, np.uint8), photometric="rgb", ome=True,
                         metadata={"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    elif case == "tiny":
        slide = tmp_path / "t.ome.tif"
        tifffile.imwrite(slide, np.full((50, 50, 3), 120, np.uint8), photometric="rgb", ome=True,
                         metadata={"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    else:
        slide = _slide(tmp_path / "s.ome.tif", legacy)
        extra = ["--plot", "NOT_A_GENE"]
    out = tmp_path / "x.h5ad"
    res = run("predict", image_model, slide, "-o", out, "--quiet", *extra)
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output, res.output
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_context_genes_must_cover_the_model(legacy, tmp_path):
    path = tmp_path / "n.histosge"
    assert run("train", "her2st:A1", "--data-dir", legacy.parent, "-o", path, "--cache-dir", tmp_path / "cache",
               *FAST).exit_code == 0
    from histosge import read_section

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = read_section("her2st:A1", data_dir=legacy.parent)
    from histosge.model import HisToSGE

    gone = HisToSGE.load(path).genes_[0]
    a[:, [g for g in a.var_names if g != gone]].copy().write_h5ad(tmp_path / "fewer.h5ad")
    out = tmp_path / "x.h5ad"
    res = run("predict", path, tmp_path / "fewer.h5ad", "-o", out, "--quiet", "--no-alignment-check")
    assert res.exit_code == 2 and "lacks 1 of the model's" in res.output, res.output
    assert not out.exists()


def test_train_output_must_be_a_model_file_and_not_an_input(legacy, tmp_path):
    res = run("train", "her2st:A1", "--data-dir", legacy.parent, "-o", tmp_path / "m.h5ad", *FAST)
    assert res.exit_code == 2 and ".histosge" in res.output
    res = run("train", "her2st:A1", "--data-dir", legacy.parent, "--mode", "sideways", "-o", tmp_path / "m.histosge")
    assert res.exit_code == 2 and "--mode" in res.output
