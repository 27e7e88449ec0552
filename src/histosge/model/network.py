"""The HisToSGE network: patch features + grid-coordinate embeddings -> transformer -> genes.

As in the paper: a linear projection of the encoder's patch embedding plus learned embeddings
of the spot's row and column, one pre-norm transformer block (4 heads of 64) attending over a
group of spots, and the gene head Linear(d, 2048)-ReLU-LayerNorm-Linear(2048, genes)-ReLU.

One correction: the authors truncate the half-integer coordinates of generated spots, so a
generated spot gets the embedding of a measured one. Here a coordinate embedding is a learned
table over integer positions evaluated by linear interpolation, so integer positions use their
own row exactly and a position half-way between two gets the mean of both, distinct from each.
"""

from __future__ import annotations

import torch
from torch import nn


class GridEmbedding(nn.Module):
    """Learned embedding of one grid axis, linearly interpolated between integer positions."""

    def __init__(self, n_positions: int, dim: int):
        super().__init__()
        self.n_positions = int(n_positions)
        self.table = nn.Embedding(self.n_positions, dim)

    def forward(self, coord: torch.Tensor) -> torch.Tensor:
        coord = coord.clamp(0, self.n_positions - 1)
        lo = coord.floor().long().clamp(max=self.n_positions - 1)
        hi = (lo + 1).clamp(max=self.n_positions - 1)
        frac = (coord - lo.to(coord.dtype)).unsqueeze(-1)
        return (1 - frac) * self.table(lo) + frac * self.table(hi)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, inner * 3, bias=False)
        self.out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        q, k, v = (t.view(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        attn_mask = None if mask is None else mask[:, None, None, :]  # True = attend
        y = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, n, -1))


class Block(nn.Module):
    """Pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.attn = Attention(dim, heads, dim_head, dropout)
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(mlp_dim, dim), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(x, mask)
        return x + self.mlp(x)


def gene_head(dim: int, n_genes: int, hidden: int = 2048) -> nn.Sequential:
    """The paper's head: Linear-ReLU-LayerNorm-Linear, then ReLU (log1p expression is >= 0)."""
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.ReLU(), nn.LayerNorm(hidden), nn.Linear(hidden, n_genes), nn.ReLU()
    )


class HisToSGENet(nn.Module):
    """Patch features (B, N, F) + grid rows/cols (B, N) -> log1p expression (B, N, genes)."""

    def __init__(self, feature_dim: int, n_genes: int, *, n_rows: int, n_cols: int, dim: int = 1024,
                 depth: int = 1, heads: int = 4, dim_head: int = 64, mlp_dim: int = 1024,
                 dropout: float = 0.1, head_hidden: int = 2048, context_dim: int = 0,
                 residual: bool = False):
        super().__init__()
        self.patch_proj = nn.Linear(feature_dim, dim)
        # Optional context: expression interpolated from measured neighbours, known at
        # prediction time. With ``residual`` the head predicts a correction to it.
        self.context_proj = nn.Linear(context_dim, dim) if context_dim else None
        self.residual = residual
        self.row_emb = GridEmbedding(n_rows, dim)
        self.col_emb = GridEmbedding(n_cols, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, dim_head, mlp_dim, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = gene_head(dim, n_genes, head_hidden)
        if residual:  # start as the identity on the context: the correction begins at zero
            nn.init.zeros_(self.head[3].weight)
            nn.init.zeros_(self.head[3].bias)

    @property
    def n_genes(self) -> int:
        return self.head[3].out_features

    def forward(self, features: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                mask: torch.Tensor | None = None, context: torch.Tensor | None = None) -> torch.Tensor:
        x = self.patch_proj(features) + self.row_emb(rows) + self.col_emb(cols)
        if self.context_proj is not None:
            x = x + self.context_proj(context)
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        if self.residual:  # a correction to the context, in its own (possibly signed) space
            return context + self.head[:4](x)
        return self.head(x)
