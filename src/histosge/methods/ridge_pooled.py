"""``ridge+pooled``: the ridge probe fitted on the other sections' spots pooled with the section's
training spots (benchmark protocols R+ and G+; ``_cohort.Pooled`` says how)."""

from __future__ import annotations

from ._cohort import Pooled
from ._registry import register_method


@register_method("ridge+pooled", description="ridge fitted on the other sections' spots pooled with the section's "
                                             "(protocols R+ and G+)", default=True, section_params=("cohort",))
class RidgePooled(Pooled):
    BASE = "ridge"
