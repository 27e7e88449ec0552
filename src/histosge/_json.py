"""JSON-ready values: what a model file's description and an output's ``uns`` can hold.

numpy scalars and arrays become Python numbers and lists, tuples become lists, dictionary keys
strings, and an object with ``to_dict`` (a ``TrainConfig``) its dict; ``drop_none`` leaves out the
entries of a dictionary whose value is None (h5ad's ``uns`` cannot store None).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def jsonable(obj: Any, *, drop_none: bool = True) -> Any:
    """``obj`` as plain JSON values (see the module docstring)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v, drop_none=drop_none) for k, v in obj.items() if not (drop_none and v is None)}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, drop_none=drop_none) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return jsonable(obj.to_dict(), drop_none=drop_none)
    return obj
