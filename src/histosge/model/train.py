"""Fit HisToSGE on measured spots and predict others, with early stopping and fixed seeds.

Spots are shuffled into groups of ``group_size`` each epoch; a group is one attention
context. A seeded ``val_fraction`` of the training spots is held back for early stopping
(``patience=None`` runs all ``epochs``, the paper's fixed schedule); the stopping is
``early_stop.EarlyStopping``, the rule every benchmarked network shares. Features are
standardised with training statistics. Grid coordinates are expressed in units of the
training lattice's step, so that positions between training spots (generated spots, or the
held-out spots of protocol G) fall between learned embeddings instead of on untrained ones.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from .._progress import early_stop
from .._progress import progress as progress_bar
from .early_stop import EarlyStopping
from .network import HisToSGENet
from .scaling import FeatureScaler


@dataclass
class TrainConfig:
    epochs: int = 300
    patience: int | None = 30
    val_fraction: float = 0.1
    group_size: int = 50
    groups_per_step: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    dim: int = 1024
    depth: int = 1
    heads: int = 4
    dim_head: int = 64
    mlp_dim: int = 1024
    dropout: float = 0.1
    residual: bool = True
    #: With a context, train the correction only if this many validation spots can check it.
    min_val_spots: int = 0
    #: Relative improvement of the validation loss needed to count as better.
    min_delta: float = 0.0
    #: Stop after this many epochs if none has beaten the untrained network on validation
    #: spots (a residual network starts *at* its context, so it cannot improve on it); None: never.
    give_up: int | None = None
    seed: int = 0
    device: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> TrainConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


#: The paper's schedule: 1000 fixed epochs, groups of 50, one group per step, no early stopping.
PAPER_CONFIG = TrainConfig(epochs=1000, patience=None, val_fraction=0.0, group_size=50, groups_per_step=1)
#: Our default network schedule and size (docs/MODEL_NOTES.md says what each choice bought).
DEFAULT_NETWORK = TrainConfig(epochs=300, patience=20, val_fraction=0.2, group_size=50, groups_per_step=8,
                              dim=256, mlp_dim=512, dropout=0.1, lr=1e-3, residual=True,
                              min_val_spots=100, min_delta=0.005, give_up=5)


def _lattice_unit(values: np.ndarray) -> float:
    """Greatest common step of the coordinates in ``values`` (half-steps allowed); 1 if none."""
    u = np.unique(np.round(np.asarray(values, np.float64) * 2).astype(np.int64))
    if len(u) < 2:
        return 1.0
    g = int(np.gcd.reduce(np.diff(u)))
    return max(g, 1) / 2


@dataclass
class CoordFrame:
    """Maps raw grid coordinates to embedding positions (shift, then divide by lattice step)."""

    row0: float
    col0: float
    row_unit: float
    col_unit: float
    n_rows: int
    n_cols: int

    @classmethod
    def fit(cls, rows: np.ndarray, cols: np.ndarray) -> CoordFrame:
        ru, cu = _lattice_unit(rows), _lattice_unit(cols)
        r0, c0 = float(np.min(rows)), float(np.min(cols))
        n_rows = int(math.ceil((np.max(rows) - r0) / ru)) + 2
        n_cols = int(math.ceil((np.max(cols) - c0) / cu)) + 2
        return cls(r0, c0, ru, cu, n_rows, n_cols)

    def __call__(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = (np.asarray(rows, np.float32) - self.row0) / self.row_unit
        c = (np.asarray(cols, np.float32) - self.col0) / self.col_unit
        return r.astype(np.float32), c.astype(np.float32)


def _device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _groups(idx: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    idx = rng.permutation(idx)
    n_groups = max(1, math.ceil(len(idx) / size))
    return [g for g in np.array_split(idx, n_groups) if len(g)]


def _batch(groups, arrays: list[np.ndarray | None], device):
    """Pad groups into (B, N, ...) tensors, one per array (None stays None), plus a mask."""
    n = max(len(g) for g in groups)
    out = []
    for a in arrays:
        if a is None:
            out.append(None)
            continue
        t = torch.zeros((len(groups), n) + a.shape[1:], dtype=torch.float32)
        for i, g in enumerate(groups):
            t[i, : len(g)] = torch.from_numpy(a[g])
        out.append(t.to(device))
    m = torch.zeros(len(groups), n, dtype=torch.bool)
    for i, g in enumerate(groups):
        m[i, : len(g)] = True
    return out, m.to(device)


@torch.inference_mode()
def _predict(net, feats, rows, cols, group_size, seed, device, context=None) -> np.ndarray:
    net.eval()
    out = np.zeros((len(feats), net.n_genes), np.float32)
    groups = _groups(np.arange(len(feats)), group_size, np.random.default_rng(seed + 7919))
    for start in range(0, len(groups), 64):
        chunk = groups[start:start + 64]
        (f, r, c, ctx), m = _batch(chunk, [feats, rows, cols, context], device)
        pred = net(f, r, c, m, ctx).float().cpu().numpy()
        for i, g in enumerate(chunk):
            out[g] = pred[i, : len(g)]
    return out


class Trained:
    """A fitted network with the feature scaling and coordinate frame it was trained with.

    ``scaler`` clips query features to the training range before standardising them
    (``scaling.FeatureScaler``), so an odd patch cannot feed the network values it never saw."""

    def __init__(self, net: HisToSGENet, scaler: FeatureScaler, frame: CoordFrame, config: TrainConfig,
                 history: dict, arch: dict):
        self.net, self.scaler, self.frame = net, scaler, frame
        self.config, self.history, self.arch = config, history, arch

    def predict(self, features: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                context: np.ndarray | None = None) -> np.ndarray:
        feats = self.scaler.transform(features)
        ctx = None if context is None else np.ascontiguousarray(context, np.float32)
        return _predict(self.net, feats, *self.frame(rows, cols), self.config.group_size,
                        self.config.seed, _device(self.config.device), ctx)

    def state(self) -> dict[str, np.ndarray]:
        """Weights and feature scaling as arrays (``meta`` holds the rest)."""
        weights = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        return weights | {f"scaler.{k}": v for k, v in self.scaler.state().items()}

    def meta(self) -> dict:
        """Architecture, coordinate frame and schedule: what rebuilds the network around ``state``."""
        return {"arch": dict(self.arch), "frame": asdict(self.frame), "config": self.config.to_dict()}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict, *, device: str | None = None) -> Trained:
        config = TrainConfig(**{**meta["config"], "device": device})
        net = HisToSGENet(**meta["arch"])
        weights = {k[4:]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("net.")}
        net.load_state_dict(weights)
        scaler = FeatureScaler.from_state({k[7:]: v for k, v in arrays.items() if k.startswith("scaler.")})
        return cls(net.to(_device(device)), scaler, CoordFrame(**meta["frame"]), config, {}, meta["arch"])


def fit(features: np.ndarray, rows: np.ndarray, cols: np.ndarray, targets: np.ndarray,
        config: TrainConfig | None = None, *, context: np.ndarray | None = None,
        progress: bool = True, val_mask: np.ndarray | None = None) -> Trained:
    """Train on the given spots; returns a :class:`Trained` whose ``predict`` scores new spots.

    ``context`` (spots x genes), when given, is what the spot's measured neighbours say about
    it (for training spots: leave-one-out, so that it looks as it will at prediction time).
    ``val_mask`` (bool per spot) names the validation spots instead of a random
    ``config.val_fraction``: predicting another section must be validated on a held-out
    section or block, since random spots of the training tissue flatter any model.
    """
    cfg = config or TrainConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = _device(cfg.device)
    scaler = FeatureScaler(features)
    feats = scaler.transform(features)
    targets = np.ascontiguousarray(targets, np.float32)
    ctx = None if context is None else np.ascontiguousarray(context, np.float32)
    frame = CoordFrame.fit(rows, cols)
    r_pos, c_pos = frame(rows, cols)

    n = len(feats)
    perm = rng.permutation(n)
    if val_mask is not None and cfg.patience is not None:
        val_mask = np.asarray(val_mask, bool)
        val_idx, train_idx = np.flatnonzero(val_mask), np.flatnonzero(~val_mask)
        n_val = len(val_idx)
    else:
        n_val = int(round(n * cfg.val_fraction)) if cfg.patience is not None else 0
        n_val = max(0, min(n_val, n - 2))
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])

    arch = dict(feature_dim=int(feats.shape[1]), n_genes=int(targets.shape[1]), n_rows=frame.n_rows,
                n_cols=frame.n_cols, dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, dim_head=cfg.dim_head,
                mlp_dim=cfg.mlp_dim, dropout=cfg.dropout, context_dim=0 if ctx is None else int(targets.shape[1]),
                residual=bool(ctx is not None and cfg.residual))
    net = HisToSGENet(**arch).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: dict = {"train_loss": [], "val_loss": []}
    stop = EarlyStopping(cfg.patience or 0, min_delta=cfg.min_delta, give_up=cfg.give_up)
    t0 = time.perf_counter()
    if n_val:  # the untrained state counts too: a residual model starts at its context
        vp = _predict(net, feats[val_idx], r_pos[val_idx], c_pos[val_idx], cfg.group_size, cfg.seed,
                      device, None if ctx is None else ctx[val_idx])
        stop.start(float(((vp - targets[val_idx]) ** 2).mean()), net)
        history["initial_val_loss"] = stop.best
    epochs = cfg.epochs
    if ctx is not None and cfg.residual and n_val < cfg.min_val_spots:
        epochs = 0  # too few spots to tell a real correction from an overfit one: keep the context
        history["skipped"] = f"correction not trained: {n_val} validation spots < {cfg.min_val_spots}"
    bar = progress_bar(range(epochs), desc="training", unit="epoch", disable=not progress, leave=False)
    for _epoch in bar:
        net.train()
        groups = _groups(train_idx, cfg.group_size, rng)
        total, count = 0.0, 0
        for s in range(0, len(groups), cfg.groups_per_step):
            (f, r, c, y, cx), m = _batch(groups[s:s + cfg.groups_per_step],
                                         [feats, r_pos, c_pos, targets, ctx], device)
            pred = net(f, r, c, m, cx)
            loss = ((pred - y) ** 2).mean(-1)[m].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * int(m.sum())
            count += int(m.sum())
        history["train_loss"].append(total / max(count, 1))
        if n_val:
            vp = _predict(net, feats[val_idx], r_pos[val_idx], c_pos[val_idx], cfg.group_size, cfg.seed,
                          device, None if ctx is None else ctx[val_idx])
            vloss = float(((vp - targets[val_idx]) ** 2).mean())
            history["val_loss"].append(vloss)
            bar.set_postfix(train=f"{history['train_loss'][-1]:.4f}", val=f"{vloss:.4f}")
            done = stop.step(vloss, net)
            if stop.best_epoch:
                history["best_epoch"] = stop.best_epoch
            if done:
                history["stopped"] = stop.stopped
                break
            early_stop(bar, _stop_within(cfg, stop.since, stop.epochs, bool(stop.best_epoch)))
        else:
            bar.set_postfix(train=f"{history['train_loss'][-1]:.4f}")
    stop.restore(net)
    history["epochs_run"] = len(history["train_loss"])
    history["best_val_loss"] = None if stop.best is math.inf else stop.best
    history["seconds"] = time.perf_counter() - t0
    history["outcome"] = outcome(history, epochs)
    if progress:
        print(f"training: {history['outcome']}", file=sys.stderr, flush=True)
    return Trained(net, scaler, frame, cfg, history, arch)


def _stop_within(cfg: TrainConfig, since_best: int, epochs_done: int, improved: bool) -> int:
    """Epochs after which early stopping ends the run unless the validation loss improves."""
    left = cfg.patience - since_best
    if cfg.give_up and not improved:
        left = min(left, cfg.give_up - epochs_done)
    return left


def outcome(history: dict, epochs: int) -> str:
    """One line on how training ended and whether the trained network is what predicts."""
    if "skipped" in history:
        return f"{history['skipped']}; the context is used as it is"
    run = history.get("epochs_run", 0)
    if "initial_val_loss" not in history:
        return f"{run} epochs (fixed schedule, no validation)"
    why = f", stopped early: {history['stopped']}" if "stopped" in history else ""
    if "best_epoch" not in history:
        return (f"{run}/{epochs} epochs{why}; the network never beat its starting point on validation spots "
                f"(loss {history['initial_val_loss']:.4f}), so it is not used")
    return (f"{run}/{epochs} epochs{why}; best epoch {history['best_epoch']} kept (validation loss "
            f"{history['initial_val_loss']:.4f} -> {history['best_val_loss']:.4f})")
