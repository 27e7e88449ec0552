"""Legacy ST from the command line: a section as three files, folders of several sections, dropped spots.

STUtility writes a section as ``MOB1.tsv`` (genes x spots), ``alignment_table_MOB1.tsv`` (the spot
detector's table, with ``selected``) and ``MOB1.jpg``; her2st as ``ST-cnts/C2.tsv.gz``,
``ST-spotfiles/C2_selection.tsv`` and a JPEG. Both are given with ``--counts --spots --image`` on
superres, recover and train, without renaming anything.
"""

from __future__ import annotations

import gzip
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from histosge.cli import app

FAST = ["--method", "knn", "--genes", "5", "--quiet"]


def stutility(her2st_root: Path, folder: Path, name: str = "MOB1", section: str = "A1") -> tuple[Path, Path, Path]:
    """Section ``section`` of a her2st-layout folder rewritten as STUtility names its files."""
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(her2st_root / "ST-cnts" / f"{section}.tsv.gz", "rt") as f:
        counts = pd.read_csv(f, sep="\t", index_col=0)
    counts.T.to_csv(folder / f"{name}.tsv", sep="\t")  # genes as rows, spots as columns
    shutil.copy(her2st_root / "ST-spotfiles" / f"{section}_selection.tsv", folder / f"alignment_table_{name}.tsv")
    img = next((her2st_root / "ST-imgs" / section[0] / section).iterdir())
    shutil.copy(img, folder / f"{name}.jpg")
    return folder / f"{name}.tsv", folder / f"alignment_table_{name}.tsv", folder / f"{name}.jpg"


def invoke(args: list[str]):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})


def test_superres_reads_a_stutility_section_given_as_three_files(make_legacy_st, tmp_path):
    counts, spots, image = stutility(make_legacy_st("A1"), tmp_path / "stutility")
    out = tmp_path / "mob1.h5ad"
    res = invoke(["superres", "--counts", counts, "--spots", spots, "--image", image, "-o", out, *FAST])
    assert res.exit_code == 0, res.output
    assert out.exists()
    # the fixture's spot table marks 2 counted spots selected = 0, and one selected spot has no counts
    text = " ".join(res.output.split())
    assert "dropped on reading" in text and "2 not selected (selected = 0)" in text
    assert "1 selected but without counts" in text
    assert "correction network" in text and "none (the knn method has none)" in text


def test_recover_and_train_take_the_her2st_files(make_legacy_st, tmp_path):
    root = make_legacy_st("A1")
    files = ["--counts", root / "ST-cnts" / "A1.tsv.gz", "--spots", root / "ST-spotfiles" / "A1_selection.tsv",
             "--image", next((root / "ST-imgs" / "A" / "A1").iterdir())]
    res = invoke(["recover", *files, "-o", tmp_path / "rec.h5ad", *FAST])
    assert res.exit_code == 0, res.output
    assert "held-out score" in res.output
    res = invoke(["train", *files, "-o", tmp_path / "a1.histosge", *FAST])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "a1.histosge").exists() and "dropped on reading" in res.output


def test_a_stutility_folder_of_one_section_reads_as_it_is(make_legacy_st, tmp_path):
    stutility(make_legacy_st("A1"), tmp_path / "one")
    res = invoke(["superres", tmp_path / "one", "-o", tmp_path / "o.h5ad", *FAST])
    assert res.exit_code == 0, res.output


def test_a_folder_of_several_sections_lists_them_with_the_cli_options(make_legacy_st, tmp_path):
    root = make_legacy_st("A1")
    stutility(root, tmp_path / "many", "MOB1")
    stutility(root, tmp_path / "many", "MOB2")
    res = invoke(["superres", tmp_path / "many", "-o", tmp_path / "o.h5ad", *FAST])
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "2 legacy-ST sections" in text and "mob1, mob2" in text
    assert f"--counts {tmp_path / 'many' / 'MOB1.tsv'} --spots {tmp_path / 'many' / 'alignment_table_MOB1.tsv'}" \
           in text and "data_dir=" not in text


def test_a_her2st_folder_says_how_to_pick_a_section_on_the_command_line(make_legacy_st, tmp_path):
    root = make_legacy_st("A1")
    res = invoke(["superres", root, "-o", tmp_path / "o.h5ad", *FAST])
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert f"her2st:A1 --data-dir {root.parent}" in text and "--counts" in text and "with data_dir=" not in text


@pytest.mark.parametrize("args, where", [
    (["--counts", "c.tsv", "--spots", "s.tsv"], "--image"),
    (["--spots", "s.tsv", "--image", "i.jpg"], "--counts"),
])
def test_three_files_or_nothing(args, where, tmp_path):
    res = invoke(["superres", *args, "-o", tmp_path / "o.h5ad"])
    assert res.exit_code == 2 and f"{where}" in res.output and "missing" in res.output


def test_summary_says_whether_the_correction_network_was_used_and_why_not():
    from histosge.cli import _correction_row

    def row(history, method="histosge"):
        return _correction_row({"model": {} if history is None else {"history": history}}, method)[0][1]

    assert row(None, "knn") == "none (the knn method has none)"
    assert row({"skipped": "correction not trained: 40 validation spots < 100"}).startswith(
        "not used: correction not trained: 40 validation spots < 100")
    assert row({"initial_val_loss": 0.2, "epochs_run": 5, "outcome": "5/300 epochs"}).startswith(
        "not used: it never beat")
    assert row({"initial_val_loss": 0.2, "best_epoch": 12, "outcome": "32/300 epochs; best epoch 12 kept"}) == \
        "used: 32/300 epochs; best epoch 12 kept"
    assert row({"epochs_run": 1000}, "histosge-paper").startswith("none (paper mode")
