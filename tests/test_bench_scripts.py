"""Every bench/ script imports, and every ``histosge`` name it imports resolves, at any depth.

The scripts of bench/ reproduce committed numbers; most import histosge inside ``main`` or a
helper, where ruff does not look and only a run would notice a name that moved (issue 28:
``bench/bench_hestats.py`` imported ``histosge.tasks._spot_diameter`` long after it was gone).
So each script's syntax tree is read, every ``import histosge...`` / ``from histosge... import
name`` in it (at module level or inside any function) is resolved against the code as it is,
and each script is imported as a module (its ``main`` is not run).

They also use only histosge's public names: no private module (``histosge._x``) nor private name
(``_x``). ``PRIVATE_ALLOWED`` lists the exceptions and why.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(BENCH.glob("*.py"))
#: Scripts allowed private names, and why.
PRIVATE_ALLOWED = {
    # it loads the methods' source at an older commit (the cost before issue 29), whose relative
    # imports name the private modules, and patches the registration call those imports make
    "baseline_epoch_cost.py",
}


def _histosge_imports(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, module, name or None) of every histosge import in ``path``, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, None) for a in node.names if a.name.split(".")[0] == "histosge"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "histosge":
            out += [(node.lineno, node.module, a.name) for a in node.names]
    return out


def test_the_bench_scripts_are_found():
    assert len(SCRIPTS) >= 25 and BENCH / "bench_hestats.py" in SCRIPTS
    assert sum(len(_histosge_imports(p)) for p in SCRIPTS) > 100


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_every_histosge_import_of_a_bench_script_resolves(path):
    missing = []
    for line, module, name in _histosge_imports(path):
        try:
            mod = importlib.import_module(module)
        except ImportError as err:
            missing.append(f"{path.name}:{line}: import {module} ({err})")
            continue
        if name is not None and not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")  # a submodule
            except ImportError:
                missing.append(f"{path.name}:{line}: {module} has no {name}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("path", [p for p in SCRIPTS if p.name not in PRIVATE_ALLOWED], ids=lambda p: p.name)
def test_bench_scripts_use_public_names_only(path):
    private = [f"{path.name}:{line}: {module}{'' if name is None else ' import ' + name}"
               for line, module, name in _histosge_imports(path)
               if any(part.startswith("_") for part in module.split(".")) or (name or "").startswith("_")]
    assert not private, "\n".join(private)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_every_bench_script_imports(path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(f"bench_{path.stem}", None)
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"
