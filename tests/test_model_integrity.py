"""Model files: no byte of the description can change unnoticed, and what it says must fit its
arrays before any work (issue 27). Files of schema 1-2 (no description checksum) still load, get
the consistency checks, and say they lack the checksum."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
from safetensors import safe_open
from safetensors.numpy import save_file
from typer.testing import CliRunner

import histosge
from histosge.cli import app
from histosge.errors import InputError
from histosge.methods import create_model, load_model
from histosge.model import persist
from histosge.model.persist import read_description

SMALL = {"epochs": 2, "dim": 32, "mlp_dim": 32}
_CACHE: dict = {}


@pytest.fixture
def sections(make_legacy_st):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = histosge.read_section("her2st:A1", data_dir=make_legacy_st("A1", seed=0).parent)
        b = histosge.read_section("her2st:A2", data_dir=make_legacy_st("A2", seed=1, n_x=9).parent)
    return a, b


def _model(kind, sections, tmp_path_factory):
    """A saved image-mode HisToSGE ('histosge') or ridge MethodModel ('ridge'), fitted once per session."""
    if kind not in _CACHE:
        folder = tmp_path_factory.mktemp(f"integrity-{kind}")
        model = (histosge.HisToSGE("image", n_top_genes=6, network=SMALL) if kind == "histosge"
                 else create_model("ridge", n_top_genes=6))
        model.fit(list(sections), cache_dir=str(folder / "cache"), progress=False)
        model.save(folder / "m.histosge")
        _CACHE[kind] = folder / "m.histosge"
    return _CACHE[kind]


@pytest.fixture(params=["histosge", "ridge"])
def saved(request, sections, tmp_path_factory, tmp_path):
    path = tmp_path / "m.histosge"
    shutil.copyfile(_model(request.param, sections, tmp_path_factory), path)
    return path


def rewrite(path, edit=None, *, schema=None, reseal=False):
    """Edit a model file's description as a hostile or careless hand would; ``schema``: rewrite it
    as a file of that (older) schema, without the description checksum; ``reseal``: recompute the
    checksum, as a histosge that wrote such a file would have."""
    with safe_open(str(path), "np") as fh:
        meta = json.loads(fh.metadata()["histosge"])
        arrays = {k: fh.get_tensor(k) for k in fh.keys()}
    if edit:
        edit(meta)
    if schema is not None:
        meta["schema_version"] = schema
        meta.pop("integrity", None)
    if reseal:
        meta["integrity"]["sha256"] = persist.description_sha256(meta)
    save_file(arrays, str(path), metadata={"histosge": json.dumps(meta)})
    return path


def _swap_genes(m):
    m["genes"][0], m["genes"][1] = m["genes"][1], m["genes"][0]


def _flip_bit(m):
    g = m["genes"][0]
    m["genes"][0] = chr(ord(g[0]) ^ 1) + g[1:]


def _set(*keys_, value):
    def edit(m):
        d = m
        for k in keys_[:-1]:
            d = d[k]
        d[keys_[-1]] = value
    return edit


#: Every description edit the hostile user made; each loaded without a word before.
EDITS = {
    "two gene names swapped": _swap_genes,
    "a gene renamed by one flipped bit": _flip_bit,
    "novelty_scale 1e9": _set("novelty_scale", value=1e9),
    "novelty_scale NaN": _set("novelty_scale", value=float("nan")),
    "encoder recorded as another": _set("encoder", "encoder", value="resnet50"),
    "weights identity edited": _set("encoder", "weights_id", value="he-stats/2"),
    "patch size edited": _set("geometry", "patch_um", value=100.0),
    "spot diameter edited": _set("geometry", "spot_diameter_um", value=55.0),
    "pitch edited": _set("geometry", "pitch_um", value=100.0),
    "n_features_in edited": _set("n_features_in", value=94),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_every_edit_of_the_description_is_refused_at_load(saved, edit):
    if edit.startswith("novelty") and "method" in read_description(saved):
        pytest.skip("a method model has no novelty scale")
    rewrite(saved, EDITS[edit])
    for reader in (load_model, read_description):
        with pytest.raises(InputError, match="changed after it was written \\(its description") as err:
            reader(saved)
        assert str(saved) in str(err.value) and "\n" not in str(err.value)


def test_new_files_carry_the_checksum_and_old_ones_load_saying_they_lack_it(saved):
    model = load_model(saved)
    assert model.integrity_ == {"schema_version": 3, "description_checksum": True, "arrays_checksum": True}
    rewrite(saved, schema=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the field says it
        old = load_model(saved)
    assert old.integrity_["description_checksum"] is False and old.integrity_["schema_version"] == 2
    assert old.genes_ == model.genes_


def _longer(m):
    m["genes"].append("EXTRA")
    for values in m.get("var", {}).values():
        values.append("")


def _shorter(m):
    m["genes"].pop()
    for values in m.get("var", {}).values():
        values.pop()


#: Edits of an old (schema 2) file that its own fields or arrays contradict: refused at load,
#: naming the field (the checksum of schema 3 catches every edit; these, also in old files).
CONTRADICTIONS = {
    "gene list one longer than the arrays": (_longer, "genes"),
    "gene list one shorter than the arrays": (_shorter, "genes"),
    "n_features_in edited": (_set("n_features_in", value=94), "n_features_in 94"),
    "novelty_scale NaN": (_set("novelty_scale", value=float("nan")), "novelty_scale"),
    "novelty_scale 0": (_set("novelty_scale", value=0.0), "novelty_scale"),
    "encoder recorded as another": (_set("encoder", "encoder", value="resnet50"), "resnet50"),
    "patch size edited": (_set("geometry", "patch_um", value=100.0), "patch_um"),
    "spot diameter edited": (_set("geometry", "spot_diameter_um", value=55.0), "patch_um"),
    "pitch 0": (_set("geometry", "pitch_um", value=0.0), "pitch_um"),
    "grid unknown": (_set("geometry", "grid", value="round"), "grid"),
    "weights identity removed": (_set("encoder", "weights_id", value=""), "weights"),
}


@pytest.mark.parametrize("edit", list(CONTRADICTIONS))
def test_an_old_file_whose_description_contradicts_its_arrays_is_refused_at_load(saved, edit):
    change, field = CONTRADICTIONS[edit]
    if "novelty" in edit and "method" in read_description(saved):
        pytest.skip("a method model has no novelty scale")
    rewrite(saved, change, schema=2)
    with pytest.raises(InputError, match="description is inconsistent") as err:
        load_model(saved)
    msg = str(err.value)
    assert field in msg and str(saved) in msg and "\n" not in msg and "features:" not in msg


def test_weights_of_another_identity_are_refused_before_encoding(sections, saved, tmp_path):
    """An old file whose weights identity was edited loads (nothing contradicts it), but the
    encoder built to predict must be the one recorded: refused before a patch is encoded."""
    if "method" in read_description(saved):
        pytest.skip("ridge: same path as HisToSGE (features.for_model)")
    rewrite(saved, _set("encoder", "weights_id", value="he-stats/2"), schema=2)
    model = load_model(saved)
    with pytest.raises(InputError, match="weights he-stats/2.*this run's encoder is he-stats \\(weights he-stats/1"):
        model.predict(sections[1], cache_dir=str(tmp_path / "fresh-cache"), progress=False)
    assert not (tmp_path / "fresh-cache").exists()


def test_a_resealed_file_from_another_histosge_names_the_missing_encoder(saved):
    rewrite(saved, _set("encoder", "encoder", value="no-such-encoder"), reseal=True)
    with pytest.raises(InputError, match="needs image encoder 'no-such-encoder'"):
        load_model(saved)


def test_the_cli_refuses_an_edited_model_in_one_line(saved, tmp_path):
    from cohort_fixtures import tissue, write_ome

    rewrite(saved, _swap_genes)
    (tmp_path / "slides").mkdir()
    write_ome(tmp_path / "slides" / "s.ome.tif", tissue(300, 240, seed=1), 2.0)
    res = CliRunner().invoke(app, ["predict", str(saved), str(tmp_path / "slides"), "--out-dir",
                                   str(tmp_path / "out")])
    assert res.exit_code == 2 and "changed after it was written" in res.output
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_gene_count_mismatch_in_an_old_prior_inside_a_model_is_refused(sections, make_legacy_st,
                                                                         tmp_path_factory, tmp_path):
    """The prior a model holds is checked against its own arrays too."""
    prior = histosge.HisToSGE.load(_model("histosge", sections, tmp_path_factory))
    model = histosge.HisToSGE("neighbours", n_top_genes=6, network=SMALL, prior=prior)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = histosge.read_section("her2st:A3", data_dir=make_legacy_st("A3", seed=7).parent)
    model.fit(c, cache_dir=str(tmp_path / "cache"), progress=False)
    path = tmp_path / "with_prior.histosge"
    model.save(path)
    assert histosge.HisToSGE.load(path).prior.integrity_["description_checksum"] is True
    rewrite(path, lambda m: _longer(m["prior"]["description"]), schema=2)
    with pytest.raises(InputError, match="its prior: .*genes"):
        histosge.HisToSGE.load(path)

