"""Help as people read it: never cut, and every documented default is the code's."""

from __future__ import annotations

import re

import click
import pytest
import typer
from typer.testing import CliRunner

from histosge.cli import app

COMMANDS = sorted(typer.main.get_command(app).commands)


def _command(name: str) -> click.Command:
    return typer.main.get_command(app).commands[name]


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("width", [40, 80])
def test_help_never_cuts_an_option_when_piped_or_narrow(name, width):
    res = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": str(width), "TERMINAL_WIDTH": str(width)})
    assert res.exit_code == 0, res.output
    text = res.output
    assert "…" not in text  # rich's ellipsis: something was cut
    for param in _command(name).params:
        for opt in [*param.opts, *param.secondary_opts]:
            if opt.startswith("-"):
                assert re.search(rf"(^|[\s,/\[]){re.escape(opt)}($|[\s,/\]=])", text, re.M), (name, opt)


def _effective_default(param: click.Parameter):
    """What the code uses when the option is not given: the click default, or (None) the model's."""
    if param.default is not None:
        return param.default
    from histosge.model.train import DEFAULT_NETWORK

    field = param.name
    if hasattr(DEFAULT_NETWORK, field):
        return getattr(DEFAULT_NETWORK, field)
    raise AssertionError(f"--{param.name}: help documents a default the test cannot find in the code")


def test_every_documented_default_is_the_codes():
    checked = 0
    for name in COMMANDS:
        for param in _command(name).params:
            text = getattr(param, "help", None) or ""
            for documented in re.findall(r"\(default:? (\d+(?:\.\d+)?)\b", text):
                actual = _effective_default(param)
                assert float(documented) == float(actual), f"{name} --{param.name}: help says {documented}, " \
                                                           f"code uses {actual}"
                checked += 1
    assert checked >= 3  # --epochs, --group-size, --patience at least
