"""Helpers shared by the builders: where the weights are and a reproducible random init."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from ._registry import RANDOM, EncoderSpec
from .weights import fetch_from_hub, find_weights_file, weights_identity


def resolve_weights(spec: EncoderSpec, weights: str | None) -> tuple[Path | None, str]:
    """(weights file or None for random init, identity string for the feature cache)."""
    if weights is not None and str(weights) == RANDOM:
        return None, RANDOM
    if weights is not None:
        path = find_weights_file(Path(weights).expanduser(), spec)
        return path, weights_identity(path)
    path = Path(fetch_from_hub(spec))
    return path, weights_identity(path)


@contextlib.contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """Random init that is the same on every build (so a 'random' cache key means one thing)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
