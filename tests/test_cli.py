"""The CLI: thin over the API, one-line errors with exit status 2, nothing half-written."""

import warnings

import pytest
from typer.testing import CliRunner

from histosge.cli import app

runner = CliRunner()


def run(*args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return runner.invoke(app, [str(a) for a in args])


def test_recover_cli_end_to_end(data_dir, tmp_path):
    out = tmp_path / "rec.h5ad"
    res = run("recover", "her2st:C2", "--data-dir", data_dir, "-o", out, "--epochs", "2", "--n-top-genes", "100",
              "--cache-dir", tmp_path / "cache", "--quiet", "--plot")
    assert res.exit_code == 0, res.output
    assert out.exists() and (tmp_path / "rec_genes.png").exists()
    assert "held-out score" in res.output and "pcc" in res.output


def test_superres_cli_end_to_end(data_dir, tmp_path):
    out = tmp_path / "sr.h5ad"
    res = run("superres", data_dir / "visium_mouse_brain_crop" / "test_data.h5ad", "-o", out, "--epochs", "2",
              "--cache-dir", tmp_path / "cache", "--quiet")
    assert res.exit_code == 0, res.output
    assert out.exists() and "generated" in res.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (["superres", "/nonexistent/folder", "-o", "{tmp}/x.h5ad"], "/nonexistent/folder"),
        (["superres", "her2st:C2", "-o", "/nonexistent/dir/x.h5ad"], "output folder does not exist"),
        (["recover", "her2st:C2", "-o", "{tmp}/x.h5ad", "--holdout", "2"], "--holdout"),
        (["recover", "her2st:C2", "-o", "{tmp}/x.h5ad", "--method", "magic"], "--method"),
        (["recover", "her2st:C2", "-o", "{tmp}/x.h5ad", "--encoder", "no-such-encoder"], "no-such-encoder"),
        (["superres", "her2st:Z9", "-o", "{tmp}/x.h5ad"], "Z9"),
        (["superres", "her2st:C2", "-o", "{tmp}/x.h5ad", "--factor", "8"], "--factor"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(data_dir, tmp_path, args, needle):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    res = run(*args, "--data-dir", data_dir, "--epochs", "1", "--cache-dir", tmp_path / "cache", "--quiet")
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output
    assert not list(tmp_path.glob("*.h5ad")) and not list(tmp_path.glob("*.part"))


def test_read_only_output_folder(data_dir, tmp_path):
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that can write anywhere (root): read-only folder not enforceable")
        res = run("recover", "her2st:C2", "--data-dir", data_dir, "-o", ro / "x.h5ad", "--quiet")
        assert res.exit_code == 2 and "not writable" in res.output
    finally:
        ro.chmod(0o700)


def test_encoders_command_lists_default():
    res = run("encoders")
    assert res.exit_code == 0, res.output
    assert "(default)" in res.output and "uni" in res.output


def test_bench_cli_quick(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HISTOSGE_DATA", str(data_dir))  # --data defaults to it
    res = run("bench", "--out", tmp_path / "b", "--quick", "--sections", "her2st/C2",
              "--protocols", "R", "--methods", "mean,knn,histosge")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "b" / "results.jsonl").exists() and (tmp_path / "b" / "report.md").exists()


def test_bench_cli_without_a_data_folder_says_how_to_give_one(tmp_path, monkeypatch):
    monkeypatch.delenv("HISTOSGE_DATA", raising=False)
    res = run("bench", "--out", tmp_path / "b")
    assert res.exit_code == 2 and "--data" in res.output and "HISTOSGE_DATA" in res.output


def test_bench_cli_bad_seeds(data_dir, tmp_path):
    res = run("bench", "--data", data_dir, "--out", tmp_path / "b", "--seeds", "x")
    assert res.exit_code == 2 and "--seeds" in res.output
