"""Listing commands, --help and every error found before work import nothing heavy.

Each command runs in a fresh interpreter (as the ``histosge`` script does); after it, the test reads
``sys.modules`` and the peak memory of that interpreter. torch, timm and scanpy are imported only
by commands that compute something (bench/light_commands.py times old against new).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "timm", "scanpy")
PEAK_MB = 300

_RUN = textwrap.dedent("""
    import json, sys
    sys.argv = ["histosge", *json.loads(sys.argv[1])]
    from histosge.cli import main
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    # VmHWM: this process's peak resident memory since exec (ru_maxrss would count the forked parent's)
    peak = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")) / 1024
    print("@@" + json.dumps({"code": code, "heavy": [m for m in __HEAVY__ if m in sys.modules], "peak_mb": peak}))
""").replace("__HEAVY__", repr(HEAVY))


def run_light(args: list[str], cwd: Path, env_extra: dict | None = None) -> dict:
    import os

    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "120", **(env_extra or {})}
    res = subprocess.run([sys.executable, "-c", _RUN, json.dumps(args)], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=300)
    line = [x for x in res.stdout.splitlines() if x.startswith("@@")]
    assert line, res.stdout + res.stderr
    out = json.loads(line[-1][2:])
    out["text"] = res.stdout + res.stderr
    return out


@pytest.fixture(scope="module")
def section(tmp_path_factory, request):
    """A small Space Ranger folder (conftest's builder, made once for the module)."""
    make = request.getfixturevalue("make_spaceranger")
    return make("light")


@pytest.fixture(scope="module")
def model_file(section, tmp_path_factory):
    """A saved 'mean' model (no image read): predict's --plot is checked against its genes."""
    import warnings

    import histosge
    from histosge import methods

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = histosge.read_section(section)
        model = methods.create_model("mean", n_genes=5).fit([adata], progress=False)
    path = tmp_path_factory.mktemp("model") / "mean.histosge"
    model.save(path)
    return path


# module-scoped use of the function-scoped conftest factory
@pytest.fixture(scope="module")
def make_spaceranger(tmp_path_factory):
    import conftest

    return conftest.make_spaceranger.__wrapped__(tmp_path_factory.mktemp("sections"))


def _cases(section: Path, model: Path, out: Path) -> dict[str, tuple[list[str], int, str]]:
    sec, o = str(section), str(out / "o.h5ad")
    return {
        "encoders": (["encoders"], 0, "he-stats (default)"),
        "methods": (["methods"], 0, "histosge-paper"),
        "--help": (["--help"], 0, "superres"),
        "superres --help": (["superres", "--help"], 0, "--no-alignment-check"),
        "predict --help": (["predict", "--help"], 0, "--mpp"),
        "path that does not exist": (["superres", str(out / "nope" / "151673"), "-o", o], 2,
                                     "no such file or folder"),
        "bad option": (["superres", sec, "-o", o, "--genes", "0"], 2, "--genes"),
        "bad device": (["superres", sec, "-o", o, "--device", "cpu:1"], 2, "--device"),
        "unknown encoder": (["superres", sec, "-o", o, "--encoder", "unii"], 2, "unknown encoder 'unii'"),
        "unknown method": (["recover", sec, "-o", o, "--method", "ridgee"], 2, "unknown method 'ridgee'"),
        "unknown marker gene": (["superres", sec, "-o", o, "--plot", "--markers", "NOTAGENE"], 2, "NOTAGENE"),
        "train: path that does not exist": (["train", str(out / "nope.h5ad"), "-o", str(out / "m.histosge")], 2,
                                            "no such file or folder"),
        "train: unknown mode": (["train", sec, "-o", str(out / "m.histosge"), "--mode", "imagee"], 2, "--mode"),
        "predict: unknown gene": (["predict", str(model), sec, "-o", o, "--plot", "NOTAGENE"], 2,
                                  "does not predict NOTAGENE"),
    }


CASES = list(_cases(Path("s"), Path("m"), Path("o")))


@pytest.mark.parametrize("case", CASES)
def test_light_command_imports_nothing_heavy(case, section, model_file, tmp_path):
    args, code, expect = _cases(section, model_file, tmp_path)[case]
    res = run_light(args, cwd=tmp_path)
    assert res["code"] == code, res["text"]
    assert expect in res["text"], res["text"]
    assert res["heavy"] == [], f"{case}: imported {res['heavy']}"
    assert res["peak_mb"] <= PEAK_MB, f"{case}: peak {res['peak_mb']:.0f} MB"
    assert not (tmp_path / "o.h5ad").exists() and not (tmp_path / "m.histosge").exists()  # nothing written
