"""The worked example of docs/YOUR_DATA.md: a her2st section in STUtility's layout, read as it is.

``bench/stutility_layout.py`` writes the section as STUtility users have it (genes x spots
counts, the spot detector's table, the JPEG); ``--checkerboard`` keeps the x + y even spots,
the lattice of the mouse olfactory bulb arrays. The folder must read like the original, and
superres must run on the checkerboard from the command line.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from histosge.cli import app
from histosge.read import read_her2st, read_section
from histosge.read.checks import InputWarning

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "stutility_layout.py"


def convert(data_dir: Path, out: Path, *extra: str) -> str:
    res = subprocess.run([sys.executable, str(SCRIPT), "--data", str(data_dir), "--section", "C2", "--out", str(out),
                          *extra], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_stutility_layout_reads_like_her2st(data_dir, tmp_path):
    convert(data_dir, tmp_path / "c2")
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        a = read_section(tmp_path / "c2")
    b = read_her2st(data_dir / "her2st", "C2")
    assert a.obs_names.equals(b.obs_names) and a.var_names.equals(b.var_names)
    assert (a.X != b.X).nnz == 0
    np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])
    assert a.uns["histosge"]["grid"] == "square" and a.uns["histosge"]["alignment"]["status"] == "ok"


@pytest.mark.slow
def test_checkerboard_superres_from_the_command_line(data_dir, tmp_path):
    out = convert(data_dir, tmp_path / "mob", "--checkerboard")
    assert "parity [0]" in out
    a = read_section(tmp_path / "mob")
    assert a.uns["histosge"]["grid"] == "checkerboard" and a.uns["histosge"]["spot_diameter_um"] == 100.0
    result = tmp_path / "mob_superres.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = CliRunner().invoke(app, ["superres", str(tmp_path / "mob"), "-o", str(result), "--n-top-genes", "50",
                                       "--epochs", "2", "--quiet", "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    import anndata as ad

    sr = ad.read_h5ad(result)
    generated = sr.obs["spot_type"] == "generated"
    assert generated.sum() > a.n_obs  # midpoints between diagonal neighbours and cell centres
    assert sr.uns["histosge"]["grid"] == "checkerboard"
