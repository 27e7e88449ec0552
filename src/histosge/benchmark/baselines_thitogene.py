"""THItoGene (Jia et al., Brief Bioinform 2024) on frozen encoder features.

The published model (yrjia1015/THItoGene, ``vis_model.py``): each spot's 112 px patch goes
through a dynamic (omni-dimensional) convolution and an efficient capsule network whose
self-attention routing yields 20 capsules of 64 dims; two more 64-dim "capsules" are learned
embeddings of the spot's array x and y; the 22 x 64 = 1408-dim tokens of all spots of a section
go through a ViT (4 pre-norm layers, 16 heads of 64, MLP 2048, dropout 0.2), then a two-layer
graph attention network over each spot's 4 nearest spots on the array (8 heads of 1024
concatenated, then one head to 512, ELU, dropout 0.2, LeakyReLU slope 0.01), then a head
512 -> 1024 -> ReLU -> LayerNorm -> genes. MSE, Adam at 1e-5, one section per step,
300 epochs (``train.py``), no validation. (4 layers is the README's and the HER2+ setting; the
authors' script used 8 on their Visium cSCC data; ``depth`` sets it.)

Here the image layers that read pixels (the dynamic convolution and the capsule network's
four convolutions, which produce its 16 primary capsules of 8 dims) are replaced by one linear
map from our frozen encoder features to those 16 x 8 primary capsules; the capsule routing and
everything after it are as published. Other differences: (1) the position tables hold as many
rows as the array has (the authors' 64 is too few for Visium's 128 columns); (2) the graph
attention normalises each spot's attention over its own neighbours, as the GAT paper and
THItoGene's paper describe (the authors' code applies the softmax along the other axis of the
adjacency, because of a leftover batch dimension); (3) within a section (protocols R and G)
a "section" in training is the section's training spots, and prediction runs on all query
spots of the section, the neighbour graph rebuilt on them; (4) attention is computed with
PyTorch's fused ``scaled_dot_product_attention`` (the same function, less memory).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..model import Spots
from ..model.scaling import standardise
from .baselines import _seed

#: The authors' schedule (train.py: 300 epochs at lr 1e-5, one section per step).
EPOCHS = 300
#: Neighbours of each spot in the graph attention (graph_construction.calcADJ, k=4).
K_NEIGHBOURS = 4


def squash(s: torch.Tensor, eps: float = 1e-20) -> torch.Tensor:
    """Efficient-CapsNet's squash: (1 - 1/e^|s|) s/|s|."""
    n = torch.norm(s, dim=-1, keepdim=True)
    return (1 - 1 / (torch.exp(n) + eps)) * (s / (n + eps))


class CapsuleRouting(nn.Module):
    """Efficient-CapsNet's self-attention routing: primary capsules (n_in x dim_in) -> n_out x dim_out."""

    def __init__(self, n_in: int = 16, dim_in: int = 8, n_out: int = 20, dim_out: int = 64):
        super().__init__()
        self.W = nn.Parameter(torch.empty(n_out, n_in, dim_in, dim_out))
        self.b = nn.Parameter(torch.zeros(n_out, n_in, 1))
        nn.init.kaiming_normal_(self.W)
        self.dim_out = dim_out

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # u: (n, n_in, dim_in)
        votes = torch.einsum("nji,kjiz->nkjz", u, self.W)  # (n, n_out, n_in, dim_out)
        agree = torch.einsum("nkjz,nkiz->nkj", votes, votes)[..., None] / self.dim_out**0.5
        coupling = torch.softmax(agree, dim=1) + self.b
        return squash((votes * coupling).sum(dim=-2))


