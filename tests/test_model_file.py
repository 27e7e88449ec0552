"""The model object end to end on sections (AnnData in), and its file: safe to share, every
broken or foreign file one clear error."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import histosge
from histosge.errors import InputError
from histosge.model import HisToSGE
from histosge.model.persist import SCHEMA_VERSION, read_description

SMALL = {"epochs": 3, "dim": 32, "mlp_dim": 32}


@pytest.fixture
def two_sections(make_legacy_st, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = histosge.read_section("her2st:A1", data_dir=make_legacy_st("A1", seed=0).parent)
        b = histosge.read_section("her2st:A2", data_dir=make_legacy_st("A2", seed=1, n_x=9).parent)
    return a, b


def _fit(mode, sections, tmp_path, **kw):
    return HisToSGE(mode, n_top_genes=6, network=SMALL, **kw).fit(sections, cache_dir=str(tmp_path / "cache"),
                                                              progress=False)


@pytest.mark.parametrize("mode", ["neighbours", "image", "paper"])
def test_fit_save_load_predict_round_trip(mode, two_sections, tmp_path):
    a, b = two_sections
    sections = [a, b] if mode == "image" else a
    model = _fit(mode, sections, tmp_path)
    assert model.genes_ and len(model.genes_) == 6 and model.patch_um_ == pytest.approx(200.0)  # 2 x 100 um
    target = a if mode != "image" else b
    fresh = model.predict(target, cache_dir=str(tmp_path / "cache"), progress=False)
    path = tmp_path / "m.histosge"
    sha = model.save(path)
    loaded = HisToSGE.load(path)
    again = loaded.predict(target, cache_dir=str(tmp_path / "cache"), progress=False)
    assert np.abs(np.asarray(again.X) - np.asarray(fresh.X)).max() <= 1e-5
    assert list(again.var_names) == model.genes_ and again.obs["novelty"].notna().all()
    assert again.uns["histosge"]["model"]["sha256"] == sha == loaded.file_sha256_
    meta = read_description(path)
    assert meta["schema_version"] == SCHEMA_VERSION and meta["geometry"]["patch_um"] == pytest.approx(200.0)
    assert meta["encoder"]["encoder"] == "he-stats" and meta["training"]["sections"][0]["fingerprint"]
    assert meta["hyperparameters"]["mode"] == mode and "scores" in meta


def test_no_pickle_in_a_model_file(two_sections, tmp_path):
    path = tmp_path / "m.histosge"
    _fit("image", list(two_sections), tmp_path).save(path)
    raw = path.read_bytes()
    assert b"\x80\x04\x95" not in raw and b"cnumpy" not in raw  # pickle protocol 4 / numpy globals
    arrays = load_file(str(path))  # a plain safetensors file
    assert all(isinstance(v, np.ndarray) for v in arrays.values())


def _rewrite(path, edit_meta=None, edit_arrays=None):
    from safetensors import safe_open

    with safe_open(str(path), "np") as fh:
        meta = json.loads(fh.metadata()["histosge"])
        arrays = {k: fh.get_tensor(k) for k in fh.keys()}
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    save_file(arrays, str(path), metadata={"histosge": json.dumps(meta)})


@pytest.fixture
def saved(two_sections, tmp_path):
    path = tmp_path / "m.histosge"
    _fit("image", list(two_sections), tmp_path).save(path)
    return path


def test_truncated_file_is_one_clear_error(saved):
    saved.write_bytes(saved.read_bytes()[:-100])
    with pytest.raises(InputError, match="not a histosge model file, or truncated"):
        HisToSGE.load(saved)


@pytest.mark.parametrize("content", [b"", b"hello, not a model", b"\x89PNG\r\n\x1a\n" + bytes(100)])
def test_not_a_model_is_one_clear_error(tmp_path, content):
    path = tmp_path / "x.histosge"
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a histosge model"):
        HisToSGE.load(path)


def test_a_safetensors_file_without_our_description(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(path))
    with pytest.raises(InputError, match="without a histosge description"):
        HisToSGE.load(path)


def test_newer_schema_asks_for_an_upgrade(saved):
    _rewrite(saved, edit_meta=lambda m: m.update(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(InputError, match="upgrade histosge"):
        HisToSGE.load(saved)


def test_edited_arrays_fail_the_checksum(saved):
    def flip(arrays):
        name = sorted(arrays)[0]
        arrays[name] = np.array(arrays[name]) + 1
    _rewrite(saved, edit_arrays=flip)
    with pytest.raises(InputError, match="changed after it was written"):
        HisToSGE.load(saved)


def test_edited_description_is_one_clear_error(saved):
    _rewrite(saved, edit_meta=lambda m: m.pop("genes"))
    with pytest.raises(InputError, match="changed after it was written \\(its description"):
        HisToSGE.load(saved)
    _rewrite(saved, edit_meta=_reseal)  # as a histosge that wrote it would have sealed it
    with pytest.raises(InputError, match="description is inconsistent: genes"):
        HisToSGE.load(saved)


def _reseal(meta):
    from histosge.model.persist import description_sha256

    meta["integrity"]["sha256"] = description_sha256(meta)


def test_unknown_encoder_names_it(saved):
    _rewrite(saved, edit_meta=lambda m: (m["encoder"].update(encoder="no-such-encoder"), _reseal(m)))
    with pytest.raises(InputError, match="no-such-encoder"):
        HisToSGE.load(saved)


def test_features_of_another_encoder_are_refused(two_sections, saved, tmp_path):
    _, b = two_sections
    b = b.copy()
    b.obsm["features"] = np.zeros((b.n_obs, 93), np.float32)
    b.uns["histosge"]["features"] = {"encoder": "uni", "weights_id": "x", "patch_um": 200.0}
    with pytest.raises(InputError, match="made by encoder uni"):
        HisToSGE.load(saved).predict(b, progress=False)


def test_context_must_cover_the_models_genes(two_sections, tmp_path):
    a, _ = two_sections
    model = _fit("neighbours", a, tmp_path)
    other = a[:, [g for g in a.var_names if g != model.genes_[0]]].copy()
    with pytest.raises(InputError, match="lacks 1 of the model's"):
        model.predict(a, context=other, cache_dir=str(tmp_path / "cache"), progress=False)


def test_a_neighbours_model_refuses_another_sections_positions(two_sections, tmp_path):
    a, b = two_sections
    model = _fit("neighbours", a, tmp_path)
    b = b.copy()
    b.obsm["spatial"] = np.asarray(b.obsm["spatial"]) + 1e5  # elsewhere on another slide
    with pytest.raises(InputError, match="outside the section"):
        model.predict(b, progress=False)


def test_fit_refuses_several_sections_outside_image_mode(two_sections):
    with pytest.raises(InputError, match="use mode='image'"):
        HisToSGE("neighbours").fit(list(two_sections), progress=False)


def test_hyperparameters_are_constructor_arguments_and_recorded(two_sections, tmp_path):
    a, _ = two_sections
    model = _fit("neighbours", a, tmp_path, n_components=3, outside_weight=0.2, image_blend=0.0,
                 k_choices=(1, 2, 4))
    m = model.method_
    assert m.pca_.n_components == 3 and m.context_.k in (1, 2, 4) and m.gene_head_ is None
    path = tmp_path / "m.histosge"
    model.save(path)
    params = read_description(path)["hyperparameters"]
    assert params["n_components"] == 3 and params["outside_weight"] == 0.2 and params["k_choices"] == [1, 2, 4]
    assert HisToSGE.load(path).get_params() == model.get_params()
