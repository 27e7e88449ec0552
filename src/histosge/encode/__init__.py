"""Image encoders: a timm-like registry, batched extraction and a disk feature cache.

>>> from histosge import encode
>>> enc = encode.create("he-stats")                      # or "uni", weights="/path/pytorch_model.bin"
>>> feats = encode.extract(source, xy, scale, spot_diameter, encoder=enc)   # (n, enc.dim) float32
>>> [e["name"] for e in encode.list_encoders() if e["available"]]

``DEFAULT_ENCODER`` was chosen by measurement (bench/bench_encoders.py,
bench/results/encoders_choice.md) among the encoders that run on a fresh machine without network.
"""

from ._api import availability, create, default_device, list_encoders
from ._build import RANDOM
from ._registry import EncoderSpec, get_spec, known_names, register_encoder
from .base import Encoder
from .extract import DEFAULT_BATCH_SIZE, DEFAULT_PATCH_SCALE, encode_patches, extract

# Chosen by bench/bench_encoders.py on her2st + DLPFC; see bench/results/encoders_choice.md.
DEFAULT_ENCODER = "he-stats"

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_ENCODER",
    "DEFAULT_PATCH_SCALE",
    "RANDOM",
    "Encoder",
    "EncoderSpec",
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