class _Block(nn.Module):
    """Pre-norm transformer layer: attention (heads x 64, no bias on qkv) and a GELU MLP."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (1, n, dim)
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(-2)
        x = x + self.out(a)
        return x + self.mlp(self.norm2(x))


class GraphAttention(nn.Module):
    """One GAT head on an edge list: e_ij = LeakyReLU(a1.Wh_i + a2.Wh_j), softmax over j in N(i)."""

    def __init__(self, d_in: int, d_out: int, *, dropout: float, slope: float, concat: bool):
        super().__init__()
        self.W = nn.Parameter(torch.empty(d_in, d_out))
        self.a = nn.Parameter(torch.empty(2 * d_out, 1))
        nn.init.xavier_uniform_(self.W, gain=1.414)
        nn.init.xavier_uniform_(self.a, gain=1.414)
        self.dropout, self.slope, self.concat, self.d_out = dropout, slope, concat, d_out

    def forward(self, h: torch.Tensor, dst: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        wh = h @ self.W
        e = F.leaky_relu((wh @ self.a[: self.d_out])[dst, 0] + (wh @ self.a[self.d_out :])[src, 0], self.slope)
        k = len(dst) // len(h)  # every spot has the same number of neighbours
        att = torch.softmax(e.view(len(h), k), dim=1)
        att = F.dropout(att, self.dropout, self.training)
        out = (att.unsqueeze(-1) * wh[src].view(len(h), k, -1)).sum(1)
        return F.elu(out) if self.concat else out


class THItoGeneNet(nn.Module):
    def __init__(self, feature_dim: int, n_genes: int, n_x: int, n_y: int, *, caps: int = 20,
                 route_dim: int = 64, depth: int = 4, heads: int = 16, gat_heads: int = 8,
                 dim: int = 1024, dropout: float = 0.2, gat_hidden: int = 1024, gat_out: int = 512):
        super().__init__()
        self.primary = nn.Linear(feature_dim, 16 * 8)  # stands in for the pixel convolutions
        self.routing = CapsuleRouting(16, 8, caps, route_dim)
        self.x_embed = nn.Embedding(n_x, route_dim)
        self.y_embed = nn.Embedding(n_y, route_dim)
        width = (caps + 2) * route_dim
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(width, heads, 64, 2 * dim, dropout) for _ in range(depth))
        self.gat_heads = nn.ModuleList(GraphAttention(width, gat_hidden, dropout=dropout, slope=0.01, concat=True)
                                       for _ in range(gat_heads))
        self.gat_out = GraphAttention(gat_hidden * gat_heads, gat_out, dropout=dropout, slope=0.01, concat=False)
        self.gat_dropout = dropout
        self.head = nn.Sequential(nn.Linear(gat_out, 1024), nn.ReLU(), nn.LayerNorm(1024), nn.Linear(1024, n_genes))

    def forward(self, feats, xs, ys, dst, src) -> torch.Tensor:
        caps = self.routing(squash(self.primary(feats).view(-1, 16, 8)))
        tokens = torch.cat([caps, self.x_embed(xs)[:, None], self.y_embed(ys)[:, None]], dim=1).flatten(1)
        h = self.drop(tokens)[None]
        for block in self.blocks:
            h = block(h)
        h = F.dropout(h[0], self.gat_dropout, self.training)
        h = torch.cat([g(h, dst, src) for g in self.gat_heads], dim=1)
        h = F.dropout(h, self.gat_dropout, self.training)
        h = F.elu(self.gat_out(h, dst, src))
        return self.head(h)


def knn_edges(xy: np.ndarray, k: int = K_NEIGHBOURS) -> tuple[torch.Tensor, torch.Tensor]:
    """(dst, src): each spot's ``k`` nearest other spots (fewer spots: all others, repeated)."""
    from scipy.spatial import cKDTree

    n = len(xy)
    if n < 2:
        raise ValueError("THItoGene's graph needs at least 2 spots")
    kk = min(k, n - 1)
    _, idx = cKDTree(np.asarray(xy, np.float64)).query(xy, k=kk + 1)
    src = np.asarray(idx)[:, 1:]
    if kk < k:  # pad by repeating the nearest neighbours so every spot has k
        src = np.concatenate([src, src[:, np.arange(k - kk) % kk]], axis=1)
    dst = np.repeat(np.arange(n), k)
    return torch.from_numpy(dst), torch.from_numpy(src.reshape(-1).astype(np.int64))


def thitogene(
    train: Spots,
    y_train: np.ndarray,
    query: Spots,
    *,
    train_groups: np.ndarray | None = None,
    query_groups: np.ndarray | None = None,
    seed: int = 0,
    epochs: int = EPOCHS,
    lr: float = 1e-5,
    depth: int = 4,
    arch: dict | None = None,
) -> tuple[np.ndarray, dict]:
    """Fit THItoGene, one training section per step (``train_groups``), predict each query section.

    Positions are the array coordinates (``cols`` = x, ``rows`` = y, rounded, shifted to start
    at 0). ``arch``: other ``THItoGeneNet`` sizes (tests use a small network; the benchmark never).
    Returns (predictions, info with ``epochs_run`` and ``steps_run``).
    """
    _seed(seed)
    rng = np.random.default_rng(seed)
    x_train, x_query = standardise(train.features, query.features)
    tg = np.zeros(len(train), np.int64) if train_groups is None else np.asarray(train_groups)
    qg = np.zeros(len(query), np.int64) if query_groups is None else np.asarray(query_groups)
    x0 = float(min(np.min(train.cols), np.min(query.cols)))
    y0 = float(min(np.min(train.rows), np.min(query.rows)))
    n_x = int(np.ceil(max(np.max(train.cols), np.max(query.cols)) - x0)) + 2
    n_y = int(np.ceil(max(np.max(train.rows), np.max(query.rows)) - y0)) + 2

    def pos(values, origin, n):
        return torch.from_numpy(np.clip(np.rint(np.asarray(values) - origin), 0, n - 1).astype(np.int64))

    def grid_xy(spots: Spots, idx: np.ndarray) -> np.ndarray:
        return np.column_stack([spots.cols[idx], spots.rows[idx]])

    sections = [np.flatnonzero(tg == g) for g in np.unique(tg)]
    graphs = [knn_edges(grid_xy(train, idx)) for idx in sections]
    tx, ty = pos(train.cols, x0, n_x), pos(train.rows, y0, n_y)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(np.ascontiguousarray(y_train, np.float32))

    net = THItoGeneNet(x_train.shape[1], yt.shape[1], n_x, n_y, depth=depth, **(arch or {}))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = 0
    for _epoch in range(epochs):
        net.train()
        for s in rng.permutation(len(sections)):
            idx = torch.from_numpy(sections[s])
            pred = net(xt[idx], tx[idx], ty[idx], *graphs[s])
            loss = F.mse_loss(pred, yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    net.eval()
    out = np.zeros((len(query), yt.shape[1]), np.float32)
    qx, qy, xq = pos(query.cols, x0, n_x), pos(query.rows, y0, n_y), torch.from_numpy(x_query)
    with torch.no_grad():
        for g in np.unique(qg):
            idx = np.flatnonzero(qg == g)
            t = torch.from_numpy(idx)
            out[idx] = net(xq[t], qx[t], qy[t], *knn_edges(grid_xy(query, idx))).numpy()
    return out, {"epochs_run": epochs, "steps_run": steps}
