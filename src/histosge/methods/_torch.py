"""What the neural methods share: seeding, torch threads, the optimiser, the benchmark's early-stop
rule (``histosge.model.early_stop``, re-exported here), position tables, and a network's weights
as named numpy arrays (``state_dict`` through safetensors, no pickle)."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from ..model import Spots
from ..model.early_stop import MIN_DELTA, PATIENCE, VAL_FRACTION, EarlyStopping, mse, validation_split

__all__ = ["MIN_DELTA", "PATIENCE", "VAL_FRACTION", "EarlyStopping", "adam", "cores", "load_net", "mse", "net_state",
           "seed_all", "span", "val_split", "validation_split"]


def seed_all(seed: int) -> None:
    """Seed torch's and numpy's global generators (initialisation, dropout)."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def cores() -> int:
    """CPU cores this process may run on (its affinity; ``os.cpu_count()`` where there is none):
    the torch thread count of a benchmark run on a machine of its own."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def adam(params, *, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """``torch.optim.Adam`` with its fused kernel: one pass over each parameter instead of six
    (``_single_tensor_adam``'s lerp, mul, addcmul, sqrt, div and addcdiv; the weight-decay add
    allocates a copy of the gradient besides). Same update; the fused kernel rounds the last bit
    differently (ST-Net, HisToGene and DeepSpaCE use it: their predictions moved by at most 1.7e-6,
    tests/test_methods_golden.py; STAGE and THItoGene do not, where the last bit grew)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


def val_split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) indices: a seeded ``fraction`` of ``n`` spots validates (at least
    one, and never all); ``early_stop.validation_split`` with the arguments in this order."""
    return validation_split(n, rng, fraction)


def net_state(net: nn.Module, prefix: str = "net") -> dict[str, np.ndarray]:
    """The network's parameters and buffers as numpy arrays under ``prefix.``."""
    return {f"{prefix}.{k}": v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


def load_net(net: nn.Module, arrays: dict[str, np.ndarray], prefix: str = "net") -> nn.Module:
    """Load ``net_state`` arrays into ``net`` (shapes from the network: safetensors may keep a
    0-d buffer as (1,)); returns the network in eval mode."""
    p = prefix + "."
    ref = net.state_dict()
    missing = [k for k in ref if p + k not in arrays]
    if missing:
        raise KeyError(f"network weights missing: {', '.join(missing[:3])}")
    net.load_state_dict({k: torch.from_numpy(np.array(arrays[p + k]).reshape(v.shape)) for k, v in ref.items()})
    return net.eval()


def span(train: Spots, query: Spots | None, axis: str) -> tuple[float, int]:
    """(origin, size) of a table of grid positions ``axis`` ('rows' or 'cols') covering the
    training spots and, if given, the query spots (one spare entry past the last position)."""
    values = getattr(train, axis) if query is None else np.concatenate([getattr(train, axis), getattr(query, axis)])
    origin = float(np.min(values))
    return origin, int(np.ceil(np.max(values) - origin)) + 2
