"""``he-stats``: hand-crafted H&E features that need no weights and run fast on a CPU.

The features themselves (what they are and why) and their batched computation are in
:mod:`histosge._hestats`. Everything runs in the calling process, on ``HISTOSGE_THREADS``
threads (default: one per core): there are no worker processes, so a script without an
``if __name__ == "__main__":`` guard runs once, and nothing outlives the run.
"""

from __future__ import annotations

import numpy as np
import torch

from .._hestats import DIM, FEATURE_NAMES, VERSION, features_batch, he_features, thread_count
from ..errors import EncoderError
from ._registry import EncoderSpec
from .base import Encoder

__all__ = ["DIM", "FEATURE_NAMES", "HEStatsEncoder", "features_batch", "he_features", "thread_count"]


class HEStatsEncoder(Encoder):
    """Hand-crafted features; ``preprocess`` gives [0, 1] RGB (mean 0, std 1), ``forward`` numpy.

    Torch only resizes the patches here, on one thread: a second one made that 5x slower on the
    2-core development machine (barrier waits while the feature threads hold the cores).
    """

    torch_threads = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        return torch.from_numpy(features_batch(np.asarray(arr))).to(x.device)


def _build_he_stats(
    spec: EncoderSpec, weights: str | None, device: torch.device, arch_overrides: dict | None
):
    if weights is not None and str(weights) != "random":
        raise EncoderError(
            "takes no weights (its features are computed, not learned)",
            where=spec.name,
            fix="drop --weights, or choose a learned encoder",
        )
    return HEStatsEncoder(spec, None, weights_id=VERSION)
