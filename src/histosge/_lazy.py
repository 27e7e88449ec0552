"""Names a package hands on but imports only when first asked for (PEP 562), so that importing
the package stays light (no torch) until a heavy name is used."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_names(package: str, names: dict[str, str], namespace: dict) -> Callable[[str], object]:
    """The module-level ``__getattr__`` of ``package``: ``names`` maps a name to the module that
    defines it (relative to ``package``, or absolute); a name asked for is imported once and kept
    in ``namespace`` (the package's ``globals()``)."""

    def __getattr__(name: str):
        if name in names:
            value = getattr(importlib.import_module(names[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
