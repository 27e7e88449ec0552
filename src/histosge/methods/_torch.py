"""What the neural methods share: seeding, a validation split, early stopping, position tables,
and a network's weights as named numpy arrays (``state_dict`` through safetensors, no pickle)."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from ..model import Spots


def seed_all(seed: int) -> None:
    """Seed torch's and numpy's global generators (initialisation, dropout)."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def val_split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) indices: a seeded ``fraction`` of ``n`` spots validates (at least
    one, and never all)."""
    perm = rng.permutation(n)
    n_val = min(max(1, int(round(n * fraction))), n - 1) if n > 1 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class EarlyStop:
    """Keeps the best weights by validation loss; ``step`` returns True when patience runs out."""

    def __init__(self, patience: int):
        self.patience, self.best, self.state, self.since = patience, math.inf, None, 0

    def step(self, loss: float, net: nn.Module) -> bool:
        if loss < self.best - 1e-6:
            self.best, self.since, self.state = loss, 0, copy.deepcopy(net.state_dict())
            return False
        self.since += 1
        return self.since >= self.patience

    def restore(self, net: nn.Module) -> None:
        if self.state is not None:
            net.load_state_dict(self.state)


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
