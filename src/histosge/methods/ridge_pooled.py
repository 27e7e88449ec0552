"""``ridge+pooled``: the ridge probe fitted on the other sections' spots pooled with the section's
training spots (benchmark protocols R+ and G+; ``_cohort.Pooled`` says how)."""

from __future__ import annotations

from ._cohort import Pooled
from ._registry import builtin


@builtin("ridge+pooled")  # its spec: methods/_builtin.py
class RidgePooled(Pooled):
    BASE = "ridge"
