"""A cohort prior (``HisToSGE(prior=...)``, ``--prior``): refused when it saw the section or reads
other features, genes it does not predict left to the section, saved whole inside the model file."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

import histosge
from histosge.cli import app
from histosge.errors import InputError
from histosge.model import HisToSGE
from histosge.model.persist import read_description
from histosge.provenance import file_sha256

SMALL = {"epochs": 2, "dim": 32, "mlp_dim": 32}


@pytest.fixture
def cohort(make_legacy_st):
    """Three legacy-ST sections of two patients (A1, A2; B1) in one data folder."""
    make_legacy_st("A1", seed=0)
    make_legacy_st("A2", seed=1, n_x=9)
    root = make_legacy_st("B1", seed=2, n_y=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {s: histosge.read_section(f"her2st:{s}", data_dir=root.parent) for s in ("A1", "A2", "B1")}, root


def _prior(sections, tmp_path, **kw):
    return HisToSGE("image", n_top_genes=6, network=SMALL, **kw).fit(sections, cache_dir=str(tmp_path / "cache"),
                                                                   progress=False)


def _target(prior, **kw):
    return HisToSGE("neighbours", n_top_genes=6, network=SMALL, prior=prior, **kw)


def _fit(model, section, tmp_path, **kw):
    return model.fit(section, cache_dir=str(tmp_path / "cache"), progress=False, **kw)


def test_a_prior_that_saw_the_section_is_refused(cohort, tmp_path):
    (s, _) = cohort
    prior = _prior([s["A1"], s["A2"]], tmp_path)
    with pytest.raises(InputError, match=r"prior was fitted on \d+ of this section's"):
        _fit(_target(prior), s["A1"], tmp_path)
    with pytest.raises(InputError, match="fitted on 20 of this section's 20 spots"):  # a subset of it
        _fit(_target(prior), s["A1"][:20].copy(), tmp_path)
    renamed = s["A1"].copy()
    renamed.obs_names = [f"x{i}" for i in range(renamed.n_obs)]
    with pytest.raises(InputError, match="prior was fitted on"):  # renamed spots: their counts still tell
        _fit(_target(prior), renamed, tmp_path)
    part = _prior([s["A1"][:15].copy(), s["A2"]], tmp_path)  # the prior saw a subset of the section
    with pytest.raises(InputError, match="fitted on 15 of this section's"):
        _fit(_target(part), s["A1"], tmp_path)
    fine = _fit(_target(_prior([s["A2"], s["B1"]], tmp_path)), s["A1"], tmp_path)  # other sections only
    with pytest.raises(InputError, match="context section: the prior was fitted on"):
        fine.predict(s["A1"], context=s["A2"], cache_dir=str(tmp_path / "cache"), progress=False)


def test_a_prior_must_be_an_image_model_reading_the_same_features(cohort, tmp_path):
    (s, _) = cohort
    with pytest.raises(InputError, match=r"reads 100 um patches .*this section's model 200 um"):
        _fit(_target(_prior([s["A2"], s["B1"]], tmp_path, patch_scale=1.0)), s["A1"], tmp_path)
    neighbours = _fit(HisToSGE("neighbours", n_top_genes=6, network=SMALL), s["A2"], tmp_path)
    with pytest.raises(InputError, match="a neighbours-mode model is not a prior"):
        _fit(_target(neighbours), s["A1"], tmp_path)
    with pytest.raises(InputError, match="takes no prior"):
        HisToSGE("image", prior=neighbours)
    with pytest.raises(InputError, match="unknown prior use"):
        HisToSGE(prior=neighbours, prior_use=("magic",))
    with pytest.raises(InputError, match="not fitted"):
        _fit(_target(HisToSGE("image")), s["A1"], tmp_path)


def test_genes_the_prior_does_not_predict_are_left_to_the_section(cohort, tmp_path):
    (s, _) = cohort
    genes = [f"G{i}" for i in range(6)]
    prior = HisToSGE("image", network=SMALL).fit([s["A2"], s["B1"]], genes=genes[:3],
                                                 cache_dir=str(tmp_path / "cache"), progress=False)
    kw = {"genes": genes}
    alone = _fit(HisToSGE("neighbours", network=SMALL), s["A1"], tmp_path, **kw)
    mixed = _fit(HisToSGE("neighbours", network=SMALL, prior=prior, prior_use=("stack",), prior_weight=0.5),
                 s["A1"], tmp_path, **kw)
    a = np.asarray(alone.predict(s["A1"], cache_dir=str(tmp_path / "cache"), progress=False).X)
    b = np.asarray(mixed.predict(s["A1"], cache_dir=str(tmp_path / "cache"), progress=False).X)
    assert np.array_equal(a[:, 3:], b[:, 3:])  # G3-G5: the prior does not predict them
    assert np.abs(a[:, :3] - b[:, :3]).max() > 1e-4
    info = mixed.info_["prior"]
    assert info["genes_covered"] == 3 and info["genes"] == 6 and info["stack_weight"] == 0.5
    full = _fit(HisToSGE("neighbours", network=SMALL, prior=prior), s["A1"], tmp_path, **kw)  # every use
    assert np.isfinite(np.asarray(full.predict(s["A1"], cache_dir=str(tmp_path / "cache"), progress=False).X)).all()
    assert 0.0 <= full.info_["prior"]["stack_weight"] <= 1.0
    none = HisToSGE("image", network=SMALL).fit([s["A2"]], genes=["G7", "G8"], cache_dir=str(tmp_path / "cache"),
                                                progress=False)
    with pytest.raises(InputError, match="predicts none of the 6 genes"):
        _fit(HisToSGE("neighbours", network=SMALL, prior=none), s["A1"], tmp_path, **kw)


def test_a_model_with_a_prior_saves_it_whole(cohort, tmp_path):
    (s, _) = cohort
    prior_path = tmp_path / "prior.histosge"
    prior_sha = _prior([s["A2"], s["B1"]], tmp_path).save(prior_path)
    model = _fit(_target(str(prior_path)), s["A1"], tmp_path)
    fresh = np.asarray(model.predict(s["A1"], cache_dir=str(tmp_path / "cache"), progress=False).X)
    path = tmp_path / "m.histosge"
    model.save(path)
    prior_path.unlink()  # the model file alone predicts
    loaded = HisToSGE.load(path)
    again = np.asarray(loaded.predict(s["A1"], cache_dir=str(tmp_path / "cache"), progress=False).X)
    assert np.abs(again - fresh).max() <= 1e-5
    meta = read_description(path)
    rec = meta["prior"]["record"]
    assert rec["sha256"] == rec["file_sha256"] == prior_sha != file_sha256(path)  # the prior's file, not this one
    assert [t["name"] for t in rec["training_sections"]] == ["A2", "B1"]
    assert rec["genes_covered"] == len(set(model.genes_) & set(loaded.prior_.model.genes_)) > 0
    assert rec["use"] == ["genes", "stack"] and rec["genes"] == 6
    assert meta["prior"]["description"]["mode"] == "image"
    assert meta["info"]["prior"]["sha256"] == prior_sha and "stack_weight" in meta["info"]["prior"]
    assert loaded.prior_.sha256 == prior_sha and loaded.method_.stack_["weight"] == model.method_.stack_["weight"]
    # refitting the loaded model reads the same prior, and it is still checked
    with pytest.raises(InputError, match="prior was fitted on"):
        _fit(loaded, s["A2"], tmp_path)


def test_cli_prior_for_recover_and_superres(cohort, tmp_path):
    (s, root) = cohort
    runner = CliRunner()
    common = ["--data-dir", str(root.parent), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    fast = ["--epochs", "2", "--n-top-genes", "6"]

    def cli(*args):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return runner.invoke(app, [str(a) for a in args])

    prior = tmp_path / "prior.histosge"
    res = cli("train", "her2st:A2", "her2st:B1", "--mode", "image", "-o", prior, *common, *fast)
    assert res.exit_code == 0, res.output
    out = tmp_path / "a1.h5ad"
    res = cli("recover", "her2st:A1", "-o", out, "--prior", prior, *common, *fast)
    assert res.exit_code == 0, res.output
    import anndata as ad

    info = ad.read_h5ad(out).uns["histosge"]
    assert info["model"]["prior"]["sha256"] == file_sha256(prior) and info["settings"]["prior"] == str(prior)
    res = cli("superres", "her2st:A1", "-o", tmp_path / "s.h5ad", "--prior", prior, *common, *fast)
    assert res.exit_code == 0, res.output
    res = cli("superres", "her2st:A2", "-o", tmp_path / "bad.h5ad", "--prior", prior, *common, *fast)
    assert res.exit_code == 2 and "prior was fitted on" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "bad.h5ad").exists()
    res = cli("recover", "her2st:A1", "-o", tmp_path / "bad.h5ad", "--prior", tmp_path / "nope.histosge",
              *common, *fast)
    assert res.exit_code == 2 and "model file not found" in res.output
    res = cli("recover", "her2st:A1", "-o", prior, "--prior", prior, *common, *fast)  # never overwrite the prior
    assert res.exit_code == 2 and file_sha256(prior) == info["model"]["prior"]["sha256"]


def _with_gene(section, name="EXTRA"):
    import anndata as ad
    import scipy.sparse as sp

    extra = ad.AnnData(X=sp.csr_matrix(np.random.default_rng(5).poisson(3.0, (section.n_obs, 1)).astype(np.float32)),
                       obs=section.obs[[]])
    extra.var_names = [name]
    out = ad.concat([section, extra], axis=1, merge="same", uns_merge="first")
    out.obsm["spatial"] = section.obsm["spatial"]
    return out


@pytest.mark.parametrize("change", ["one gene more", "one gene fewer"])
def test_a_section_resaved_with_a_gene_more_or_less_is_still_recognised(cohort, tmp_path, change):
    """The hostile user's case (issue 27): the section the prior was fitted on, re-saved with one
    gene column more (or fewer), passed as unseen (its spots' hashes cover every gene)."""
    (s, _) = cohort
    a1 = s["A1"]
    copy = _with_gene(a1) if change == "one gene more" else a1[:, list(a1.var_names[1:])].copy()
    assert copy.n_vars == a1.n_vars + (1 if change == "one gene more" else -1)
    path = tmp_path / "prior.histosge"
    _prior([a1, s["A2"]], tmp_path).save(path)
    # 9 genes in all here: a spot with under 3 non-empty gene groups left is not recognised, the rest are
    with pytest.raises(InputError, match=f"fitted on [1-9][0-9] of this section's {a1.n_obs} spots"):
        _fit(_target(HisToSGE.load(path)), copy, tmp_path)
    fine = _fit(_target(str(path)), s["B1"], tmp_path)  # another section: still accepted
    with pytest.raises(InputError, match="context section: the prior was fitted on"):
        fine.predict(s["B1"], context=copy, cache_dir=str(tmp_path / "cache"), progress=False)
