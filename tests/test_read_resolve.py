"""read_section: paths and dataset names lead to the right reader; unknown names list the known ones."""

from __future__ import annotations

import shutil

import pytest

from histosge.errors import InputError
from histosge.read import read_section
from histosge.read.resolve import known_sections


@pytest.fixture
def data_root(tmp_path, make_spaceranger, make_legacy_st):
    """A data folder laid out like the shared one: dlpfc/<id>, her2st/, an .h5ad folder."""
    make_legacy_st("B1")
    folder = make_spaceranger("151500")
    (tmp_path / "dlpfc").mkdir()
    shutil.move(folder, tmp_path / "dlpfc" / "151500")
    a = read_section(tmp_path / "dlpfc" / "151500")
    (tmp_path / "crop").mkdir()
    a.write_h5ad(tmp_path / "crop" / "crop.h5ad")
    return tmp_path


def test_names_and_paths(data_root):
    assert known_sections(data_root) == ["dlpfc:151500", "her2st:B1", "crop"]  # datasets by name, then folders
    a = read_section("dlpfc:151500", data_dir=data_root)
    assert a.uns["histosge"]["library_id"] == "151500" and a.n_obs == 77
    assert read_section("dlpfc/151500", data_dir=data_root).n_obs == 77
    assert read_section("her2st:B1", data_dir=data_root).uns["histosge"]["grid"] == "square"
    assert read_section("crop", data_dir=data_root).n_obs == 77
    assert read_section(str(data_root / "crop" / "crop.h5ad")).n_obs == 77
    assert read_section(data_root / "dlpfc" / "151500" / "filtered_feature_bc_matrix.h5").n_obs == 77


def test_env_variable_is_the_default(data_root, monkeypatch):
    monkeypatch.setenv("HISTOSGE_DATA", str(data_root))
    assert read_section("her2st:B1").n_obs == 53


def test_unknown_name_lists_known(data_root):
    with pytest.raises(InputError) as err:
        read_section("her2st:Z9", data_dir=data_root)
    assert "B1" in str(err.value)
    with pytest.raises(InputError) as err:
        read_section("dlpfc:999", data_dir=data_root)
    assert "dlpfc:151500" in str(err.value) and "her2st:B1" in str(err.value)


def test_no_data_dir(monkeypatch):
    monkeypatch.delenv("HISTOSGE_DATA", raising=False)
    with pytest.raises(InputError, match="HISTOSGE_DATA"):
        read_section("her2st:C2")


def test_her2st_root_folder_asks_for_a_section(data_root):
    with pytest.raises(InputError, match=r"give one section as her2st:\w+ --data-dir .* or its files: --counts"):
        read_section(data_root / "her2st")


def test_real_names(data_dir):
    names = known_sections(data_dir)
    for name in ("her2st:B4", "her2st:C2", "her2st:C3", "her2st:C4", "dlpfc:151673", "dlpfc:151676"):
        assert name in names
    assert "visium_mouse_brain_crop" in names
    assert read_section("dlpfc:151676", data_dir=data_dir).n_obs == 3460
