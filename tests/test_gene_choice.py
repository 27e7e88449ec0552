"""Genes by name (issue 25): what a model predicts, and every way a user can name genes wrong.

Named genes are predicted whatever their variance, besides the --n-top-genes HVGs (or every
detected gene with --all-genes); every bad list is one line naming the fix, exit 2, before any
work, nothing written.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

import histosge
from histosge.cli import app, plot_option_value
from histosge.errors import InputError
from histosge.genes import GeneChoice, check_named, choose_genes, parse_gene_names, select_hvgs
from histosge.model import HisToSGE

SMALL = {"epochs": 2, "dim": 32, "mlp_dim": 32}


def _section(n_spots=200, n_genes=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.poisson(rng.gamma(0.5, 2.0, n_genes) * rng.uniform(0.5, 2.0, (n_spots, 1)))
    a = ad.AnnData(X=sp.csr_matrix(X.astype(np.float32)), var=pd.DataFrame(index=[f"G{i}" for i in range(n_genes)]))
    a.obs_names = [f"s{i}" for i in range(n_spots)]
    return a


def _cli(*args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def legacy(make_legacy_st):
    """A small her2st-layout folder (sections A1, A2; genes G0..G8)."""
    make_legacy_st("A2", seed=1, n_x=9)
    return make_legacy_st("A1", seed=0)


# -- the choice ------------------------------------------------------------------------------------
def test_named_genes_are_added_to_the_hvgs_and_the_default_is_unchanged():
    a = _section()
    hvgs, flavour = select_hvgs(a, 10)
    assert choose_genes(a, GeneChoice(n_top=10)) == (hvgs, flavour)  # no gene named: exactly as before
    assert choose_genes(a, 10) == (hvgs, flavour)
    low = [g for g in a.var_names if g not in hvgs][:2]  # genes the HVGs leave out
    genes, _ = choose_genes(a, GeneChoice(named=(low[1], hvgs[0], low[0]), n_top=10))
    assert genes == hvgs + [low[1], low[0]]  # HVGs first, then the named ones not among them, in order
    assert choose_genes(a, GeneChoice(named=(low[0],), n_top=0))[0] == [low[0]]


def test_all_genes_keeps_every_gene_detected_in_one_percent_of_the_training_spots():
    a = _section()
    X = a.X.toarray()
    X[:, 3] = 0
    X[:1, 3] = 5  # detected in 1 of 200 spots: below 1%
    X[:, 4] = 0
    X[:2, 4] = 1  # 2 of 200: exactly 1%
    a.X = sp.csr_matrix(X)
    genes, how = choose_genes(a, GeneChoice(all_genes=True))
    assert "G3" not in genes and "G4" in genes and len(genes) == (np.asarray((X > 0).sum(0)) >= 2).sum()
    assert "1%" in how
    assert "G3" in choose_genes(a, GeneChoice(named=("G3",), all_genes=True))[0]  # named: always predicted


def test_unknown_names_suggest_close_ones():
    with pytest.raises(InputError, match=r"ERBB22 -> did you mean ERBB2\?.*XYZ9 \(no close name\)") as e:
        check_named(["ERBB22", "XYZ9", "GRB7"], ["ERBB2", "GRB7", "KRT19"])
    assert e.value.where == "--genes" and "case matters" in e.value.fix
    with pytest.raises(InputError, match="did you mean ERBB2"):
        check_named(["erbb2"], ["ERBB2", "GRB7"])  # case differs: still found


def test_gene_lists_from_text_and_files(tmp_path):
    assert parse_gene_names("ERBB2, GRB7,,ERBB2") == (["ERBB2", "GRB7"], ["ERBB2"])  # duplicates kept once, said
    f = tmp_path / "genes.txt"
    f.write_text("# my panel\nERBB2\nGRB7  # amplicon\n\nKRT19\n")
    assert parse_gene_names(str(f)) == (["ERBB2", "GRB7", "KRT19"], [])
    for bad, needle in [(",", "the gene list is empty"), (str(tmp_path / "missing.txt"), "gene list file not found"),
                        ("3000", "use --n-top-genes 3000")]:
        with pytest.raises(InputError, match=needle):
            parse_gene_names(bad)
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(InputError, match="holds no gene name"):
        parse_gene_names(str(tmp_path / "empty.txt"))


def test_nothing_to_predict_is_refused():
    with pytest.raises(InputError, match="no gene to predict"):
        GeneChoice(n_top=0)
    with pytest.raises(InputError, match=">= 0"):
        GeneChoice(n_top=-3)
    with pytest.raises(InputError, match="no gene to predict"):
        HisToSGE(n_top_genes=0)
    with pytest.raises(InputError, match="n_genes is now n_top_genes"):
        histosge.superres(_section(), n_genes=50)


# -- through the model --------------------------------------------------------------------------
def test_named_genes_go_through_train_save_load_predict(legacy, tmp_path):
    a1 = histosge.read_section("her2st:A1", data_dir=legacy.parent)
    a2 = histosge.read_section("her2st:A2", data_dir=legacy.parent)
    model = HisToSGE("image", genes=["G8", "G7"], n_top_genes=3, network=SMALL, seed=0).fit(
        [a1, a2], cache_dir=str(tmp_path / "cache"), progress=False)
    assert model.genes_[-2:] == ["G8", "G7"] or {"G8", "G7"} <= set(model.genes_)
    assert model.training_["sections"][0]["dataset"] == "her2st"
    path = tmp_path / "m.histosge"
    model.save(path)
    back = HisToSGE.load(path)
    assert back.genes == ("G8", "G7") and back.get_params()["n_top_genes"] == 3
    out = back.predict(a2, cache_dir=str(tmp_path / "cache"), progress=False)
    assert {"G8", "G7"} <= set(out.var_names)
    assert out.var["cv_pcc"].notna().all() and out.var["reliable"].dtype == bool
    assert out.uns["histosge"]["gene_choice"]["named"] == ["G8", "G7"]
    assert out.uns["histosge"]["reliability"]["estimated"]


def test_sparse_named_genes_are_predicted_with_a_warning_and_never_reliable(legacy, tmp_path):
    a1 = histosge.read_section("her2st:A1", data_dir=legacy.parent)
    X = a1.X.toarray()
    X[:, 5] = 0
    X[0, 5] = 3  # G5 detected in one spot of ~50
    a1.X = sp.csr_matrix(X)
    with pytest.warns(UserWarning, match=r"G5 \(1 spots\).*never marked reliable"):
        rec = histosge.recover(a1, genes=["G5"], n_top_genes=3, epochs=2, progress=False,
                               cache_dir=str(tmp_path / "cache"))
    assert "G5" in rec.var_names and not rec.var.loc["G5", "reliable"]


def test_plot_takes_an_optional_gene_list():
    assert plot_option_value(["superres", "x", "--plot"]) == ["superres", "x", "--plot="]
    assert plot_option_value(["superres", "x", "--plot", "-o", "y"]) == ["superres", "x", "--plot=", "-o", "y"]
    assert plot_option_value(["predict", "m", "--plot", "ERBB2,GRB7"]) == ["predict", "m", "--plot", "ERBB2,GRB7"]
    for not_genes in ("her2st:C2", "slide.ome.tif", "dir/x"):
        assert plot_option_value(["superres", "--plot", not_genes])[1] == "--plot="


# -- bad input from the command line: one line, exit 2, nothing written ------------------------------
@pytest.mark.parametrize("args, needle", [
    (["--genes", "G88,G1"], "G88 -> did you mean G8?"),
    (["--genes", ","], "the gene list is empty"),
    (["--genes", "nowhere/genes.txt"], "gene list file not found"),
    (["--genes", "3000"], "use --n-top-genes 3000"),
    (["--n-top-genes", "0"], "no gene to predict"),
    (["--plot", "G1,NOPE"], "--plot: 1 named gene is not measured"),
])
def test_bad_gene_lists_fail_before_any_work(legacy, tmp_path, args, needle):
    out = tmp_path / "x.h5ad"
    cache = tmp_path / "cache"
    res = _cli("superres", "her2st:A1", "--data-dir", legacy.parent, "-o", out, *args, "--cache-dir", cache,
               "--quiet")
    assert res.exit_code == 2, res.output
    assert needle in " ".join(res.output.split()) and "Traceback" not in res.output
    assert not out.exists() and not (tmp_path / "x_genes.png").exists()
    assert not cache.exists() or not any(cache.rglob("*.npy"))  # no image was encoded


def test_empty_gene_file_and_duplicates_from_the_cli(legacy, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    res = _cli("train", "her2st:A1", "--data-dir", legacy.parent, "-o", tmp_path / "m.histosge", "--genes", empty)
    assert res.exit_code == 2 and "holds no gene name" in res.output and not (tmp_path / "m.histosge").exists()
    res = _cli("recover", "her2st:A1", "--data-dir", legacy.parent, "-o", tmp_path / "r.h5ad", "--genes",
               "G8,G8", "--n-top-genes", "2", "--epochs", "1", "--quiet", "--cache-dir", tmp_path / "cache")
    assert res.exit_code == 0, res.output
    assert "G8 listed more than once; kept once" in " ".join(res.output.split())
    assert list(ad.read_h5ad(tmp_path / "r.h5ad").var_names).count("G8") == 1


def test_a_section_lacking_model_genes_lists_them(legacy, tmp_path):
    a1 = histosge.read_section("her2st:A1", data_dir=legacy.parent)
    model = HisToSGE(genes=["G8"], n_top_genes=3, network=SMALL).fit(a1, cache_dir=str(tmp_path / "c"),
                                                                    progress=False)
    path = tmp_path / "m.histosge"
    model.save(path)
    fewer = a1[:, [g for g in a1.var_names if g != "G8"]].copy()
    fewer.write_h5ad(tmp_path / "fewer.h5ad")
    res = _cli("predict", path, tmp_path / "fewer.h5ad", "-o", tmp_path / "p.h5ad", "--cache-dir", tmp_path / "c",
               "--quiet")
    assert res.exit_code == 2 and "G8" in res.output and "lacks 1 of the model's" in " ".join(res.output.split())
    assert not (tmp_path / "p.h5ad").exists()


def test_plot_genes_the_model_does_not_predict_are_refused_before_predicting(legacy, tmp_path):
    a1 = histosge.read_section("her2st:A1", data_dir=legacy.parent)
    model = HisToSGE("image", n_top_genes=3, network=SMALL).fit(a1, cache_dir=str(tmp_path / "c"), progress=False)
    model.save(tmp_path / "m.histosge")
    missing = next(g for g in a1.var_names if g not in model.genes_)
    res = _cli("predict", tmp_path / "m.histosge", "her2st:A1", "--data-dir", legacy.parent, "-o",
               tmp_path / "p.h5ad", "--plot", missing, "--quiet")
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and f"--plot: 1 named gene is not measured in the model's 3 genes: {missing}" in text
    assert "--genes" in text and not (tmp_path / "p.h5ad").exists()
