"""Numeric and choice options: one rule, the same line from the CLI and from the Python API."""

from __future__ import annotations

import warnings

import click
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from histosge import options
from histosge.cli import app
from histosge.errors import InputError

runner = CliRunner()

#: (CLI flag, Python keyword, bad value, task) for every validated option.
BAD = [
    ("--n-top-genes", "n_top_genes", -5, "superres"),
    ("--n-top-genes", "n_top_genes", -1, "recover"),
    ("--seed", "seed", -1, "recover"),
    ("--group-size", "group_size", 0, "superres"),
    ("--epochs", "epochs", 0, "superres"),
    ("--patience", "patience", 0, "recover"),
    ("--holdout", "holdout", 1.0, "recover"),
    ("--holdout", "holdout", 0.0, "recover"),
    ("--patch-scale", "patch_scale", 1000000.0, "superres"),
    ("--patch-scale", "patch_scale", 0.0, "recover"),
    ("--batch-size", "batch_size", 0, "superres"),
    ("--factor", "factor", 8, "superres"),
]


def _cli(*args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A tiny section: validation happens before any work, so its content does not matter."""
    import anndata as ad
    import numpy as np
    from conftest import hex_grid

    rows, cols, xs, ys = hex_grid(4, 4, 100.0, (100.0, 100.0))
    a = ad.AnnData(X=np.ones((len(rows), 3), np.float32))
    a.obs["array_row"], a.obs["array_col"] = rows.astype(float), cols.astype(float)
    a.obsm["spatial"] = np.c_[xs, ys]
    return a


@pytest.mark.parametrize("flag, name, value, task", BAD)
def test_same_message_from_cli_and_api(tmp_path, small, flag, name, value, task):
    from histosge import tasks

    with pytest.raises(InputError) as api:
        getattr(tasks, task)(small, **{name: value})
    assert api.value.where.startswith(flag) and api.value.fix.startswith(f"e.g. {flag}")
    with pytest.raises(InputError) as rule:
        options.check(name, value)
    assert rule.value.message == api.value.message
    src = tmp_path / "no-such-section"  # the option must fail before the section is even looked up
    res = _cli(task, src, "-o", tmp_path / "x.h5ad", flag, value)
    assert res.exit_code == 2, res.output
    assert api.value.message in " ".join(res.output.split()), res.output
    assert "Traceback" not in res.output and not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", sorted(options.RULES))
@settings(max_examples=40, deadline=None)
@given(value=st.one_of(st.integers(-10**7, 10**7), st.floats(allow_nan=True, allow_infinity=True)))
def test_rule_accepts_exactly_its_range(name, value):
    import math

    rule = options.RULES[name]
    if isinstance(value, float) and not math.isfinite(value):
        ok = False
    elif rule.kind is int and not float(value).is_integer():
        ok = False
    elif rule.choices is not None:
        ok = value in rule.choices
    else:
        lo_ok = rule.low is None or (value > rule.low if rule.open_low else value >= rule.low)
        hi_ok = rule.high is None or (value < rule.high if rule.open_high else value <= rule.high)
        ok = lo_ok and hi_ok
    try:
        got = options.check(name, value)
    except InputError as err:
        assert not ok, f"{name}={value!r} refused: {err}"
        assert err.where and err.fix and "\n" not in err.message
    else:
        assert ok, f"{name}={value!r} accepted"
        assert got == value and type(got) is rule.kind


def test_optional_and_type_rules():
    assert options.check("epochs", None) is None
    with pytest.raises(InputError, match="whole number"):
        options.check("n_top_genes", 10.5)
    with pytest.raises(InputError):
        options.check("n_top_genes", True)  # a bool is not a count
    with pytest.raises(InputError):
        options.check("seed", None)
    assert options.check("n_top_genes", 10.0) == 10
    import numpy as np

    assert type(options.check("seed", np.int64(3))) is int
    assert options.validate(n_top_genes=5, encoder="uni", cache_dir=None) == {"n_top_genes": 5, "encoder": "uni",
                                                                           "cache_dir": None}


@pytest.mark.parametrize("text", ["foo", "cuda:x", "gpu", "cpu:0", "cuda:-1", "mps:1", ""])
def test_unknown_devices(text):
    with pytest.raises(InputError, match="unknown device") as err:
        options.parse_device(text)
    assert err.value.where == "--device"


def test_known_devices():
    import torch

    assert options.parse_device(" CPU ") == "cpu"
    assert options.parse_device(None) is None
    if torch.cuda.is_available():
        assert options.parse_device("cuda:0") == "cuda:0"
        n = torch.cuda.device_count()
        with pytest.raises(InputError, match="does not exist"):
            options.parse_device(f"cuda:{n}")
    else:
        with pytest.raises(InputError, match="CUDA is not available"):
            options.parse_device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        with pytest.raises(InputError, match="MPS"):
            options.parse_device("mps")


def test_device_error_from_the_cli(tmp_path):
    res = _cli("recover", tmp_path / "nothing", "-o", tmp_path / "x.h5ad", "--device", "foo")
    assert res.exit_code == 2 and "--device: unknown device 'foo'" in res.output


def _commands():
    group = typer.main.get_command(app)
    return {name: cmd for name, cmd in group.commands.items()}


@pytest.mark.parametrize("command", ["superres", "recover", "encoders", "bench"])
def test_every_option_has_a_help_text(command):
    cmd = _commands()[command]
    missing = [p.name for p in cmd.params if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert not missing, f"{command}: options without help: {missing}"


def test_help_states_the_enforced_range():
    params = {p.name: p for p in _commands()["superres"].params}
    assert options.RULES["patch_scale"].describe() in params["patch_scale"].help
    assert options.RULES["n_top_genes"].describe() in params["n_top_genes"].help
