"""The Encoder module every registry entry returns.

An :class:`Encoder` wraps a backbone and knows its own preprocessing: ``preprocess`` turns uint8 RGB
patches of any size into the normalised ``(n, 3, input_size, input_size)`` tensor the backbone was
trained on, and ``forward`` returns the ``(n, dim)`` embedding. Resizing happens in torch on
whatever device the patches are on, so on a GPU the CPU only decodes and crops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._registry import EncoderSpec


@dataclasses.dataclass(frozen=True)
class PatchGeometry:
    """What the patches handed to an encoder cover, in micrometres and pixels.

    ``extract`` sets it as ``encoder.geometry`` before encoding, and passes it as
    ``forward(x, geometry=...)`` to an encoder whose ``forward`` takes a ``geometry`` argument, so an
    encoder can crop what it needs (the spot disc inside a patch of 2 spot diameters, say).

    Attributes
    ----------
    patch_px : int
        Patch side in pixels of the image the patches are cut from (its level 0), before any resize.
    input_size : int
        Patch side in pixels as the encoder receives it (after ``preprocess``).
    spot_diameter_px : float
        The spot diameter in those pixels.
    um_per_px : float or None
        Micrometres per pixel of that image (None when the caller does not know it).
    patch_um : float or None
        Patch side in micrometres.
    spot_diameter_um : float or None
        The spot diameter in micrometres (Visium 55, legacy ST 100).
    um_per_input_px : float or None
        Micrometres per pixel of the encoder's input (``patch_um / input_size``).
    """

    patch_px: int
    input_size: int
    spot_diameter_px: float
    um_per_px: float | None = None
    patch_um: float | None = None
    spot_diameter_um: float | None = None
    um_per_input_px: float | None = None

    @property
    def spot_fraction(self) -> float:
        """The spot diameter as a fraction of the patch side (0.5 at the default patch scale of 2)."""
        return float(self.spot_diameter_px) / float(self.patch_px)


class Encoder(nn.Module):
    """An image encoder in eval mode: ``forward(preprocess(patches)) -> (n, dim)``.

    Attributes: ``name``, ``dim``, ``input_size``, ``mean``, ``std``, ``interpolation``,
    ``precision`` (the autocast dtype used on CUDA), ``licence``, ``hub_id`` and ``weights_id``
    (what identifies the weights, part of the feature-cache key); ``torch_threads``: the torch
    threads ``extract`` gives it on a CPU (None: every core); ``geometry``: the
    :class:`PatchGeometry` of the patches being encoded (set by ``extract``; None outside it).
    """

    torch_threads: int | None = None
    geometry: PatchGeometry | None = None

    def __init__(self, spec: EncoderSpec, model: nn.Module | None, *, weights_id: str):
        super().__init__()
        self.spec = spec
        self.name = spec.name
        self.dim = int(spec.dim)
        self.input_size = int(spec.input_size)
        self.mean = tuple(float(v) for v in spec.mean)
        self.std = tuple(float(v) for v in spec.std)
        self.interpolation = spec.interpolation
        self.precision = spec.dtype  # a torch dtype (the spec holds its name)
        self.licence = spec.licence
        self.hub_id = spec.hub_id
        self.weights_id = weights_id
        self.channels_last = spec.channels_last
        if model is not None:
            self.model = model
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        self.eval()
        self.requires_grad_(False)

    # -- preprocessing -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._mean.device

    @property
    def transform(self):
        """Alias of :meth:`preprocess` (the name ARCHITECTURE.md uses)."""
        return self.preprocess

    def preprocess(self, patches: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 RGB patches ``(n, H, W, 3)`` (or a list of ``(H, W, 3)``) -> float ``(n, 3, S, S)``.

        Values are scaled to [0, 1], resized to ``input_size`` (antialiased when shrinking) and
        normalised with the encoder's mean/std. The result stays on the input's device (a numpy
        input gives a CPU tensor).
        """
        if isinstance(patches, (list, tuple)):
            return (
                torch.cat([self.preprocess(np.asarray(p)[None]) for p in patches])
                if patches
                else (torch.empty(0, 3, self.input_size, self.input_size))
            )
        if isinstance(patches, np.ndarray):
            x = torch.from_numpy(patches if patches.flags.writeable else patches.copy())
        else:
            x = patches
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected uint8 patches (n, H, W, 3), got shape {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float().div_(255.0).contiguous()
        if x.shape[-2:] != (self.input_size, self.input_size) and x.shape[0] > 0:
            mode = (
                self.interpolation if self.interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
            )
            kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode=mode, **kwargs)
            if mode == "bicubic":
                x = x.clamp_(0.0, 1.0)
        mean = self._mean.to(x.device)
        std = self._std.to(x.device)
        return x.sub_(mean).div_(std).contiguous()

    # -- embedding -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - subclasses override
        return self.model(x)

    def embed(self, patches: np.ndarray | torch.Tensor) -> np.ndarray:
        """Convenience: preprocess + forward on this encoder's device, float32 numpy out."""
        with torch.inference_mode():
            x = self.preprocess(torch.as_tensor(np.asarray(patches)).to(self.device))
            return self(x).float().cpu().numpy()

    def release(self) -> None:
        """Free what the encoder holds between extractions (worker processes); a no-op by default."""

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, dim={self.dim}, input_size={self.input_size}, weights={self.weights_id!r}"
        )


class TimmEncoder(Encoder):
    """A timm backbone whose ``forward`` already returns the pooled embedding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ClsMeanEncoder(Encoder):
    """Virchow-style embedding: concat(class token, mean of the patch tokens).

    The backbone returns all tokens (``global_pool=''``); the first ``num_prefix_tokens`` are the
    class token and the register tokens, which are left out of the patch mean.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model(x)
        skip = int(getattr(self.model, "num_prefix_tokens", 1))
        return torch.cat([tokens[:, 0], tokens[:, skip:].mean(dim=1)], dim=-1)
