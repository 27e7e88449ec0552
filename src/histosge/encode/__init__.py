"""Image encoders: a timm-like registry, batched extraction and a disk feature cache.

>>> from histosge import encode
>>> enc = encode.create("he-stats")                      # or "uni", weights="/path/pytorch_model.bin"
>>> feats = encode.extract(source, xy, scale, spot_diameter, encoder=enc)   # (n, enc.dim) float32
>>> [e["name"] for e in encode.list_encoders() if e["available"]]

``DEFAULT_ENCODER`` was chosen by measurement (bench/bench_encoders.py,
bench/results/encoders_choice.md) among the encoders that run on a fresh machine without network.
Importing this package, listing encoders and checking a name import no torch: the encoders' code
(and torch, timm) is imported by the first ``create`` or ``extract``.
"""

import sys
import types

from .._lazy import lazy_names
from ._api import availability, create, default_device, list_encoders
from ._registry import RANDOM, EncoderSpec, get_spec, known_names, register_encoder

# Chosen by bench/bench_encoders.py on her2st + DLPFC; see bench/results/encoders_choice.md.
DEFAULT_ENCODER = "he-stats"

# heavy names, imported on first use (PEP 562)
_LAZY = {"Encoder": ".base", "DEFAULT_BATCH_SIZE": ".extract", "DEFAULT_PATCH_SCALE": ".extract",
         "encode_patches": ".extract", "extract": ".extract", "PatchGeometry": ".base"}


class _Package(types.ModuleType):
    """``encode.extract`` is the function, also once its module ``encode/extract.py`` is imported
    (the import system sets a package's attribute to each submodule it loads)."""

    def __setattr__(self, name: str, value) -> None:
        if name == "extract" and isinstance(value, types.ModuleType):
            value = value.extract
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__getattr__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_ENCODER",
    "DEFAULT_PATCH_SCALE",
    "RANDOM",
    "Encoder",
    "EncoderSpec",
    "PatchGeometry",
    "availability",
    "create",
    "default_device",
    "encode_patches",
    "extract",
    "get_spec",
    "known_names",
    "list_encoders",
    "register_encoder",
]
