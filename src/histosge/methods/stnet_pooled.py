"""``stnet+pooled``: ST-Net's head fitted on the other sections' spots pooled with the section's
training spots (benchmark protocols R+ and G+; ``_cohort.Pooled`` says how)."""

from __future__ import annotations

from ._cohort import Pooled
from ._registry import register_method


@register_method("stnet+pooled", description="ST-Net fitted on the other sections' spots pooled with the "
                                             "section's (protocols R+ and G+)", quick_epochs=15, default=True,
                 section_params=("cohort",))
class STNetPooled(Pooled):
    BASE = "stnet"
