"""Fingerprints that say which spots a model has seen, and which file made an output.

A spot is identified by its measured counts (the row of raw counts with its gene names), not
by its barcode: Visium reuses one barcode list on every slide. A model file keeps the 64-bit
hashes of its training spots, so a prior fitted on a section can be refused for that same
section even after the section was re-read, subset or renamed.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import scipy.sparse as sp


def spot_hashes(adata) -> np.ndarray:
    """uint64 per spot: a hash of its counts (values and gene names of its non-zero entries)."""
    X = adata.X
    X = X.tocsr() if sp.issparse(X) else sp.csr_matrix(np.asarray(X))
    genes = np.asarray(adata.var_names.astype(str))
    gene_ids = np.frombuffer(b"".join(hashlib.blake2b(g.encode(), digest_size=8).digest() for g in genes),
                             dtype="<u8") if len(genes) else np.zeros(0, "<u8")
    out = np.empty(X.shape[0], np.uint64)
    for i in range(X.shape[0]):
        lo, hi = X.indptr[i], X.indptr[i + 1]
        h = hashlib.blake2b(digest_size=8)
        h.update(gene_ids[X.indices[lo:hi]].tobytes())
        h.update(np.asarray(X.data[lo:hi], np.float64).tobytes())
        out[i] = np.frombuffer(h.digest(), "<u8")[0]
    return out


def section_fingerprint(adata) -> str:
    """SHA-256 of a section's sorted spot hashes (independent of spot order and names)."""
    return hashlib.sha256(np.sort(spot_hashes(adata)).tobytes()).hexdigest()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
