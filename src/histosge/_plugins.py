"""Plugins: installed packages that add encoders, methods or readers through entry points.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."histosge.encoders"]
    mine = "my_package.encoders"            # a module whose import registers its encoders

and histosge imports it the first time the registry is asked (``histosge encoders``, ``--encoder
mine``), as scanpy and napari find their plugins (``importlib.metadata.entry_points``). The groups are
``histosge.encoders`` (``register_encoder``), ``histosge.methods`` (``register_method``) and
``histosge.readers`` (``register_reader``, or a ``Reader`` object the entry point names). A plugin
that fails to load is reported with a warning naming it and the error, and the rest go on.
"""

from __future__ import annotations

import warnings
from typing import Any

#: The entry-point groups histosge reads, and what each plugin registers.
GROUPS = ("histosge.encoders", "histosge.methods", "histosge.readers")

_loaded: dict[str, dict[str, Any]] = {}


def load_entry_points(group: str) -> dict[str, Any]:
    """Load every installed plugin of entry-point ``group`` once; what each entry point named.

    Parameters
    ----------
    group : str
        One of ``GROUPS``.

    Returns
    -------
    dict
        Entry-point name -> the loaded object (a module, a class, a ``Reader``...), for those
        that loaded.
    """
    if group in _loaded:
        return _loaded[group]
    from importlib.metadata import entry_points

    found: dict[str, Any] = {}
    _loaded[group] = found  # set first: a plugin that asks the registry while loading does not recurse
    for ep in entry_points(group=group):
        try:
            found[ep.name] = ep.load()
        except Exception as err:  # noqa: BLE001 - a broken plugin must not break histosge
            warnings.warn(f"histosge plugin {ep.name!r} ({group} = {ep.value}) failed to load: "
                          f"{type(err).__name__}: {err}; it is skipped (pip uninstall its package or fix it)",
                          stacklevel=2)
    return found


def import_target(target: str) -> Any:
    """The object a ``"module:attr"`` string names (a registration's class or builder, imported on
    first use so a registry lists without importing torch)."""
    import importlib

    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def reload() -> None:
    """Forget which plugins were loaded (tests install a plugin, then list again)."""
    _loaded.clear()
