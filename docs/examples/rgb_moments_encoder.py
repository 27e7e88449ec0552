"""``rgb-moments``: the mean and the spread of each colour channel of a patch (6 numbers).

A template for a new encoder: the builder returns an ``Encoder`` whose ``forward`` maps the
preprocessed patches (n, 3, input_size, input_size; here RGB in [0, 1], since mean is 0 and
std 1) to (n, dim) features. What preprocessing needs travels in the registration, and
``weights_id`` names the weights in the feature cache's key; an encoder registered from outside
histosge is keyed on its code too, so editing ``forward`` never reuses stale features.
"""

from __future__ import annotations

import torch

from histosge.encode import Encoder, register_encoder


class RGBMoments(Encoder):
    torch_threads = 1  # too little work to share between threads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


@register_encoder(name="rgb-moments", dim=6, input_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                  interpolation="bilinear", licence="MIT (no weights)", offline=True, hub_files=(),
                  description="mean and standard deviation of each RGB channel, 6-d")
def build(spec, weights, device, arch_overrides):
    return RGBMoments(spec, None, weights_id="rgb-moments-1")
